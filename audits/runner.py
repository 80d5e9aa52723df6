"""Run every check on a run directory and assemble the report (a JSON-ready dict)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audits.check_accounting import check_accounting
from audits.check_aggregates import check_aggregates
from audits.check_egress import check_egress
from audits.check_encryption import check_encryption
from audits.check_hazards import check_hazards
from audits.check_ledger import check_ledger
from audits.check_rundir import check_run_directory
from audits.evidence import RunEvidence, load_run
from audits.result import CheckResult, verdict
from audits.statement import TRUST_MODEL, epsilon_series, privacy_statement, releases

REPORT_FORMAT = "secure_fedsa.audit_report"
REPORT_VERSION = 1

CHECKS: tuple[Callable[[RunEvidence], CheckResult], ...] = (
    check_run_directory,
    check_egress,
    check_accounting,
    check_ledger,
    check_aggregates,
    check_encryption,
    check_hazards,
)


def _safe(check: Callable[[RunEvidence], CheckResult], run: RunEvidence) -> CheckResult:
    """A check that crashes on unexpected content reports an error instead of a result."""
    try:
        return check(run)
    except Exception as exc:  # noqa: BLE001 - a bad run directory must never crash the audit
        name = getattr(check, "__name__", "check").removeprefix("check_").replace("_", "-")
        result = CheckResult(name, "(the check could not run)")
        result.error(f"unexpected content: {type(exc).__name__}: {exc}")
        return result


def _part(build: Callable[[RunEvidence], Any], run: RunEvidence) -> Any:
    """A descriptive part of the report; unexpected content leaves a note instead of a crash."""
    try:
        return build(run)
    except Exception as exc:  # noqa: BLE001 - a bad run directory must never crash the audit
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def audit_run(
    run_dir: Path, *, extra: tuple[Callable[[RunEvidence], CheckResult], ...] = ()
) -> dict[str, Any]:
    """The full report of ``run_dir``; ``extra`` checks (e.g. the canary audit) run last."""
    started = time.time()
    run = load_run(run_dir)
    results = [_safe(check, run) for check in (*CHECKS, *extra)]
    overall = verdict(results)
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "run_directory": str(run_dir),
        "audited_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": overall,
        "verdict_text": _verdict_text(overall, results),
        "protections_off": run.protections_off() if run.config is not None else ["unknown"],
        "privacy_statement": _part(privacy_statement, run) if run.config else {"dp": None},
        "releases": _part(releases, run),
        "trust_model": TRUST_MODEL,
        "epsilon_over_rounds": _part(epsilon_series, run),
        "epsilon_budget": run.cfg("epsilon"),
        "checks": [r.to_dict() for r in results],
        "seconds": round(time.time() - started, 2),
    }


def _verdict_text(overall: str, results: list[CheckResult]) -> str:
    bad = [r.name for r in results if r.status in ("fail", "error")]
    warned = [r.name for r in results if r.status == "warn"]
    undecided = [r.name for r in results if r.status == "inconclusive"]
    if overall == "fail":
        return f"FAIL: {', '.join(bad)} did not verify. Do not rely on this run's privacy claims."
    if overall == "warn":
        return f"PASS WITH WARNINGS: every check verified; warnings in {', '.join(warned)}."
    if overall == "inconclusive":
        return (
            f"INCONCLUSIVE: every other check verified; {', '.join(undecided)} could not decide "
            "(see its findings)."
        )
    return "PASS: every check verified from the run's files."
