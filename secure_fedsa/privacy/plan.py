"""Turn a configuration and a client's data size into that client's DP settings, before training.

With a budget (``epsilon``), the noise multiplier is calibrated from the planned rounds, local
steps and sampling rate so that the last planned round ends at or just under the budget. With a
noise multiplier given directly, ε is only reported as it grows.
"""

from __future__ import annotations

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
    noise_multiplier: float
    planned_steps: int
    planned_epsilon: float
    hazards: tuple[Hazard, ...]


def sample_rate(batch_size: int, dataset_size: int) -> float:
    """Poisson rate q = expected batch / n (capped at 1)."""
    return min(1.0, batch_size / dataset_size)


def plan_privacy(
    config: RunConfig,
    *,
    client_id: str,
    dataset_size: int,
    trainable_names: list[str],
    prior: tuple[DPEvent, ...] = (),
) -> PrivacyPlan:
    """Calibrate σ for this client and check the DP hazards; raise PrivacyError on errors."""
    q = sample_rate(config.batch_size, dataset_size)
    steps = config.rounds * config.local_steps
    remaining = max(steps - sum(e.steps for e in prior), 0)
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        sigma = calibrate_noise_multiplier(
            target_epsilon=config.epsilon,
            delta=config.delta,
            sample_rate=q,
            steps=max(remaining, 1),
            accountant=config.accountant,
            prior_events=prior,
        )
    planned = (*prior, DPEvent(noise_multiplier=sigma, sample_rate=q, steps=max(remaining, 1)))
    planned_eps = epsilon(planned, delta=config.delta, accountant=config.accountant)
    hazards = check_dp_setup(
        dataset_size=dataset_size,
        batch_size=config.batch_size,
        sample_rate=q,
        delta=config.delta,
        noise_multiplier=sigma,
        secure_mode=config.secure_mode,
        poisson=True,
        grad_accumulation_steps=1,
        trainable_names=trainable_names,
        covered_names=trainable_names,
    )
    errors = [h for h in hazards if h.severity == "error"]
    if errors:
        raise PrivacyError(f"{client_id}: {errors[0].message}")
    return PrivacyPlan(
        client_id=client_id,
        dataset_size=dataset_size,
        sample_rate=q,
        noise_multiplier=sigma,
        planned_steps=steps,
        planned_epsilon=planned_eps,
        hazards=tuple(hazards),
    )
