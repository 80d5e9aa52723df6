"""Every kind of message a client sends, in words, and what the egress records show of each.

A client sends six kinds of message (``kind`` in its egress record, written by the transport as it
sends): its encrypted **update**; secure aggregation's four protocol messages — the masking **key
advert** (``secagg-keys``), the **shares** of its masking secrets encrypted to its peers
(``secagg-shares``), the **survivor-set signature** (``secagg-survivors``) and the **reveal** that
lets the server unmask the sum (``secagg-reveal``); and, in Flower deployments, a small plaintext
**status report** (``report``). :data:`KINDS` says, for each, what it carries, to whom, in what form
and why it is safe (from secure_fedsa/secagg/protocol.py, docs/crypto.md and docs/threat-model.md,
restated here for the report); the sizes the protocol fixes (:data:`ADVERT_BYTES`,
:data:`SEALED_SHARE_BYTES`, :data:`SHARE_BYTES`) are re-stated independently of the code under
audit. :func:`summary` counts the messages per kind and round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

UPDATE, KEYS, SHARES, SURVIVORS, REVEAL, REPORT = (
    "update",
    "secagg-keys",
    "secagg-shares",
    "secagg-survivors",
    "secagg-reveal",
    "report",
)
PROTOCOL_KINDS = (KEYS, SHARES, SURVIVORS, REVEAL)  # secure aggregation's messages: no tensor
ORDER = (KEYS, SHARES, UPDATE, SURVIVORS, REVEAL, REPORT)  # as they are sent in a round
X25519_PUBLIC_BYTES, ED25519_SIGNATURE_BYTES = 32, 64
ADVERT_BYTES = 2 * X25519_PUBLIC_BYTES + ED25519_SIGNATURE_BYTES  # 128
SHARE_BYTES = 33  # one Shamir share: a field element below 2^257
NONCE_BYTES, TAG_BYTES = 12, 16  # ChaCha20-Poly1305
# one peer's sealed shares: its share of the self-mask seed and of the mask key, encrypted
SEALED_SHARE_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES  # 94

KINDS: dict[str, dict[str, str]] = {
    UPDATE: {
        "name": "encrypted update",
        "short": "the shared tensors, trained with DP and encrypted",
        "carries": "the tensors the method shares (fedsa: the LoRA A matrices), multiplied by "
        "the client's number of records n_k, and n_k itself, as CKKS ciphertexts; with masking "
        "every ciphertext also carries the client's random masks. A plaintext header names the "
        "round, run, client, key fingerprint, manifest hash, sizes and the privacy-ledger entry "
        "that paid for it; the whole message is signed (Ed25519)",
        "to": "the aggregation server, which adds it to the other clients' updates",
        "form": "ciphertext",
        "why_safe": "the values were trained with DP-SGD, so they are (ε, δ)-DP for the "
        "client's records whoever reads them; the server has no key to decrypt them; with "
        "masking even a holder of the key cannot read one client's update unless t clients "
        "collude with the server; the header holds only public configuration",
    },
    KEYS: {
        "name": "masking key advert",
        "short": "two public keys and a signature",
        "carries": f"two fresh X25519 public keys for this round (one to encrypt shares to this "
        f"client, one to agree on pairwise masks) and the client's Ed25519 signature over them, "
        f"the run and the round: {X25519_PUBLIC_BYTES} + {X25519_PUBLIC_BYTES} + "
        f"{ED25519_SIGNATURE_BYTES} = {ADVERT_BYTES} bytes",
        "to": "the server, which forwards every advert to every client of the round",
        "form": "plaintext",
        "why_safe": "public keys are meant to be seen; they are drawn from the OS random "
        "generator afresh every round and are computed from nothing else, so they say nothing "
        "about any training record",
    },
    SHARES: {
        "name": "encrypted shares",
        "short": "shares of random mask secrets, each sealed to its recipient",
        "carries": f"Shamir shares of the client's self-mask seed and of its pairwise-mask "
        f"private key, one pair per client of the round, each pair encrypted and authenticated "
        f"(ChaCha20-Poly1305) to that client with a key agreed from its advert: "
        f"{SEALED_SHARE_BYTES} bytes per recipient",
        "to": "the server, which forwards each share to its recipient and cannot read it",
        "form": "ciphertext",
        "why_safe": "only the recipient can decrypt its share, fewer than t shares reveal "
        "nothing about a secret (Shamir), and the secrets are random masks, not training data",
    },
    SURVIVORS: {
        "name": "survivor-set signature",
        "short": "a signature of the set of clients whose update arrived",
        "carries": f"the client's Ed25519 signature over the run, the round and the sets of "
        f"present and dropped clients the server showed it ({ED25519_SIGNATURE_BYTES} bytes); "
        f"it signs one set per round",
        "to": "the server, which forwards the present clients' signatures to each of them",
        "form": "plaintext",
        "why_safe": "it says only which clients the server named, which the server chose; it "
        "lets every client check that at least t clients were shown the same survivor set "
        "before revealing anything (secure aggregation's consistency round)",
    },
    REVEAL: {
        "name": "unmasking reveal",
        "short": "shares that unmask only the sum",
        "carries": f"after the updates arrived: for each client whose update arrived, this "
        f"client's share of that client's self-mask seed; for each client that dropped out, its "
        f"share of that client's mask key; never both for one client ({SHARE_BYTES} bytes per "
        f"share)",
        "to": "the server, which needs t reveals to take the masks off the sum",
        "form": "plaintext",
        "why_safe": "the revealed shares remove only masks that cancel in the sum: a client "
        "never reveals both kinds of share for one client, so no single update can be "
        "unmasked, and the sum itself stays CKKS-encrypted",
    },
    REPORT: {
        "name": "status report (Flower)",
        "short": "status, steps and ε (and accuracy, if configured)",
        "carries": "plaintext JSON: client id, training status, steps, ε spent, whether the "
        "aggregate was applied; with the run config report-accuracy, held-out accuracy too",
        "to": "the server",
        "form": "plaintext",
        "why_safe": "status, steps and ε follow from the public configuration and the DP "
        "ledger; held-out accuracy does not (it is outside the DP guarantee), so the audit "
        "warns about these reports",
    },
}
UNKNOWN = {
    "name": "unknown kind",
    "short": "not explained",
    "carries": "not a message this system sends: nothing says what it carried",
    "to": "unknown",
    "form": "as recorded",
    "why_safe": "not established: the egress check fails it",
}


def describe(kind: str) -> dict[str, str]:
    """What ``kind`` carries, to whom, in what form, why it is safe (plain language)."""
    return {"kind": kind, **KINDS.get(kind, UNKNOWN)}


def kind_order(kind: str) -> tuple[int, str]:
    return (ORDER.index(kind) if kind in ORDER else len(ORDER), kind)


def _bytes(values: Iterable[Any]) -> list[int]:
    return sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool)})


def summary(records: dict[str, list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """One row per kind and round: messages, clients, bytes (each and total), forms (pure).

    ``records`` is client -> egress records. Consecutive rounds with the same counts, sizes and
    forms are merged into one row (``rounds`` first and last), so that a long run stays short.
    """
    cells: dict[tuple[str, Any], list[tuple[str, dict[str, Any]]]] = {}
    for cid, rows in records.items():
        for row in rows or []:
            if isinstance(row, dict):
                cells.setdefault((str(row.get("kind")), row.get("round")), []).append((cid, row))
    per_round = []
    for (kind, round_number), rows in cells.items():
        sizes = [r.get("bytes") for _, r in rows]
        per_round.append(
            {
                "kind": kind,
                "round": round_number,
                "messages": len(rows),
                "clients": len({cid for cid, _ in rows}),
                "bytes_each": _bytes(sizes),
                "bytes_total": sum(
                    s for s in sizes if isinstance(s, int) and not isinstance(s, bool)
                ),
                "forms": sorted({str(r.get("form")) for _, r in rows}),
            }
        )
    per_round.sort(key=lambda c: (*kind_order(c["kind"]), _round_key(c["round"])))
    merged: list[dict[str, Any]] = []
    last_signature = None
    for cell in per_round:
        signature = tuple(
            str(cell[k]) for k in ("kind", "messages", "clients", "bytes_each", "forms")
        )
        if signature == last_signature and _follows(merged[-1]["rounds"][1], cell["round"]):
            row = merged[-1]
            row["rounds"][1] = cell["round"]
            row["bytes_total"] += cell["bytes_total"]
            row["round_count"] += 1
            continue
        last_signature = signature
        merged.append(
            {
                "kind": cell["kind"],
                "name": describe(cell["kind"])["name"],
                "rounds": [cell["round"], cell["round"]],
                "round_count": 1,
                "messages_per_round": cell["messages"],
                "clients": cell["clients"],
                "bytes_each": cell["bytes_each"],
                "bytes_total": cell["bytes_total"],
                "forms": cell["forms"],
            }
        )
    return merged


def _round_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) else (1, str(value))


def _follows(last: Any, current: Any) -> bool:
    return isinstance(last, int) and isinstance(current, int) and current == last + 1
