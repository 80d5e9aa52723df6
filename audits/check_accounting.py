"""Check (P4, P5): the ε each ledger reports is what its DP events cost.

The ledger's events are re-accounted with accountants other than the one the run used (a PRV
run is checked with Google's PLD and with RDP; an RDP run with PLD and PRV), the steps in the
ledger are matched against the steps metrics.jsonl says were executed, and δ is checked against
1/n for each client's number of training records.
"""

from __future__ import annotations

import math
from typing import Any

from audits.accountants import agrees, pld_epsilon, prv_epsilon, rdp_epsilon
from audits.evidence import LEDGER_FORMAT, LEDGER_VERSION, RunEvidence
from audits.result import CheckResult

NAME = "accounting"
STATEMENT = (
    "For every client, ε re-computed from its privacy ledger's events with an independent "
    "accountant matches the ε the ledger reports; the ledger's rounds and steps equal the "
    "rounds and steps metrics.jsonl says were executed; δ < 1/n for the client's n training "
    "records; and no client exceeded the budget."
)
# PRV and PLD are both tight numerical accountants: they agree to about 0.01 at δ = 1e-5.
TIGHT_ABS, TIGHT_REL = 0.05, 0.02
# RDP is an upper bound, 8-20 % above the tight value at these settings; more is suspicious.
RDP_MAX_RATIO, RDP_MAX_EXTRA = 1.5, 0.5
SAME_ACCOUNTANT_REL = 1e-3


def check_accounting(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    if run.cfg("dp") is not True:
        result.fail("no differential privacy: config.json turns DP off; there is no ε to check")
        return result
    result.evidence["clients"] = {}
    for cid in run.client_ids:
        result.evidence["clients"][cid] = _check_client(run, cid, result)
    return result


def ledger_history(ledger: dict[str, Any]) -> list[tuple[float, float, int]] | None:
    """(σ, q, steps) per entry, or None if any entry is malformed."""
    history: list[tuple[float, float, int]] = []
    entries = ledger.get("entries")
    if not isinstance(entries, list):
        return None
    for entry in entries:
        try:
            sigma, q, steps = entry["noise_multiplier"], entry["sample_rate"], entry["steps"]
        except (TypeError, KeyError):
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (sigma, q)):
            return None
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            return None
        if not (sigma >= 0 and 0 < q <= 1):
            return None
        history.append((float(sigma), float(q), steps))
    return history


def reported_epsilon(entry: dict[str, Any]) -> float | None:
    value = entry.get("epsilon")
    if value == "inf":
        return math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _check_client(run: RunEvidence, cid: str, result: CheckResult) -> dict[str, Any]:
    ledger = run.ledgers.get(cid)
    if ledger is None:
        problem = run.problems.get(f"clients/{cid}/privacy_ledger.json", "missing")
        result.fail(f"{cid}: privacy ledger {problem}; the privacy it spent cannot be verified")
        return {"ledger": problem}
    if ledger.get("format") != LEDGER_FORMAT or ledger.get("format_version") != LEDGER_VERSION:
        result.fail(
            f"{cid}: ledger format {ledger.get('format')!r} version "
            f"{ledger.get('format_version')!r}; this audit reads {LEDGER_FORMAT} v{LEDGER_VERSION}"
        )
        return {"ledger": "unknown format"}
    identity = ledger.get("identity") if isinstance(ledger.get("identity"), dict) else {}
    entries = ledger.get("entries") if isinstance(ledger.get("entries"), list) else []
    history = ledger_history(ledger)
    delta = identity.get("delta")
    accountant = identity.get("accountant")
    if history is None or not isinstance(delta, float) or not 0 < delta < 1:
        result.fail(f"{cid}: ledger entries or δ are malformed")
        return {"ledger": "malformed"}
    evidence: dict[str, Any] = {
        "accountant": accountant,
        "delta": delta,
        "rounds": [e.get("round") for e in entries],
        "steps": sum(s for _, _, s in history),
        "noise_multipliers": sorted({s for s, _, _ in history}),
        "sample_rates": sorted({q for _, q, _ in history}),
        "epsilon_per_round": [reported_epsilon(e) for e in entries],
        "versions": identity.get("versions"),
    }
    _check_identity(run, cid, identity, entries, result)
    _check_steps(run, cid, entries, result)
    _check_delta(run, cid, identity, result, evidence)
    if entries:
        reported = reported_epsilon(entries[-1])
        if reported is None:
            result.fail(f"{cid}: the ledger's last ε is not a number")
        else:
            evidence.update(_recompute(cid, history, delta, accountant, reported, result))
            _check_prefixes(cid, history, entries, delta, accountant, result, evidence)
            budget = run.cfg("epsilon")
            if isinstance(budget, (int, float)) and reported > budget + 1e-9:
                result.fail(f"{cid}: reported ε = {reported:.4g} exceeds the budget ε = {budget}")
    return evidence


