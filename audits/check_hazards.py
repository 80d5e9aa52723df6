"""Check (P4): the ways a DP guarantee is silently voided or made useless.

Protections switched off, sampling that is not Poisson, trainable parameters outside DP, clients
too small for record-level DP. (Where the noise came from is checked with the ledger, in
:mod:`audits.check_ledger`.)
"""

from __future__ import annotations

import math
from typing import Any

from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "dp-hazards"
STATEMENT = (
    "Every round ran with differential privacy and encryption; batches were Poisson-sampled "
    "at the rate the accountant "
    "used; DP-SGD covered every trainable parameter; every client has enough training records "
    "for record-level DP to leave a usable model."
)
MIN_RECORDS = 1000
# |z| above this for the total number of sampled records is not Poisson sampling at rate q.
POISSON_Z_LIMIT = 6.0


def check_hazards(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    for what in run.protections_off():
        result.fail(f"{what}: config.json turns it off for every round")
    if run.cfg("release_evaluation") is True:
        result.warn(
            "evaluation released: config.json releases each client's test accuracy into the "
            "run's shared files; it is not differentially private",
            code="evaluation-released",
        )
    result.evidence["clients"] = {}
    for cid in run.client_ids:
        result.evidence["clients"][cid] = _check_client(run, cid, result)
    return result


def _check_client(run: RunEvidence, cid: str, result: CheckResult) -> dict[str, Any]:
    evidence: dict[str, Any] = {}
    n = run.train_size(cid)
    evidence["train_records"] = n
    if n is None:
        result.error(f"{cid}: setup.json does not give its number of training records")
    elif n < MIN_RECORDS:
        result.warn(
            f"{cid}: only {n} training records (< {MIN_RECORDS}): record-level DP will likely "
            "drown the signal",
            code="small-dataset",
        )
    if run.cfg("dp") is not True:
        return evidence
    plan = ((run.setup or {}).get("privacy") or {}).get(cid)
    if not isinstance(plan, dict):
        result.error(f"{cid}: setup.json has no privacy plan for this client")
        return evidence
    hazards = plan.get("hazards") if isinstance(plan.get("hazards"), list) else []
    evidence["recorded_hazards"] = [h.get("code") for h in hazards if isinstance(h, dict)]
    for hazard in hazards:
        if isinstance(hazard, dict) and hazard.get("severity") == "error":
            result.fail(f"{cid}: {hazard.get('code')}: {hazard.get('message')}")
        elif isinstance(hazard, dict) and hazard.get("code") == "uncovered-parameters":
            result.fail(f"{cid}: {hazard.get('message')}")
    _check_sampling(run, cid, n, plan, result, evidence)
    return evidence


def poisson_z(examples: int, n: int, q: float, steps: int) -> float:
    """z-score of the records sampled in ``steps`` Poisson(q) steps over n records (pure)."""
    mean = n * q * steps
    sd = math.sqrt(n * q * (1 - q) * steps)
    if sd == 0:
        return 0.0 if examples == mean else math.inf
    return (examples - mean) / sd


def _check_sampling(
    run: RunEvidence, cid: str, n: int | None, plan: dict, result: CheckResult, evidence: dict
) -> None:
    q, trained = plan.get("sample_rate"), run.trained_rounds(cid) or {}
    rounds = [e for e in trained.values() if isinstance(e.get("examples"), int)]
    if not isinstance(q, float) or n is None:
        result.error(f"{cid}: cannot test the sampling (rate or size missing)")
        return
    if not rounds:
        # the normal case: how many records the Poisson batches drew is a private statistic
        evidence.update(sample_rate=q, sampled_records="private (kept by the client)")
        result.note(
            f"{cid}: the number of records each Poisson batch drew is not in the shared files "
            "(the DP analysis assumes it stays hidden); the client checks its sampler's rate "
            "against the accountant's before the first noisy step"
        )
        return
    examples = sum(e["examples"] for e in rounds)
    steps = sum(e.get("steps") or 0 for e in rounds)
    z = poisson_z(examples, n, q, steps)
    batch = run.cfg("batch_size")
    fixed = len(rounds) >= 2 and all(e["examples"] == batch * e.get("steps", 0) for e in rounds)
    evidence.update(sample_rate=q, sampled_records=examples, steps=steps, poisson_z=round(z, 2))
    if abs(z) > POISSON_Z_LIMIT:
        result.fail(
            f"{cid}: {examples} records sampled in {steps} steps; Poisson sampling at q = {q:.4g} "
            f"over {n} records expects {n * q * steps:.0f} (z = {z:.1f})"
        )
    elif fixed and n * q * (1 - q) > 1:
        result.warn(
            f"{cid}: every round sampled exactly batch_size × steps records: fixed-size "
            "batches rather than Poisson sampling?",
            code="fixed-size-batches",
        )
