"""Run every check on a run directory and assemble the report (a JSON-ready dict)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audits.check_accounting import check_accounting
from audits.check_aggregates import check_aggregates
from audits.check_config import check_configuration
from audits.check_egress import check_egress
from audits.check_encryption import check_encryption
from audits.check_hazards import check_hazards
from audits.check_ledger import check_ledger
from audits.check_rundir import check_run_directory
from audits.diagram import data_flow
from audits.evidence import RunEvidence, load_run
from audits.executive import executive
from audits.install import tool_missing
from audits.overview import overview
from audits.provenance import (
    audited_with,
    evidence_files,
    produced_by,
    recorded_in,
    run_parameters,
)
from audits.result import INSTALLED_MECHANISM, CheckResult, verdict, verdict_word
from audits.statement import (
    epsilon_series,
    privacy_statement,
    releases,
    trust_model,
    with_recomputed,
)

REPORT_FORMAT = "secure_fedsa.audit_report"
# 2: the verdict is one word (PASS, WARN, FAIL, INCONCLUSIVE); overview, run parameters,
# versions, evidence files, data flow, re-computed ε and per-finding advice added
# 3: a configuration check; an executive page (ε in context, the canary test's reach, the
# messages, the versions); every kind of message described and summarised per kind and round;
# the versions config.json records
# 4: every check has a scope; the canary check is the installed-mechanism test (scope
# "installed-mechanism"), with the Steinke et al. and the f-DP one-run bounds and the audit's reach
REPORT_VERSION = 4
NO_CONFIG = {"unavailable": "config.json is missing or unreadable"}

CHECKS: tuple[Callable[[RunEvidence], CheckResult], ...] = (
    check_run_directory,
    check_configuration,
    check_egress,
    check_accounting,
    check_ledger,
    check_aggregates,
    check_encryption,
    check_hazards,
)


def _safe(check: Callable[[RunEvidence], CheckResult], run: RunEvidence) -> CheckResult:
    """A check that crashes on unexpected content reports an error instead of a result; a
    missing package stops the audit as a tool problem (never a verdict about the run)."""
    try:
        return check(run)
    except ImportError as exc:
        raise tool_missing(exc) from None
    except Exception as exc:  # noqa: BLE001 - a bad run directory must never crash the audit
        name = getattr(check, "__name__", "check").removeprefix("check_").replace("_", "-")
        result = CheckResult(name, "(the check could not run)")
        result.error(f"unexpected content: {type(exc).__name__}: {exc}")
        return result


def _part(build: Callable[[RunEvidence], Any], run: RunEvidence) -> Any:
    """A descriptive part of the report; unexpected content leaves a note instead of a crash."""
    try:
        return build(run)
    except ImportError as exc:
        raise tool_missing(exc) from None
    except Exception as exc:  # noqa: BLE001 - a bad run directory must never crash the audit
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def audit_run(
    run_dir: Path, *, extra: tuple[Callable[[RunEvidence], CheckResult], ...] = ()
) -> dict[str, Any]:
    """The full report of ``run_dir``; ``extra`` checks (e.g. the canary audit) run last."""
    started = time.time()
    run = load_run(run_dir)
    results = [_safe(check, run) for check in (*CHECKS, *extra)]
    checks = [r.to_dict() for r in results]
    statement = _part(privacy_statement, run) if run.config else {"dp": None}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "run_directory": str(run_dir),
        "audited_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict_word(results),
        "verdict_text": verdict_text(verdict(results), results),
        "overview": {},
        "executive": {},
        "run_parameters": _part(run_parameters, run) if run.config else NO_CONFIG,
        "versions": {
            "produced_the_run": _part(produced_by, run),
            "recorded_in": _part(recorded_in, run),
            "audited_with": audited_with(),
        },
        "evidence_files": evidence_files(run),
        "bundle": run.bundle,
        "protections_off": run.protections_off() if run.config is not None else ["unknown"],
        "privacy_statement": with_recomputed(statement, checks),
        "data_flow": _part(data_flow, run) if run.config else NO_CONFIG,
        "releases": _part(releases, run),
        "trust_model": trust_model(run),
        "epsilon_over_rounds": _part(epsilon_series, run),
        "epsilon_budget": run.cfg("epsilon"),
        "checks": checks,
    }
    report["overview"] = _part(lambda _: overview(report), run)
    report["executive"] = _part(lambda _: executive(report), run)
    report["seconds"] = round(time.time() - started, 2)
    return report


def verdict_text(overall: str, results: list[CheckResult]) -> str:
    """One line that starts with the verdict word, then says why (``overall``: a status)."""
    failed = [r.name for r in results if r.status == "fail"]
    unverified = [r.name for r in results if r.status == "error"]
    warned = [r.name for r in results if r.status == "warn"]
    undecided = [r.name for r in results if r.status == "inconclusive"]
    if overall == "fail":
        why = [f"{', '.join(failed)} failed"] if failed else []
        why += [f"{', '.join(unverified)} could not be verified"] if unverified else []
        reason = "; ".join(why) or "no check ran"
        return f"FAIL: {reason}. Do not rely on this run's privacy claims."
    if overall == "warn":
        text = f"WARN: no check failed; {', '.join(warned)} raised warnings (see what to do)"
        if undecided:
            text += f"; {', '.join(undecided)} could not decide"
        return text + "."
    if overall == "inconclusive":
        return (
            f"INCONCLUSIVE: every other check verified; {', '.join(undecided)} could not decide "
            "(see its findings)."
        )
    text = "PASS: every check verified from the run's files."
    if any(r.scope == INSTALLED_MECHANISM for r in results):
        text += (
            " Apart from the run: the installed-mechanism test found the mechanism installed "
            "here consistent with the claimed ε (a test of that code, not of this run)."
        )
    return text


_verdict_text = verdict_text  # the name tests and older callers use
