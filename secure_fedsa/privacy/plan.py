"""Turn a configuration and a client's data size into that client's DP settings, before training.

With a budget (``epsilon``), the noise multiplier is calibrated from the planned rounds, local
steps and sampling rate so that the last planned round ends at or just under the budget. With a
noise multiplier given directly, ε is only reported as it grows; given together with a budget,
the plan says how many rounds the budget lasts.

On resume the plan starts from the ledger's history (``prior``): the σ the ledger was planned
with is kept if the remaining rounds still fit the budget at that σ, and otherwise σ for the
remaining rounds is calibrated against the history, never from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.accounting import DPEvent, calibrate_noise_multiplier, epsilon
from secure_fedsa.privacy.hazards import Hazard, check_dp_setup


@dataclass(frozen=True)
class PrivacyPlan:
    client_id: str
    dataset_size: int
    sample_rate: float
    noise_multiplier: float  # σ for the rounds still to train
    planned_steps: int  # steps of the whole federation (history included)
    planned_epsilon: float  # ε after every planned step
    hazards: tuple[Hazard, ...]
    prior_steps: int = 0  # steps already in the ledger
    rounds_within_budget: int | None = None  # rounds still trainable; None: all planned


def sample_rate(batch_size: int, dataset_size: int) -> float:
    """Poisson rate q = expected batch / n (capped at 1)."""
    return min(1.0, batch_size / dataset_size)


def rounds_within(
    prior: Sequence[DPEvent],
    event: DPEvent,
    rounds: int,
    *,
    budget: float,
    delta: float,
    accountant: str,
) -> int:
    """How many of ``rounds`` further rounds of ``event`` fit ``budget`` after ``prior`` (pure)."""

    def fits(r: int) -> bool:
        if r == 0:
            return True
        more = DPEvent(
            noise_multiplier=event.noise_multiplier,
            sample_rate=event.sample_rate,
            steps=event.steps * r,
        )
        return epsilon((*prior, more), delta=delta, accountant=accountant) <= budget

    lo, hi = 0, rounds  # fits(lo) holds; find the largest r in [lo, hi] that fits
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def plan_privacy(
    config: RunConfig,
    *,
    client_id: str,
    dataset_size: int,
    prior: tuple[DPEvent, ...] = (),
    rounds_done: int = 0,
    planned_sigma: float | None = None,
    retrying: bool = False,
    rounds_left: int | None = None,
) -> PrivacyPlan:
    """Calibrate σ for this client and check the DP hazards; raise PrivacyError on errors.

    ``prior`` is the ledger's history (empty for a new run; a round retried after a crash
    appears in it twice), ``rounds_done`` the rounds whose training the client kept, and
    ``planned_sigma`` the σ the ledger was created with; with a history, σ is kept while the
    remaining rounds fit the budget at that σ, and is otherwise recalibrated against it.

    When no σ makes the remaining rounds fit and the client is ``retrying`` a round that was
    charged but whose result was lost in a crash, the planned σ is kept and the plan warns that
    the client stops early (its budget is spent). Otherwise (more rounds than the budget allows,
    e.g. an extended run) the plan is refused.

    ``rounds_left`` is how many rounds the client will still train: every round after
    ``rounds_done`` by default, fewer when the run samples clients per round and the client is
    drawn in only some of them (secure_fedsa/sampling.py: the draw is public and fixed in
    advance, so σ is calibrated for exactly the rounds the client trains).
    """
    q = sample_rate(config.batch_size, dataset_size)
    spent = sum(e.steps for e in prior)
    if rounds_left is None:
        rounds_left = config.rounds - rounds_done
    rounds_left = max(rounds_left, 0)
    remaining = rounds_left * config.local_steps
    total = spent + remaining
    steps = max(remaining, 1)
    budget = config.epsilon

    def cost(sigma: float) -> float:
        event = DPEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
        return epsilon((*prior, event), delta=config.delta, accountant=config.accountant)

    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    elif planned_sigma is not None and (rounds_left == 0 or cost(planned_sigma) <= budget):
        sigma = planned_sigma
    else:
        try:
            sigma = calibrate_noise_multiplier(
                target_epsilon=budget,
                delta=config.delta,
                sample_rate=q,
                steps=steps,
                accountant=config.accountant,
                prior_events=prior,
            )
        except PrivacyError as exc:
            if not prior:
                raise
            if not retrying or planned_sigma is None:
                raise PrivacyError(
                    f"{client_id}: {rounds_left} more round(s) do not fit the ledger's budget "
                    f"ε = {budget:g}: {exc}. A resumed run can only go on within the budget it "
                    "was started with"
                ) from None
            sigma = planned_sigma  # the client stops when its budget is spent (warned below)
    planned_eps = cost(sigma)
    hazards = check_dp_setup(
        dataset_size=dataset_size,
        batch_size=config.batch_size,
        sample_rate=q,
        delta=config.delta,
        noise_multiplier=sigma,
    )
    errors = [h for h in hazards if h.severity == "error"]
    if errors:
        raise PrivacyError(f"{client_id}: {errors[0].message}")
    within = None
    if budget is not None and planned_eps > budget and remaining > 0:
        event = DPEvent(noise_multiplier=sigma, sample_rate=q, steps=config.local_steps)
        within = rounds_within(
            prior,
            event,
            rounds_left,
            budget=budget,
            delta=config.delta,
            accountant=config.accountant,
        )
        hazards.append(
            Hazard(
                "budget-short",
                "warn",
                f"σ = {sigma:.4g} spends ε = {planned_eps:.3g} over the planned rounds, above "
                f"the budget ε = {budget:g}: this client trains {within} of the "
                f"{rounds_left} remaining round(s), then stops (give a larger σ, a larger "
                "budget or fewer rounds to train them all)",
            )
        )
    return PrivacyPlan(
        client_id=client_id,
        dataset_size=dataset_size,
        sample_rate=q,
        noise_multiplier=sigma,
        planned_steps=total,
        planned_epsilon=planned_eps,
        hazards=tuple(hazards),
        prior_steps=spent,
        rounds_within_budget=within,
    )
