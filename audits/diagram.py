"""The data flow of one round, as the run's own files describe it, drawn as inline SVG.

:func:`data_flow` reads which tensor groups leave a client (from setup.json's shared-tensor
manifest; the method's allowed groups when there is none), their size, the form and bytes of the
updates (from the egress records), and whether DP and encryption were on. :func:`data_flow_svg`
draws it (pure, no external resources): what each client trains and keeps, what it sends to the
server and in what form, that the server only verifies and adds, and what comes back.
"""

from __future__ import annotations

import math
import statistics
from html import escape
from typing import Any

from audits.evidence import RunEvidence
from audits.groups import allowed_groups, tensor_group

TRAINED_GROUPS = ("A", "B", "head")
WIDTH, HEIGHT, BOX_W = 780, 330, 290
CLIENT_X, SERVER_X = 10, WIDTH - 10 - BOX_W


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
    return "".join(_text(x, y + 18 * i, text, cls=cls) for i, (text, cls) in enumerate(lines))


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
        bottom = [
            ("decrypts the sum, checks its bounds", ""),
            (f"divides by Σ n_k, loads it as {shared}", ""),
            (f"{kept} untouched by the round", "muted"),
        ]
    else:
        top.append(("sends nothing", ""))
        bottom = [("trains alone: no exchange", "muted")]
    return top, bottom


def _server_lines(flow: dict[str, Any]) -> list[tuple[str, str]]:
    if not flow["shared"]:
        return [("receives nothing from clients", "muted")]
    shared = ", ".join(flow["shared"])
    if not flow["encrypted"]:
        return [("receives PLAINTEXT updates", "bad"), (f"adds them: Σ_k n_k·{shared}", "")]
    return [
        ("honest-but-curious, no secret key", "muted"),
        ("verifies signature, key, round, sizes", ""),
        (f"only adds: Σ_k ct(n_k·{shared})", ""),
        ("signs the encrypted sum", ""),
        ("never sees a decrypted value", "muted"),
    ]


def _arrows(flow: dict[str, Any]) -> str:
    if not flow["shared"]:
        return ""
    left, right, mid = CLIENT_X + BOX_W, SERVER_X, WIDTH / 2
    shared = ", ".join(flow["shared"])
    size = f"{_n(flow['shared_tensors'])} tensors, {_n(flow['shared_values'])} values"
    form = "ciphertext" if flow["encrypted"] else "PLAINTEXT"
    each = f", {_n(flow['update_bytes'])} B each" if flow["update_bytes"] else ""
    parts = [
        f'<line x1="{left}" y1="120" x2="{right - 4}" y2="120" class="arrow" '
        'marker-end="url(#head)"/>',
        _text(mid, 92, f"update: {shared}", anchor="middle", cls="strong"),
        _text(mid, 108, size, anchor="middle"),
        _text(mid, 138, form + each, anchor="middle", cls="" if flow["encrypted"] else "bad"),
        f'<line x1="{right}" y1="250" x2="{left + 4}" y2="250" class="arrow" '
        'marker-end="url(#head)"/>',
        _text(mid, 222, f"sum of {shared}, Σ n_k", anchor="middle", cls="strong"),
        _text(mid, 238, form + (", signed" if flow["encrypted"] else ""), anchor="middle"),
    ]
    if flow["unexpected"]:
        bad = ", ".join(flow["unexpected"])
        parts.append(_text(mid, 160, f"ALSO LEFT: {bad} (not allowed)", anchor="middle", cls="bad"))
    return "".join(parts)


def data_flow_svg(flow: dict[str, Any]) -> str:
    """One round of ``flow`` (from :func:`data_flow`) as a standalone inline SVG element."""
    top, bottom = _client_lines(flow)
    title = (
        f"One round of {flow.get('method')}: {', '.join(flow['shared']) or 'nothing'} leaves each "
        f"client ({'encrypted' if flow['encrypted'] else 'not encrypted'}); "
        f"{', '.join(flow['kept']) or 'nothing'} stays"
    )
    box = 'rx="8" class="box"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="data-flow" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="data-flow-title" class="flow">'
        f'<title id="data-flow-title">{escape(title)}</title>'
        "<style>text{font:12px system-ui,sans-serif;fill:#1b1b1b}.strong{font-weight:700}"
        ".muted{fill:#666}.bad{fill:#b3140f;font-weight:700}.box{fill:#f8f8f8;stroke:#888}"
        ".arrow{stroke:#333;stroke-width:2}</style>"
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>'
        f'<rect x="{CLIENT_X}" y="20" width="{BOX_W}" height="{HEIGHT - 30}" {box}/>'
        f'<rect x="{SERVER_X}" y="20" width="{BOX_W}" height="{HEIGHT - 30}" {box}/>'
        + _text(CLIENT_X + 12, 42, f"Client k (each of {flow.get('clients')})", cls="strong")
        + _lines(CLIENT_X + 12, 66, top)
        + _lines(CLIENT_X + 12, 230, bottom)
        + _text(SERVER_X + 12, 42, "Aggregation server", cls="strong")
        + _lines(SERVER_X + 12, 66, _server_lines(flow))
        + _arrows(flow)
        + "</svg>"
    )
