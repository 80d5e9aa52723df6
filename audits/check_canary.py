"""Check (P4, empirical): a test of the DP mechanism as installed (on demand; it trains).

For each distinct DP history in the ledgers (σ, q, steps per round, and the clip), m Dirac
gradient canaries are trained, in the auditor's own process, through the DP-SGD engine of the
secure_fedsa installed there, with exactly those parameters (see :mod:`audits.canary_train`),
scored, and audited by :mod:`audits.canary_audit`: two ε lower bounds at 95 % confidence (the
(ε, δ) analysis of Steinke, Nasr & Jagielski 2023 and the Gaussian f-DP analysis of Mahloujifar,
Melis & Chaudhuri 2025, the error split between them), neither of which may exceed the ε the
ledger claims.

What it tests is the mechanism (clipping, noise, Poisson sampling, and their accounting) of the
*installed* code, not the run itself: the run's own training is not replayed, and neither the data
pipeline, the model code nor the federation around it is audited. Its scope is therefore
``installed-mechanism``: a pass is shown as "consistent" for the installed mechanism, never as a
pass of the run. It warns when the installed versions differ from those that made the run (from
the ledgers). With m canaries the test cannot certify an ε above a ceiling; when the claimed ε is
above it, the result is INCONCLUSIVE (never PASS), with ε_LB shown next to the claim.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from audits.canary_audit import CONFIDENCE, audit_scores, verdict_finding
from audits.canary_train import train_canaries
from audits.check_accounting import ledger_history, reported_epsilon
from audits.evidence import RunEvidence
from audits.result import INSTALLED_MECHANISM, CheckResult

NAME = "installed-mechanism-test"
STATEMENT = (
    "Installed-mechanism test (not a test of this run): empirical lower bounds on ε, from Dirac "
    "gradient canaries trained in the auditor's process through the installed secure_fedsa "
    "DP-SGD engine with each client's recorded noise, sampling rate, clip and steps (one-run "
    "audits: the (ε, δ) analysis of Steinke, Nasr & Jagielski 2023 and the Gaussian f-DP "
    "analysis of Mahloujifar, Melis & Chaudhuri 2025, 95 % confidence), do not exceed the ε its "
    "ledger claims, and the claim is within what the number of canaries can certify."
)
SUBJECT = "the installed mechanism's releases"


def audit_history(
    events: list[tuple[float, float, int]],
    *,
    clip: float,
    delta: float,
    canaries: int,
    seed: int,
    noise_scale: float = 1.0,
    mode: str = "hooks",
    physical_batch_size: int = 4096,
) -> dict[str, Any]:
    """Train canaries with ``events``; return both ε lower bounds, the ceilings and the guesses."""
    rng = random.Random(seed)
    included = [rng.random() < 0.5 for _ in range(canaries)]
    started = time.time()
    scores = train_canaries(
        included,
        events,
        clip=clip,
        noise_scale=noise_scale,
        mode=mode,
        physical_batch_size=physical_batch_size,
        seed=seed,
    )
    audit = audit_scores(scores, included, delta=delta)
    return {**audit.to_dict(), "train_seconds": round(time.time() - started, 2)}


def canary_check(*, canaries: int, seed: int = 0) -> Callable[[RunEvidence], CheckResult]:
    """The canary audit as a check for :func:`audits.runner.audit_run`."""

    def check_canary(run: RunEvidence) -> CheckResult:
        return _check(run, canaries=canaries, seed=seed)

    return check_canary


def _check(run: RunEvidence, *, canaries: int, seed: int) -> CheckResult:
    result = CheckResult(NAME, STATEMENT, scope=INSTALLED_MECHANISM)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    if run.cfg("dp") is not True:
        result.fail("no differential privacy: there is no claimed ε to audit")
        return result
    _check_versions(run, result)
    mode = run.cfg("clipping") if run.cfg("clipping") in ("ghost", "hooks") else "hooks"
    physical = run.cfg("physical_batch_size")
    physical = physical if isinstance(physical, int) and physical > 0 else 4096
    done: dict[tuple, dict[str, Any]] = {}
    result.evidence = {"clipping_mode": mode, "confidence": CONFIDENCE, "clients": {}}
    for cid in run.client_ids:
        ledger = run.ledgers.get(cid)
        history = ledger_history(ledger) if isinstance(ledger, dict) else None
        identity = (ledger or {}).get("identity") or {}
        entries = (ledger or {}).get("entries") or []
        clip, delta = identity.get("clip"), identity.get("delta")
        if not history or not isinstance(clip, float) or not isinstance(delta, float):
            result.error(f"{cid}: no usable privacy ledger: nothing to audit")
            continue
        claimed = reported_epsilon(entries[-1])
        if claimed is None:
            result.error(f"{cid}: the ledger's ε is not a number")
            continue
        key = (tuple(history), clip, delta)
        if key not in done:
            done[key] = audit_history(
                history,
                clip=clip,
                delta=delta,
                canaries=canaries,
                seed=seed,
                mode=mode,
                physical_batch_size=physical,
            )
        outcome = {**done[key], "claimed_epsilon": claimed}
        result.evidence["clients"][cid] = outcome
        judge_client(result, cid, outcome, claimed=claimed, canaries=canaries, subject=SUBJECT,
                     tails=(". The installed DP mechanism leaks more than it accounts",
                            ". More canaries raise the ceiling",
                            ". A test of the installed mechanism, not of this run"))  # fmt: skip
    return result


def judge_client(
    result: CheckResult,
    cid: str,
    outcome: dict[str, Any],
    *,
    claimed: float,
    canaries: int,
    subject: str,
    tails: tuple[str, str, str],
) -> None:
    """One client's verdict (``outcome["outcome"]``), as a finding that names both bounds;
    ``tails`` end the FAIL, INCONCLUSIVE and PASS findings (what the verdict is about)."""
    word, finding = verdict_finding(outcome, claimed=claimed, canaries=canaries, subject=subject)
    outcome["outcome"] = word.lower()
    text = f"{cid}: {finding}"
    fail, inconclusive, passed = tails
    if word == "FAIL":
        result.fail(text + fail)
    elif word == "INCONCLUSIVE":
        result.inconclusive(text + inconclusive, code="above-canary-ceiling")
    else:
        result.note(text + passed)


def installed_versions() -> dict[str, str]:
    import opacus
    import torch

    import secure_fedsa

    return {
        "opacus": opacus.__version__,
        "torch": torch.__version__,
        "secure_fedsa": secure_fedsa.__version__,
    }


def _check_versions(run: RunEvidence, result: CheckResult) -> None:
    """Warn when the mechanism tested here is not the one that made the run."""
    installed = installed_versions()
    result.evidence["installed_versions"] = installed
    differing = set()
    for cid in run.client_ids:
        recorded = ((run.ledgers.get(cid) or {}).get("identity") or {}).get("versions")
        if not isinstance(recorded, dict):
            continue
        for name, version in installed.items():
            if recorded.get(name) != version:
                differing.add(f"{name} {recorded.get(name)} in the run, {version} here")
    if differing:
        result.warn(
            "the mechanism tested is not the one that made the run: "
            + "; ".join(sorted(differing))
            + ". Run the test with the run's versions installed",
            code="versions-differ",
        )
