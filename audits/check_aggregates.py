"""Check (P7): which aggregates the clients loaded, and which they rejected as impossible.

Every client checks the aggregate it decrypts against what honest clients can produce (the
contributors it names, whose roster weights are the divisor; finite values; how far honest training
moves a shared value; see ``secure_fedsa/site/aggregate_check.py``) and discards one that fails. The
audit cannot see decrypted values; it reads what ``metrics.jsonl`` recorded per round and reports
every rejected aggregate: the run completed, but those rounds taught the clients nothing shared (a
sign of a misbehaving key holder, or of a corrupted or forged aggregate).
"""

from __future__ import annotations

from typing import Any

from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "aggregates"
STATEMENT = (
    "Every aggregate a client loaded passed that client's check that honest clients could have "
    "produced it (signed by the server, contributors named from the roster, finite values, shared "
    "values within the bound honest training obeys); every rejected aggregate is listed with the "
    "clients that rejected it."
)


def check_aggregates(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    if run.metrics is None:
        result.error(
            "metrics.jsonl is missing or unreadable: which aggregates were loaded is unknown"
        )
        return result
    rounds: dict[str, Any] = {}
    for record in run.metrics:
        aggregate = record.get("aggregate")
        number = record.get("round")
        if not isinstance(aggregate, dict) or not aggregate:
            continue  # a method that shares nothing, or no update accepted
        status = aggregate.get("status")
        rejected_by = aggregate.get("rejected_by") or {}
        rounds[str(number)] = {
            "status": status,
            "contributors": aggregate.get("contributors"),
            "rejected_by": sorted(rejected_by),
        }
        if status == "rejected":
            first = next(iter(rejected_by.values()), None)
            reason = first[0] if isinstance(first, list) and first else first
            result.warn(
                f"round {number}: the aggregate was rejected by {', '.join(sorted(rejected_by))}"
                f" ({reason}); they kept their previous shared tensors. Look for the client that "
                "sent an impossible update (contributors: "
                f"{', '.join(map(str, aggregate.get('contributors') or []))})",
                code="rejected-aggregate",
            )
        elif status != "applied":
            result.fail(f"round {number}: unknown aggregate status {status!r}")
    result.evidence["rounds"] = rounds
    if not rounds:
        result.note("no round of this run produced an aggregate (nothing was shared)")
    return result
