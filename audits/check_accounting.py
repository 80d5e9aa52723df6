"""Check (P4, P5): the ε each ledger reports is what its DP events cost, under the relation the
run states, and every other place that names ε or the budget agrees with the ledger.

The ledger's events are re-accounted with this audit's own replace-one computation
(:mod:`audits.replace_one`: numpy only, independent of dp_accounting, which the run used), which
gives bounds that contain the true ε; the reported ε must lie inside them. The ledger's rounds
and steps are matched against metrics.jsonl, the ε metrics.jsonl shows after each round against
the ledger's, the ledger heads the server accepted (metrics.jsonl ``ledger``) against the ledger's
entries, the budget in config.json against the ledger's, and δ against 1/n.
"""

from __future__ import annotations

import math
from typing import Any

from audits.evidence import LEDGER_FORMAT, LEDGER_VERSION, RunEvidence
from audits.replace_one import replace_one_epsilon
from audits.result import CheckResult

NAME = "accounting"
STATEMENT = (
    "For every client, ε re-computed from its privacy ledger's events under replace-one "
    "neighbours by the audit's own accountant brackets the ε the ledger reports; the ε "
    "metrics.jsonl shows after each round, the ledger heads the server accepted and the budget "
    "in config.json agree with the ledger; the ledger's rounds and steps equal those "
    "metrics.jsonl says were executed; δ < 1/n for the client's n training records; and no "
    "client exceeded the budget."
)
RELATION = "replace-one"
# slack around the independent bounds: the run's accountant (dp_accounting PLD) is itself a
# pessimistic discretisation, within about 0.01 of the true ε
SLACK_ABS, SLACK_REL = 0.02, 0.005
# per-round ε in metrics.jsonl is a copy of the ledger's (exact up to JSON float printing)
COPY_TOLERANCE = 1e-9


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
    evidence["neighbouring_relation"] = identity.get("neighbouring_relation")
    _check_identity(run, cid, identity, entries, result)
    _check_steps(run, cid, entries, result)
    _check_delta(run, cid, identity, result, evidence)
    _check_metrics_epsilon(run, cid, entries, result, evidence)
    _check_server_heads(run, cid, entries, result)
    if entries:
        reported = reported_epsilon(entries[-1])
        if reported is None:
            result.fail(f"{cid}: the ledger's last ε is not a number")
        else:
            evidence.update(_recompute(cid, history, delta, accountant, reported, result))
            _check_prefixes(cid, history, entries, delta, accountant, result, evidence)
            budget = identity.get("target_epsilon")
            if isinstance(budget, (int, float)) and reported > budget + 1e-9:
                result.fail(f"{cid}: reported ε = {reported:.4g} exceeds the budget ε = {budget}")
    else:  # never trained (e.g. never drawn with clients per round): it released nothing
        evidence.update(
            independent_epsilon_lower=0.0, independent_epsilon_upper=0.0, epsilon_matches=True
        )
    return evidence


