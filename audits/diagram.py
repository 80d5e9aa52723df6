"""The data flow of one round, as the run's own files describe it, drawn as inline SVG.

:func:`data_flow` reads which tensor groups leave a client (from setup.json's shared-tensor
manifest; the method's allowed groups when there is none), their size, and every kind of message
the clients sent (from the egress records: the update, secure aggregation's key advert, shares
and reveal, Flower's status report), with its form and size, and whether DP and encryption were
on. :func:`data_flow_svg` draws it (pure, no external resources): what each client trains and
keeps, every message it sends to the server in the order of a round, in what form and how big,
that the server only verifies, forwards and adds, and what comes back.
"""

from __future__ import annotations

import math
import statistics
from html import escape
from typing import Any

from audits import messages as kinds
from audits.evidence import RunEvidence
from audits.groups import allowed_groups, tensor_group

TRAINED_GROUPS = ("A", "B", "head")
WIDTH, BOX_W = 880, 260
CLIENT_X, SERVER_X = 10, WIDTH - 10 - BOX_W
FIRST_ARROW, LINE = 92, 15  # y of the first message's first line; line spacing
# what each kind is called on its arrow, and what it carries in a few words
ARROW_LABELS = {
    kinds.KEYS: ("masking key advert", "2 public keys + signature"),
    kinds.SHARES: ("encrypted shares", "sealed to each recipient"),
    kinds.REVEAL: ("unmasking reveal", "shares that unmask only the sum"),
    kinds.REPORT: ("status report", "status, steps, ε"),
}


def data_flow(run: RunEvidence) -> dict[str, Any]:
    """What moves where in one round (pure; a JSON-ready dict for report.json)."""
    method = run.cfg("method")
    manifest = (run.setup or {}).get("manifest")
    entries = [m for m in manifest if isinstance(m, dict)] if isinstance(manifest, list) else []
    if entries:
        shared = sorted({tensor_group(str(m.get("name"))) for m in entries})
        source = "setup.json manifest"
    else:
        shared = sorted(allowed_groups(method, run.cfg("head")) or frozenset())
        source = f"the groups method {method!r} shares (no manifest)"
    updates = [
        r for records in run.egress.values() for r in records or [] if r.get("kind") == "update"
    ]
    observed = {tensor_group(str(t)) for r in updates for t in r.get("tensors") or []}
    allowed = allowed_groups(method, run.cfg("head")) or frozenset(shared)
    sizes = [r["bytes"] for r in updates if isinstance(r.get("bytes"), int)]
    return {
        "method": method,
        "messages": _messages(run),
        "clients": len(run.client_ids),
        "dp": run.cfg("dp") is True,
        "encrypted": run.cfg("encryption") is True,
        "shared": shared,
        "kept": [g for g in TRAINED_GROUPS if g not in shared],
        "unexpected": sorted(observed - set(allowed)),
        "shared_tensors": len(entries),
        "shared_values": sum(_size(m.get("shape")) for m in entries),
        "update_bytes": int(statistics.median(sizes)) if sizes else None,
        "forms": sorted({str(r.get("form")) for r in updates}),
        "source": source,
    }


def _messages(run: RunEvidence) -> list[dict[str, Any]]:
    """Every kind of message the egress records show, in the order of a round: its form, its
    size and how many each client sent per round (pure)."""
    by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for cid, records in run.egress.items():
        for record in records or []:
            if isinstance(record, dict):
                by_kind.setdefault(str(record.get("kind")), []).append((cid, record))
    found = []
    for kind in sorted(by_kind, key=kinds.kind_order):
        rows = by_kind[kind]
        sizes = [r["bytes"] for _, r in rows if isinstance(r.get("bytes"), int)]
        slots = {(cid, r.get("round")) for cid, r in rows}
        found.append(
            {
                "kind": kind,
                "name": kinds.describe(kind)["name"],
                "known": kind in kinds.KINDS,
                "forms": sorted({str(r.get("form")) for _, r in rows}),
                "bytes": [min(sizes), max(sizes)] if sizes else None,
                "per_client_round": round(len(rows) / len(slots), 2) if slots else 0,
            }
        )
    return found


