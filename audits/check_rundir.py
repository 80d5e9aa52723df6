"""Check: the run directory is complete, readable and from a release this audit understands."""

from __future__ import annotations

from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "run-directory"
STATEMENT = (
    "The run directory holds every file the audit needs (configuration, setup, metrics, each "
    "client's privacy ledger and egress record, the server key bundle), each readable, and "
    "was written by a configuration version this audit understands; in an auditor bundle, every "
    "file matches the bundle's manifest."
)

# Files whose absence means a claim cannot be verified; summary.json only exists once a run
# finished, so its absence marks an interrupted run (a warning, not a failure).
REQUIRED = ("config.json", "setup.json", "metrics.jsonl")


def check_run_directory(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    result.evidence = {
        "config_version": run.cfg("version"),
        "written_by": run.cfg("secure_fedsa"),
        "clients": run.client_ids,
        "rounds_in_metrics": len(run.metrics or []),
        "problems": dict(run.problems),
    }
    if run.config is None:
        result.fail(f"config.json: {run.problems.get('config.json', 'missing')}")
    elif "config.json" in run.problems:
        result.fail(f"config.json: {run.problems['config.json']}")
    for name in REQUIRED[1:]:
        if name in run.problems:
            result.fail(f"{name}: {run.problems[name]}")
    if not run.client_ids:
        result.fail("no client is named by any file (setup.json, clients/, egress/, metrics)")
    for name, problem in sorted(run.problems.items()):
        if name.startswith("clients/") and run.cfg("dp") is True:
            result.fail(f"{name}: {problem}")
        elif name.startswith("egress/") and _uploads_expected(run):
            if problem != "missing" or _client_trained(run, name):
                result.fail(f"{name}: {problem}")
        elif name == "keys/server.keys" and run.cfg("encryption") is True:
            result.fail(f"{name}: {problem}")
    for problem in (run.bundle or {}).get("problems", []):
        result.fail(f"auditor bundle: {problem}")
    if "summary.json" in run.problems:
        result.warn(
            f"summary.json: {run.problems['summary.json']} (an interrupted run; the audit "
            "re-derives everything from the other files)",
            code="interrupted-run",
        )
    return result


def _uploads_expected(run: RunEvidence) -> bool:
    return run.cfg("method") != "local"


def _client_trained(run: RunEvidence, egress_name: str) -> bool:
    cid = egress_name.removeprefix("egress/").removesuffix(".jsonl")
    trained = run.trained_rounds(cid)
    return bool(trained) or trained is None