def _check_identity(
    run: RunEvidence, cid: str, identity: dict, entries: list, result: CheckResult
) -> None:
    if identity.get("client_id") != cid:
        result.fail(f"{cid}: ledger belongs to client {identity.get('client_id')!r}")
    if identity.get("neighbouring_relation") != RELATION:
        result.fail(
            f"{cid}: the ledger states its ε under {identity.get('neighbouring_relation')!r} "
            f"neighbours, not {RELATION!r}: with n public, only replace-one means something"
        )
    for key, config_key in (
        ("delta", "delta"),
        ("clip", "clip"),
        ("accountant", "accountant"),
        ("target_epsilon", "epsilon"),
    ):
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
    out: dict[str, Any] = {"reported_epsilon": reported}
    if accountant != "pld":
        result.fail(
            f"{cid}: the ledger was accounted with {accountant!r}, not replace-one PLD: its ε is "
            "not stated in the relation a run that publishes n needs"
        )
        out["epsilon_matches"] = False
        return out
    try:
        bounds = replace_one_epsilon(history, delta)
    except ValueError as exc:
        result.error(f"{cid}: the independent re-computation could not run: {exc}")
        out["epsilon_matches"] = False
        return out
    out.update(
        independent_epsilon_lower=bounds.lower,
        independent_epsilon_upper=bounds.upper,
        independent_grid=bounds.grid,
    )
    slack = max(SLACK_ABS, SLACK_REL * reported) if math.isfinite(reported) else 0.0
    problems = []
    if math.isinf(reported):
        problems.append(f"{cid}: reported ε is infinite: no finite privacy guarantee")
    elif not bounds.contains(reported, slack=slack):
        low = "below" if reported < bounds.lower else "above"
        problems.append(
            f"{cid}: reported ε = {reported:.4f} is {low} the independent replace-one bounds "
            f"[{bounds.lower:.4f}, {bounds.upper:.4f}] of the ledger's events"
        )
    for problem in problems:
        result.fail(problem)
    out["epsilon_matches"] = not problems
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
    """Each earlier round's cumulative ε lies within the independent bounds of the events up to
    it (the last round is checked by :func:`_recompute`)."""
    if accountant != "pld":
        return
    bounds = []
    for index, entry in enumerate(entries[:-1]):
        interval = replace_one_epsilon(history[: index + 1], delta)
        bounds.append([interval.lower, interval.upper])
        reported = reported_epsilon(entry)
        if reported is None or math.isinf(reported):
            continue
        if not interval.contains(reported, slack=max(SLACK_ABS, SLACK_REL * reported)):
            result.fail(
                f"{cid}: round {entry.get('round')}: reported ε = {reported:.4f} is outside the "
                f"independent bounds [{interval.lower:.4f}, {interval.upper:.4f}] of the events "
                "up to it"
            )
    evidence["independent_bounds_per_round"] = bounds


def _check_metrics_epsilon(
    run: RunEvidence, cid: str, entries: list, result: CheckResult, evidence: dict
) -> None:
    """The ε metrics.jsonl shows after each round equals the ledger's after that round (a
    ledger rewritten after the fact no longer agrees with what the run showed as it went)."""
    by_round: dict[Any, float | None] = {}
    for entry in entries:
        by_round[entry.get("round")] = reported_epsilon(entry)
    shown = []
    for record in run.metrics or []:
        entry = ((record or {}).get("clients") or {}).get(cid)
        number = record.get("round") if isinstance(record, dict) else None
        if not isinstance(entry, dict) or not isinstance(number, int):
            continue
        value = entry.get("epsilon_spent")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        shown.append([number, value])
        # the ε after round r is that of the last ledger entry of a round <= r
        ledger_value = None
        for e in entries:
            if isinstance(e.get("round"), int) and e["round"] <= number:
                ledger_value = reported_epsilon(e)
        if ledger_value is None and value == 0:
            continue
        if ledger_value is None or abs(float(value) - ledger_value) > COPY_TOLERANCE * max(
            1.0, abs(ledger_value)
        ):
            said = (
                "has no entry up to that round"
                if ledger_value is None
                else f"says ε = {ledger_value:.4f}"
            )
            result.fail(
                f"{cid}: metrics.jsonl shows ε = {value:.4f} after round {number}, the ledger "
                f"{said}: the ledger or metrics.jsonl was changed after the run"
            )
    evidence["metrics_epsilon"] = shown


def _check_server_heads(run: RunEvidence, cid: str, entries: list, result: CheckResult) -> None:
    """Every ledger head the server accepted in an update (metrics.jsonl ``ledger``) is the
    ledger's entry at that position: a ledger rewritten or rolled back after the server saw it
    no longer contains those entries."""
    hashes = [e.get("hash") for e in entries]
    for record in run.metrics or []:
        entry = ((record or {}).get("clients") or {}).get(cid)
        head = entry.get("ledger") if isinstance(entry, dict) else None
        if not isinstance(head, dict):
            continue
        position, digest = head.get("entries"), head.get("head")
        if not isinstance(position, int) or position < 1 or position > len(hashes):
            result.fail(
                f"{cid}: the server accepted an update of round {record.get('round')} paid for "
                f"by ledger entry {position!r}, which the ledger does not have"
            )
        elif hashes[position - 1] != digest:
            result.fail(
                f"{cid}: the server accepted an update of round {record.get('round')} paid for "
                f"by ledger entry {position} with another hash: the ledger was rewritten"
            )