def _size(shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return 0
    return math.prod(shape)


def _n(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _text(x: float, y: float, text: str, *, cls: str = "", anchor: str = "start") -> str:
    attrs = f' class="{cls}"' if cls else ""
    return f'<text x="{x}" y="{y}" text-anchor="{anchor}"{attrs}>{escape(text)}</text>'


def _lines(x: float, y: float, lines: list[tuple[str, str]]) -> str:
    return "".join(_text(x, y + LINE * i, text, cls=cls) for i, (text, cls) in enumerate(lines))


def _client_lines(flow: dict[str, Any]) -> tuple[list, list]:
    shared, kept = ", ".join(flow["shared"]), ", ".join(flow["kept"]) or "nothing"
    trained = "DP-SGD on A, B and head jointly" if flow["dp"] else "trained WITHOUT DP"
    top = [
        ("its training records", "strong"),
        ("never leave the client", "muted"),
        (trained, "" if flow["dp"] else "bad"),
        (f"keeps {kept} on the client", ""),
    ]
    if flow["shared"]:
        if flow["encrypted"]:
            top.append((f"encrypts n_k·{shared} and n_k (CKKS)", ""))
        else:
            top.append((f"sends n_k·{shared} in PLAINTEXT", "bad"))
        if _masked(flow):
            top.append(("masks them (secure aggregation)", ""))
        bottom = [
            ("decrypts the sum, checks its bounds", ""),
            (f"divides by Σ n_k, loads it as {shared}", ""),
            (f"{kept} untouched by the round", "muted"),
        ]
    else:
        top.append(("sends nothing", ""))
        bottom = [("trains alone: no exchange", "muted")]
    return top, bottom


def _masked(flow: dict[str, Any]) -> bool:
    return any(m.get("kind") in kinds.PROTOCOL_KINDS for m in flow.get("messages") or [])


def _server_lines(flow: dict[str, Any]) -> list[tuple[str, str]]:
    if not flow["shared"]:
        return [("receives nothing from clients", "muted")]
    shared = ", ".join(flow["shared"])
    if not flow["encrypted"]:
        return [("receives PLAINTEXT updates", "bad"), (f"adds them: Σ_k n_k·{shared}", "")]
    lines = [
        ("honest-but-curious, no secret key", "muted"),
        ("verifies signature, key, round, sizes", ""),
        (f"only adds: Σ_k ct(n_k·{shared})", ""),
    ]
    if _masked(flow):
        lines += [
            ("forwards adverts and sealed shares", ""),
            ("with t reveals removes the masks", ""),
            ("from the sum, never from one update", "muted"),
        ]
    return [*lines, ("signs the encrypted sum", ""), ("never sees a decrypted value", "muted")]


def _b(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _size_words(message: dict[str, Any]) -> str:
    sizes = message.get("bytes")
    if not sizes:
        return ""
    low, high = sizes
    return f"{_b(low)} B" if low == high else f"{_b(low)}–{_b(high)} B"


def _message_items(flow: dict[str, Any]) -> list[tuple[list, list, str]]:
    """(lines above the arrow, lines below it, class of the arrow) for each message kind, in
    the order of a round; the update first when no message of another kind was recorded."""
    shared = ", ".join(flow["shared"])
    messages = flow.get("messages") or []
    if not any(m["kind"] == kinds.UPDATE for m in messages) and flow["shared"]:
        messages = [*messages, {"kind": kinds.UPDATE, "forms": [], "bytes": None}]
        messages.sort(key=lambda m: kinds.kind_order(m["kind"]))
    items = []
    for message in messages:
        kind, form = message["kind"], ", ".join(message.get("forms") or []) or "—"
        size = _size_words(message)
        if kind == kinds.UPDATE:
            cipher = "ciphertext" if flow["encrypted"] else "PLAINTEXT"
            each = f", {_n(flow['update_bytes'])} B each" if flow["update_bytes"] else ""
            values = f"{_n(flow['shared_tensors'])} tensors, {_n(flow['shared_values'])} values"
            above = [(f"update: {shared}", "strong"), (values, "")]
            below = [(cipher + each, "" if flow["encrypted"] else "bad")]
            if flow["unexpected"]:
                bad = ", ".join(flow["unexpected"])
                below.append((f"ALSO LEFT: {bad} (not allowed)", "bad"))
            items.append((above, below, ""))
        elif kind in ARROW_LABELS:
            name, what = ARROW_LABELS[kind]
            plain = kind == kinds.REPORT and form == "plaintext"
            items.append(
                ([(name, "strong")], [(f"{form}, {size}: {what}", "bad" if plain else "")], "")
            )
        else:
            items.append(
                ([(f"unknown message kind {kind!r}", "bad")], [(f"{form}, {size}", "bad")], "bad")
            )
    return items


def _arrows(flow: dict[str, Any]) -> tuple[str, int]:
    """The arrows of a round and the y below the last one."""
    if not flow["shared"] and not flow.get("messages"):
        return "", FIRST_ARROW
    left, right, mid = CLIENT_X + BOX_W, SERVER_X, WIDTH / 2
    parts, y = [], FIRST_ARROW
    for number, (above, below, cls) in enumerate(_message_items(flow), start=1):
        for text, style in above:
            parts.append(_text(mid, y, text, anchor="middle", cls=style))
            y += LINE
        parts.append(_text(left + 8, y - LINE, str(number), cls="num"))
        stroke = "arrow bad-arrow" if cls else "arrow"
        parts.append(
            f'<line x1="{left}" y1="{y - 9}" x2="{right - 4}" y2="{y - 9}" class="{stroke}" '
            'marker-end="url(#head)"/>'
        )
        y += 6
        for text, style in below:
            parts.append(_text(mid, y, text, anchor="middle", cls=style))
            y += LINE
        y += 12
    if flow["shared"]:
        shared = ", ".join(flow["shared"])
        form = "ciphertext, signed" if flow["encrypted"] else "PLAINTEXT"
        parts.append(_text(mid, y, f"sum of {shared}, Σ n_k", anchor="middle", cls="strong"))
        y += LINE
        parts.append(
            f'<line x1="{right}" y1="{y - 9}" x2="{left + 4}" y2="{y - 9}" class="arrow" '
            'marker-end="url(#head)"/>'
        )
        y += 6
        parts.append(_text(mid, y, form, anchor="middle"))
        y += LINE
    return "".join(parts), y


def data_flow_svg(flow: dict[str, Any]) -> str:
    """One round of ``flow`` (from :func:`data_flow`) as a standalone inline SVG element."""
    top, bottom = _client_lines(flow)
    server = _server_lines(flow)
    arrows, arrows_end = _arrows(flow)
    lines_end = 66 + LINE * (max(len(top), len(server)) + 1) + LINE * len(bottom)
    height = max(arrows_end, lines_end) + 30
    names = [m.get("name", m.get("kind")) for m in flow.get("messages") or []]
    title = (
        f"One round of {flow.get('method')}: {', '.join(flow['shared']) or 'nothing'} leaves each "
        f"client ({'encrypted' if flow['encrypted'] else 'not encrypted'}); "
        f"{', '.join(flow['kept']) or 'nothing'} stays; messages: {', '.join(names) or 'none'}"
    )
    box = 'rx="8" class="box"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="data-flow" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-labelledby="data-flow-title" class="flow">'
        f'<title id="data-flow-title">{escape(title)}</title>'
        "<style>text{font:12px system-ui,sans-serif;fill:#1b1b1b}.strong{font-weight:700}"
        ".muted{fill:#666}.bad{fill:#b3140f;font-weight:700}.box{fill:#f8f8f8;stroke:#888}"
        ".arrow{stroke:#333;stroke-width:2}.bad-arrow{stroke:#b3140f}"
        ".num{font-weight:700;fill:#555}</style>"
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>'
        f'<rect x="{CLIENT_X}" y="20" width="{BOX_W}" height="{height - 30}" {box}/>'
        f'<rect x="{SERVER_X}" y="20" width="{BOX_W}" height="{height - 30}" {box}/>'
        + _text(CLIENT_X + 12, 42, f"Client k (each of {flow.get('clients')})", cls="strong")
        + _lines(CLIENT_X + 12, 66, top)
        + _lines(CLIENT_X + 12, height - 22 - LINE * len(bottom), bottom)
        + _text(SERVER_X + 12, 42, "Aggregation server", cls="strong")
        + _lines(SERVER_X + 12, 66, server)
        + arrows
        + "</svg>"
    )