def _check_identity(
    run: RunEvidence, cid: str, identity: dict, entries: list, result: CheckResult
) -> None:
    if identity.get("client_id") != cid:
        result.fail(f"{cid}: ledger belongs to client {identity.get('client_id')!r}")
    for key, config_key in (("delta", "delta"), ("clip", "clip"), ("accountant", "accountant")):
        if identity.get(key) != run.cfg(config_key):
            result.fail(
                f"{cid}: ledger {key} = {identity.get(key)!r}, config.json says "
                f"{run.cfg(config_key)!r}"
            )
    previous_round, previous_eps = 0, 0.0
    for entry in entries:
        number, eps = entry.get("round"), reported_epsilon(entry)
        # a round trained again after a crash repeats its number (charged twice)
        if not isinstance(number, int) or number < max(previous_round, 1):
            result.fail(f"{cid}: ledger rounds go back at {number!r}")
            break
        if eps is None or eps < previous_eps:
            result.fail(f"{cid}: ledger ε decreases or is missing at round {number}")
            break
        if entry.get("accountant") != identity.get("accountant"):
            result.fail(f"{cid}: round {number} accounted with {entry.get('accountant')!r}")
        if entry.get("clip") != identity.get("clip"):
            result.fail(f"{cid}: round {number} clipped at {entry.get('clip')!r}")
        previous_round, previous_eps = number, eps


def _check_steps(run: RunEvidence, cid: str, entries: list, result: CheckResult) -> None:
    trained = run.trained_rounds(cid)
    if trained is None:
        result.error(f"{cid}: metrics.jsonl unreadable; the steps executed are unknown")
        return
    ledger_steps: dict[Any, list[Any]] = {}
    for e in entries:
        ledger_steps.setdefault(e.get("round"), []).append(e.get("steps"))
    for number in sorted(set(trained) | set(ledger_steps), key=lambda r: (r is None, r)):
        executed = (trained.get(number) or {}).get("steps")
        if number not in ledger_steps:
            result.fail(f"{cid}: round {number} was trained but is not in the privacy ledger")
        elif number not in trained and _after_last_round(run, number):
            result.warn(
                f"{cid}: the ledger records round {number}, after the last round in "
                "metrics.jsonl (an interrupted round; its privacy is counted)",
                code="interrupted-round",
            )
        elif number not in trained:
            result.fail(f"{cid}: the ledger records round {number}, which metrics do not show")
        elif any(steps != executed for steps in ledger_steps[number]):
            charged = " + ".join(str(steps) for steps in ledger_steps[number])
            result.fail(
                f"{cid}: round {number}: the ledger accounts {charged} steps, "
                f"metrics.jsonl shows {executed} executed"
            )


def _after_last_round(run: RunEvidence, number: object) -> bool:
    last = max(
        (r.get("round", 0) for r in run.metrics or [] if isinstance(r.get("round"), int)), default=0
    )
    return isinstance(number, int) and number > last


def _check_delta(
    run: RunEvidence, cid: str, identity: dict, result: CheckResult, evidence: dict
) -> None:
    n, delta = identity.get("dataset_size"), identity.get("delta")
    setup_n = run.train_size(cid)
    evidence.update(dataset_size=n, setup_train_size=setup_n)
    if not isinstance(n, int) or n <= 0:
        result.fail(f"{cid}: the ledger has no valid dataset size")
        return
    if setup_n is None:
        result.error(f"{cid}: setup.json does not give the client's training-set size")
    elif setup_n != n:
        result.fail(f"{cid}: ledger dataset size {n} differs from setup.json's {setup_n}")
    if not delta < 1 / n:
        result.fail(f"{cid}: δ = {delta:g} is not below 1/n = 1/{n} = {1 / n:.3g}")
    batch = run.cfg("batch_size")
    if isinstance(batch, int) and batch > 0:
        nominal = min(1.0, batch / n)
        rates = evidence.get("sample_rates") or []
        if any(abs(q - nominal) > 0.01 * nominal for q in rates):
            result.fail(
                f"{cid}: sampling rate(s) {rates} differ from batch/n = {batch}/{n}: the ε "
                "does not describe the training"
            )


