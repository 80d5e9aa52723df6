"""Check (P1, P2, P6): what left each client, by tensor name, size and form."""

from __future__ import annotations

from collections import Counter
from typing import Any

from audits.evidence import RunEvidence
from audits.groups import allowed_groups, tensor_group
from audits.result import CheckResult

NAME = "egress"
STATEMENT = (
    "Every message each client sent (from the egress record written by the transport) carried "
    "only the tensor groups its method shares (fedsa: A; fedit: A and B; ffa: B; local: "
    "nothing; the task head only in a run configured to share it), never any other tensor; "
    "each was a ciphertext; and each client "
    "sent one update per round it trained, and nothing else (an update re-sent after an "
    "interruption counts only when its privacy-ledger entry shows the round was paid for)."
)
REPORT_KIND = "report"
# secure aggregation's protocol messages (public keys, shares encrypted to peers, revealed
# shares of mask seeds): they carry no tensor and nothing computed from the training data
SECAGG_KINDS = frozenset({"secagg-keys", "secagg-shares", "secagg-reveal"})
REQUIRED_FIELDS = ("client", "round", "kind", "bytes", "sha256", "form", "tensors")


def check_egress(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    method = run.cfg("method")
    if run.config is None:
        result.error("config.json is missing or unreadable: the method and encryption are unknown")
        return result
    allowed = allowed_groups(method, run.cfg("head"))
    if allowed is None:
        result.error(
            f"unknown method {method!r} or head setting {run.cfg('head')!r}: cannot tell which "
            "tensors may leave a client"
        )
        return result
    encrypted = run.cfg("encryption") is True
    result.evidence.update(
        method=method,
        head=run.cfg("head") or "local",
        allowed_groups=sorted(allowed),
        encryption=encrypted,
        manifest=_manifest_names(run),
        clients={},
    )
    if not encrypted:
        result.fail("no encryption: config.json turns encryption off, so updates left in plaintext")
    manifest = _manifest_names(run)
    if manifest is None and allowed:
        result.error("setup.json has no shared-tensor manifest to compare the egress with")
    for cid in run.client_ids:
        result.evidence["clients"][cid] = _check_client(run, cid, allowed, manifest, result)
    _check_round_bytes(run, result)
    return result


def _manifest_names(run: RunEvidence) -> list[str] | None:
    manifest = (run.setup or {}).get("manifest")
    if not isinstance(manifest, list):
        return None
    return [m.get("name") for m in manifest if isinstance(m, dict)]


def _check_client(
    run: RunEvidence,
    cid: str,
    allowed: frozenset[str],
    manifest: list[str] | None,
    result: CheckResult,
) -> dict[str, Any]:
    records = run.egress.get(cid)
    trained = run.trained_rounds(cid)
    problem = run.problems.get(f"egress/{cid}.jsonl")
    summary: dict[str, Any] = {"messages": [], "total_bytes": 0}
    if records is None:
        if allowed and (trained is None or trained):
            result.fail(f"{cid}: egress record {problem or 'missing'}; what left it is unknown")
        records = []
    elif problem:
        result.fail(f"{cid}: egress record damaged: {problem}")
    encrypted = run.cfg("encryption") is True
    uploads: Counter[int] = Counter()
    paid: Counter[int] = Counter()  # uploads that name a ledger entry of their round
    rounds_of_entries = _ledger_entry_rounds(run, cid)
    reports = 0
    protocol_messages = 0
    for index, record in enumerate(records, start=1):
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            result.fail(f"{cid}: egress message {index} lacks {', '.join(missing)}")
            continue
        tensors = record["tensors"] if isinstance(record["tensors"], list) else []
        groups = sorted({tensor_group(str(n)) for n in tensors})
        summary["messages"].append(
            {
                "round": record["round"],
                "kind": record["kind"],
                "bytes": record["bytes"],
                "form": record["form"],
                "groups": groups,
                "tensors": len(tensors),
                "transport": record.get("transport"),
            }
        )
        if isinstance(record["bytes"], int):
            summary["total_bytes"] += record["bytes"]
        where = f"{cid} round {record['round']}"
        if record["client"] != cid:
            result.fail(f"{where}: message names client {record['client']!r} in {cid}'s record")
        forbidden = [g for g in groups if g not in allowed]
        if forbidden:
            result.fail(f"{where}: tensors of group(s) {', '.join(forbidden)} left the client")
        if manifest is not None and tensors and list(tensors) != manifest:
            result.fail(f"{where}: tensor names differ from the shared-tensor manifest")
        if record["kind"] == REPORT_KIND:
            # Flower sites reply with a small plaintext report (status, epsilon, a status code
            # about the aggregate) next to each update. It may carry no tensor at all.
            if tensors:
                result.fail(f"{where}: a metrics report carried tensors")
            reports += 1
            continue
        if record["kind"] in SECAGG_KINDS:
            if tensors:
                result.fail(f"{where}: a secure-aggregation message carried tensors")
            protocol_messages += 1
            continue
        if encrypted and record["form"] != "ciphertext":
            result.fail(f"{where}: a {record['form']!r} message left with encryption on")
        if record["kind"] == "update":
            uploads[record["round"]] += 1
            if rounds_of_entries.get(record.get("ledger_entry")) == record["round"]:
                paid[record["round"]] += 1
        else:
            result.fail(f"{where}: unexpected message kind {record['kind']!r}")
    last_round = max(
        (r["round"] for r in run.metrics or [] if isinstance(r.get("round"), int)), default=0
    )
    _check_uploads(cid, uploads, paid, trained, bool(allowed), result, last_round)
    summary["uploads_per_round"] = {str(r): n for r, n in sorted(uploads.items())}
    summary["secure_aggregation_messages"] = protocol_messages
    if reports:
        summary["metrics_reports"] = reports
        result.warn(
            f"{cid}: {reports} plaintext metrics report(s) (training status, epsilon, the "
            "aggregate's status code, no tensors) left the client; with report-accuracy they "
            "also carry held-out accuracy, which is outside the DP guarantee",
            code="plaintext-reports",
        )
    return summary


def _ledger_entry_rounds(run: RunEvidence, cid: str) -> dict[Any, Any]:
    """Entry hash -> round, from the client's privacy ledger (empty without one)."""
    ledger = run.ledgers.get(cid)
    entries = (ledger or {}).get("entries") if isinstance(ledger, dict) else None
    if not isinstance(entries, list):
        return {}
    return {e.get("hash"): e.get("round") for e in entries if isinstance(e, dict)}


def _check_uploads(
    cid: str,
    uploads: Counter[int],
    paid: Counter[int],
    trained: dict[int, dict] | None,
    sharing: bool,
    result: CheckResult,
    last_round: int,
) -> None:
    if trained is None:
        result.error(f"{cid}: metrics.jsonl unreadable; cannot match uploads to trained rounds")
        return
    expected = set(trained) if sharing else set()
    for round_number in sorted(expected | set(uploads)):
        count = uploads.get(round_number, 0)
        if round_number in expected and count == 0:
            result.fail(f"{cid}: no egress record for round {round_number}, which it trained")
        elif round_number not in expected and round_number > last_round and sharing:
            result.warn(
                f"{cid}: {count} message(s) in round {round_number}, after the last round in "
                "metrics.jsonl (an interrupted round)",
                code="interrupted-round",
            )
        elif round_number not in expected:
            result.fail(
                f"{cid}: {count} message(s) in round {round_number}, which it did not train"
            )
        elif count > 1 and paid.get(round_number, 0) == count:
            result.note(
                f"{cid}: {count} uploads in round {round_number}, each paid for by a ledger "
                "entry of that round (re-sent after an interruption)"
            )
        elif count > 1:
            result.fail(
                f"{cid}: {count} uploads in round {round_number} (expected one; a re-sent update "
                "must name the ledger entry that paid for it)"
            )


def _check_round_bytes(run: RunEvidence, result: CheckResult) -> None:
    """metrics.jsonl's upload bytes per round equal the sum of the egress records of the
    updates that round counted: each client's last update of the round (an earlier one was
    re-sent after an interruption, and the audit notes it above)."""
    for record in run.metrics or []:
        round_number, expected = record.get("round"), record.get("upload_bytes")
        if not isinstance(expected, int):
            continue
        last_update: dict[str, int] = {}
        other = 0
        for cid, records in run.egress.items():
            for m in records or []:
                if m.get("round") != round_number or not isinstance(m.get("bytes"), int):
                    continue
                if m.get("kind") == "update":
                    last_update[cid] = m["bytes"]
                elif m.get("kind") == REPORT_KIND:
                    other += m["bytes"]
        sent = sum(last_update.values()) + other
        if sent != expected:
            result.fail(
                f"round {round_number}: metrics report {expected} bytes uploaded, the egress "
                f"records {sent}"
            )
