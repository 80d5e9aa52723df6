"""Check (P4, empirical): a test of the DP mechanism as installed (on demand; it trains).

For each distinct DP history in the ledgers (σ, q, steps per round, and the clip), m Dirac
gradient canaries are trained, in the auditor's own process, through the DP-SGD engine of the
secure_fedsa installed there, with exactly those parameters (see :mod:`audits.canary_train`),
scored, and guessed in/out; the ε lower bound at 95 % confidence (Steinke, Nasr & Jagielski 2023,
see :mod:`audits.canary_bound`) must not exceed the ε the ledger claims.

What it tests is the mechanism (clipping, noise, Poisson sampling, and their accounting) of the
*installed* code, not the run itself: the run's own training is not replayed, and neither the data
pipeline, the model code nor the federation around it is audited. It therefore warns when the
installed versions differ from those that made the run (from the ledgers). With m canaries the
test cannot certify an ε above a ceiling; when the claimed ε is above it, a lower bound below the
claim says nothing, and the result is INCONCLUSIVE (never PASS), with ε_LB shown next to the claim.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from audits.canary_bound import (
    CONFIDENCE,
    K_FRACTIONS,
    certifiable_epsilon,
    count_correct,
    epsilon_lower_bound,
    guesses,
)
from audits.canary_train import train_canaries
from audits.check_accounting import ledger_history, reported_epsilon
from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "dp-mechanism-test"
STATEMENT = (
    "Mechanism test (not a replay of the run): an empirical lower bound on ε, from Dirac "
    "gradient canaries trained through the installed secure_fedsa DP-SGD engine with each "
    "client's recorded noise, sampling rate, clip and steps (one-run audit of Steinke, Nasr & "
    "Jagielski 2023, 95 % confidence), does not exceed the ε its ledger claims, and the claim "
    "is within what the number of canaries can certify."
)


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
    """Train canaries with ``events`` and return the best ε lower bound and how it was found."""
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
    per_k_confidence = 1 - (1 - CONFIDENCE) / len(K_FRACTIONS)
    best: dict[str, Any] = {"epsilon_lower_bound": 0.0}
    tried = []
    for fraction in K_FRACTIONS:
        k = max(1, int(fraction * canaries))
        r, v = count_correct(guesses(scores, k, k), included)
        bound = epsilon_lower_bound(canaries, r, v, delta=delta, confidence=per_k_confidence)
        tried.append({"k_in": k, "k_out": k, "guesses": r, "correct": v, "lower_bound": bound})
        if bound > best["epsilon_lower_bound"]:
            best = {"epsilon_lower_bound": bound, "guesses": r, "correct": v}
    power = certifiable_epsilon(canaries, delta)  # every guess of the largest k right
    return {
        **best,
        "canaries": canaries,
        "included": sum(included),
        "tried": tried,
        "max_certifiable_epsilon": power,
        "train_seconds": round(time.time() - started, 2),
    }


def canary_check(*, canaries: int, seed: int = 0) -> Callable[[RunEvidence], CheckResult]:
    """The canary audit as a check for :func:`audits.runner.audit_run`."""

    def check_canary(run: RunEvidence) -> CheckResult:
        return _check(run, canaries=canaries, seed=seed)

    return check_canary


def _check(run: RunEvidence, *, canaries: int, seed: int) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
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
        bound = outcome["epsilon_lower_bound"]
        ceiling = outcome["max_certifiable_epsilon"]
        if bound > claimed:
            result.fail(
                f"{cid}: empirical ε ≥ {bound:.3f} at {CONFIDENCE:.0%} confidence exceeds the "
                f"claimed ε = {claimed:.3f}: the DP mechanism leaks more than it accounts"
            )
        elif claimed > ceiling:
            outcome["outcome"] = "inconclusive"
            result.inconclusive(
                f"{cid}: claimed ε = {claimed:.3f}, empirical ε_LB = {bound:.3f}; with "
                f"{canaries} canaries this test can certify at most ε ≈ {ceiling:.2f}, below the "
                "claim, so a leak up to the claim could not be seen (more canaries raise the "
                "ceiling)",
                code="above-canary-ceiling",
            )
        else:
            outcome["outcome"] = "pass"
            result.note(
                f"{cid}: claimed ε = {claimed:.3f}, empirical ε_LB = {bound:.3f} (ceiling "
                f"≈ {ceiling:.2f} with {canaries} canaries)"
            )
    return result


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
