"""Check (P4, P5): each privacy ledger is intact, and it paid for everything its client released.

The ledger is a hash chain (each entry holds the SHA-256 of the previous one, the first the hash
of the identity; every entry its own hash). This check recomputes the chain itself, from the
JSON alone (sorted keys, no spaces, ASCII; the ``hash`` field left out), so a ledger that was
edited, trimmed, reordered or had an entry removed in the middle fails. It then matches every
update in the client's egress record against the entry that paid for it (``ledger_entry``), which
catches a ledger rewritten consistently after the fact, and checks where each entry's noise came
from: only the OS CSPRNG makes the run DP against someone who has its files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "ledger-integrity"
STATEMENT = (
    "Every client's privacy ledger is an intact hash chain anchored in its identity; every "
    "update the client sent names a ledger entry of that round that paid for it; and every "
    "round's DP noise and sampling came from the operating system's CSPRNG, so nobody can "
    "predict them from the run's files."
)
SECURE_SOURCE = "os-csprng"


def canonical_hash(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``document`` without its ``hash`` field."""
    body = {k: v for k, v in document.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def chain_problems(ledger: dict[str, Any]) -> list[str]:
    """Where the ledger's hash chain breaks (pure; empty when intact)."""
    identity, entries = ledger.get("identity"), ledger.get("entries")
    if not isinstance(identity, dict) or not isinstance(entries, list):
        return ["the ledger has no identity or no entry list"]
    link = canonical_hash(identity)
    problems = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            return [f"entry {index} is not a JSON object"]
        where = f"entry {index} (round {entry.get('round')!r})"
        if entry.get("previous") != link:
            problems.append(f"{where} does not follow the entry before it")
        if entry.get("hash") != canonical_hash(entry):
            problems.append(f"{where} was edited after it was written (its hash differs)")
        link = entry.get("hash")
    return problems


def check_ledger(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    if run.cfg("dp") is not True:
        result.fail("no differential privacy: config.json turns DP off; there is no ledger")
        return result
    result.evidence["clients"] = {}
    for cid in run.client_ids:
        result.evidence["clients"][cid] = _check_client(run, cid, result)
    return result


def _check_client(run: RunEvidence, cid: str, result: CheckResult) -> dict[str, Any]:
    ledger = run.ledgers.get(cid)
    if not isinstance(ledger, dict):
        problem = run.problems.get(f"clients/{cid}/privacy_ledger.json", "missing")
        result.fail(f"{cid}: privacy ledger {problem}: nothing pays for what the client released")
        return {"ledger": problem}
    broken = chain_problems(ledger)
    for problem in broken:
        result.fail(f"{cid}: hash chain broken: {problem}")
    entries = [e for e in ledger.get("entries") or [] if isinstance(e, dict)]
    by_hash = {e.get("hash"): e for e in entries}
    sources = sorted({str(e.get("noise_source")) for e in entries})
    for source in sources:
        if source != SECURE_SOURCE:
            result.fail(
                f"{cid}: rounds ran with noise source {source!r}: not DP against anyone who knows "
                "the seed (a reproducible-noise mode meant for tests only)"
            )
    paid, resent, unpaid = 0, 0, []
    seen: set[str] = set()
    for record in run.egress.get(cid) or []:
        if record.get("kind") != "update":
            continue
        entry = by_hash.get(record.get("ledger_entry"))
        if entry is None or entry.get("round") != record.get("round"):
            unpaid.append(record.get("round"))
            continue
        paid += 1
        if record["ledger_entry"] in seen:
            resent += 1
        seen.add(record["ledger_entry"])
    for number in unpaid:
        result.fail(
            f"{cid}: an update of round {number!r} names no ledger entry of that round: the "
            "ledger does not account for it (deleted, trimmed or rewritten after the fact)"
        )
    retried = len(entries) - len({e.get("round") for e in entries})
    if resent:
        result.note(
            f"{cid}: {resent} update(s) re-sent after an interruption from an already charged "
            "round (same ledger entry; no new privacy spent)"
        )
    if retried:
        result.note(
            f"{cid}: {retried} round(s) trained again after a crash lost their result, and "
            "charged again (counting a round twice is safe)"
        )
    return {
        "entries": len(entries),
        "chain_intact": not broken,
        "head": entries[-1].get("hash") if entries else None,
        "noise_sources": sources,
        "updates_paid": paid,
        "updates_resent": resent,
        "updates_unpaid": len(unpaid),
        "rounds_charged_twice": retried,
    }