def _recompute(
    cid: str,
    history: list,
    delta: float,
    accountant: Any,
    reported: float,
    result: CheckResult,
) -> dict[str, Any]:
    """Re-account the ledger's events; ``epsilon_matches`` says whether the reported ε holds."""
    pld = pld_epsilon(history, delta)
    out: dict[str, Any] = {"reported_epsilon": reported, "pld_epsilon": pld}
    problems: list[str] = []
    if math.isinf(reported):
        problems.append(f"{cid}: reported ε is infinite: no finite privacy guarantee")
    elif accountant == "prv":
        rdp = rdp_epsilon(history, delta)
        out["rdp_epsilon"] = rdp
        if not agrees(reported, pld, abs_tol=TIGHT_ABS, rel_tol=TIGHT_REL):
            problems.append(
                f"{cid}: reported ε = {reported:.4f} (PRV) disagrees with ε = {pld:.4f} "
                "re-computed with Google's PLD accountant"
            )
        if rdp < reported * (1 - TIGHT_REL) - 0.01:
            problems.append(f"{cid}: reported ε = {reported:.4f} exceeds the RDP bound {rdp:.4f}")
        elif rdp > RDP_MAX_RATIO * reported + RDP_MAX_EXTRA:
            problems.append(f"{cid}: RDP bound {rdp:.4f} is far above reported ε = {reported:.4f}")
    elif accountant == "rdp":
        prv = prv_epsilon(history, delta)
        rdp = rdp_epsilon(history, delta)
        out.update(prv_epsilon=prv, rdp_epsilon=rdp)
        tight = pld if math.isfinite(pld) else prv
        if not agrees(reported, rdp, abs_tol=1e-3, rel_tol=SAME_ACCOUNTANT_REL):
            problems.append(f"{cid}: reported ε = {reported:.4f} is not the RDP value {rdp:.4f}")
        if reported < tight * (1 - TIGHT_REL) - 0.01:
            problems.append(
                f"{cid}: reported RDP ε = {reported:.4f} is below the PLD value {tight:.4f}"
            )
        elif reported > RDP_MAX_RATIO * tight + RDP_MAX_EXTRA:
            problems.append(f"{cid}: reported ε = {reported:.4f} is far above PLD's {tight:.4f}")
    else:
        result.error(f"{cid}: unknown accountant {accountant!r}; compared with PLD only")
        if not agrees(reported, pld, abs_tol=TIGHT_ABS, rel_tol=TIGHT_REL):
            problems.append(f"{cid}: reported ε = {reported:.4f} disagrees with PLD's {pld:.4f}")
    for problem in problems:
        result.fail(problem)
    out["epsilon_matches"] = not problems and accountant in ("prv", "rdp")
    return out


def _check_prefixes(
    cid: str,
    history: list,
    entries: list,
    delta: float,
    accountant: Any,
    result: CheckResult,
    evidence: dict,
) -> None:
    """Each round's cumulative ε is at most the (cheap) RDP bound of the events up to it."""
    bounds = []
    for index, entry in enumerate(entries):
        bound = rdp_epsilon(history[: index + 1], delta)
        bounds.append(bound)
        reported = reported_epsilon(entry)
        if reported is None:
            continue
        too_high = reported > bound * (1 + SAME_ACCOUNTANT_REL) + 1e-3
        too_low = accountant == "rdp" and reported < bound * (1 - SAME_ACCOUNTANT_REL) - 1e-3
        if too_high or too_low:
            result.fail(
                f"{cid}: round {entry.get('round')}: reported ε = {reported:.4f} is inconsistent "
                f"with the RDP bound {bound:.4f} of the events up to it"
            )
    evidence["rdp_epsilon_per_round"] = bounds
