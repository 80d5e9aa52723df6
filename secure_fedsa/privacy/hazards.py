"""Checks of a client's DP-SGD setup that catch the ways a guarantee is silently voided or useless.

Two pure functions return lists of :class:`Hazard` and never raise for a hazard (only for
arguments that make no sense):

- :func:`check_dp_setup`, at planning time, from the configuration and the client's data size;
- :func:`check_mechanism`, at training time, from what the engine actually built and observed
  (the sampler it draws batches with, the batch size its optimizer divides by, the parameters
  that received per-sample gradients in the first backward pass). The engine calls it before the
  first noisy step of every round.

Severity ``"error"`` means the promised (ε, δ) guarantee would not hold as stated, and the caller
must refuse to train; ``"warn"`` means the guarantee holds but the run is likely to be useless or
weaker than it looks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from secure_fedsa.errors import PrivacyError

__all__ = ["Hazard", "check_dp_setup", "check_mechanism"]

Severity = Literal["warn", "error"]

# Below these, record-level DP starves a client. Measured in a 3-client FedSA run (ε = 8,
# δ = 1e-5, batch 128): clients with 279 and 1 161 training records (σ ≈ 3.1 and 1.0) never
# rose above majority-class accuracy; the one with 3 360 learned.
MIN_RECORDS = 1000
MIN_EXPECTED_BATCH = 32
MAX_USEFUL_NOISE_MULTIPLIER = 3.0
# The sampling rate the accountant uses may differ from batch_size / n by this much (relative).
SAMPLE_RATE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Hazard:
    code: str
    severity: Severity
    message: str


def _suggested_delta(dataset_size: int) -> float:
    """A power of ten at least ten times below 1/n."""
    return 10.0 ** (math.floor(math.log10(1 / dataset_size)) - 1)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate(
    dataset_size: int, batch_size: int, sample_rate: float, delta: float, noise_multiplier: float
) -> None:
    checks = [
        (
            _is_int(dataset_size) and dataset_size > 0,
            f"dataset_size must be an int > 0: {dataset_size!r}",
        ),
        (_is_int(batch_size) and batch_size > 0, f"batch_size must be an int > 0: {batch_size!r}"),
        (
            _is_num(sample_rate) and 0 < sample_rate <= 1,
            f"sample_rate must be in (0, 1]: {sample_rate!r}",
        ),
        (_is_num(delta) and 0 < delta < 1, f"delta must be in (0, 1): {delta!r}"),
        (
            _is_num(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier >= 0,
            f"noise_multiplier must be finite and >= 0: {noise_multiplier!r}",
        ),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise PrivacyError("invalid DP setup: " + "; ".join(problems))


def check_dp_setup(
    *,
    dataset_size: int,
    batch_size: int,
    sample_rate: float,
    delta: float,
    noise_multiplier: float,
) -> list[Hazard]:
    """Every hazard of this plan, errors first. Raises PrivacyError only for nonsense input."""
    _validate(dataset_size, batch_size, sample_rate, delta, noise_multiplier)
    n = dataset_size
    expected_batch = sample_rate * n
    hazards: list[Hazard] = []

    def error(code: str, message: str) -> None:
        hazards.append(Hazard(code, "error", message))

    def warn(code: str, message: str) -> None:
        hazards.append(Hazard(code, "warn", message))

    # --- errors: the stated guarantee would not hold ------------------------------------------
    if delta >= 1 / n:
        error(
            "delta-too-large",
            f"δ = {delta:g} must be below 1/n = 1/{n} = {1 / n:.3g} (at δ ≥ 1/n a mechanism that "
            f"publishes a random record is (0, δ)-DP); use --delta {_suggested_delta(n):g}",
        )
    nominal = min(1.0, batch_size / n)
    if abs(sample_rate - nominal) > SAMPLE_RATE_TOLERANCE * nominal:
        error(
            "sample-rate-mismatch",
            f"the accountant's sampling rate q = {sample_rate:.6g} differs from "
            f"batch_size / n = {batch_size}/{n} = {nominal:.6g} by more than "
            f"{SAMPLE_RATE_TOLERANCE:.0%}: the ε reported would not describe the training",
        )

    # --- warnings: the guarantee holds, the run is likely useless or weaker than it looks -------
    if n < MIN_RECORDS:
        warn(
            "small-dataset",
            f"only {n} training records (< {MIN_RECORDS}): record-level DP will likely drown "
            "the signal (clients with 279 and 1 161 records never beat the majority class at "
            "ε = 8); merge sites, raise the budget, or leave this client out",
        )
    if expected_batch < MIN_EXPECTED_BATCH:
        warn(
            "small-batch",
            f"expected batch q·n = {expected_batch:.1f} (< {MIN_EXPECTED_BATCH}): the noise "
            f"(σ·clip per step) outweighs the summed gradient; use a batch of at least "
            f"{MIN_EXPECTED_BATCH}, ideally 128 or more",
        )
    if noise_multiplier > MAX_USEFUL_NOISE_MULTIPLIER:
        warn(
            "high-noise",
            f"noise multiplier σ = {noise_multiplier:.3g} (> {MAX_USEFUL_NOISE_MULTIPLIER:g}): "
            "training is unlikely to learn; use a larger batch, fewer steps, a larger budget or "
            "more records",
        )
    return hazards


# The optimizer divides the noisy sum by its expected batch size; if that is this many times the
# expected Poisson batch, it is averaging over several sampled batches (gradient accumulation,
# Opacus' "virtual steps"). 1.5 leaves room for rounding the expected batch to an integer.
MAX_BATCH_RATIO = 1.5


def check_mechanism(
    *,
    dataset_size: int,
    accountant_rate: float,
    sampler_rate: float,
    poisson: bool,
    optimizer_expected_batch: int,
    trainable_names: Sequence[str],
    covered_names: Sequence[str] | None,
) -> list[Hazard]:
    """Hazards of the DP-SGD mechanism as built, from the engine's own objects.

    ``sampler_rate`` and ``poisson`` describe the sampler that draws the batches;
    ``optimizer_expected_batch`` is the batch size the DP optimizer divides by;
    ``covered_names`` the trainable parameters that got per-sample gradients (or, with ghost
    clipping, per-sample norms) in the first backward pass, or None before that pass.
    """
    n = dataset_size
    hazards: list[Hazard] = []

    def error(code: str, message: str) -> None:
        hazards.append(Hazard(code, "error", message))

    if not poisson:
        error(
            "not-poisson",
            "batches are not Poisson-sampled, but the accountant assumes Poisson sampling: "
            "the reported ε would not hold; use Poisson sampling",
        )
    elif not (
        _is_num(sampler_rate)
        and abs(sampler_rate - accountant_rate) <= SAMPLE_RATE_TOLERANCE * accountant_rate
    ):
        error(
            "sample-rate-mismatch",
            f"the sampler draws with rate {sampler_rate!r} but the accountant uses "
            f"q = {accountant_rate:.6g}: the ε reported would not describe the training",
        )
    per_draw = max(1.0, accountant_rate * n)
    ratio = optimizer_expected_batch / per_draw
    if ratio > MAX_BATCH_RATIO:
        error(
            "grad-accumulation",
            f"the optimizer averages over {optimizer_expected_batch} examples per step, "
            f"{ratio:.1f}× one Poisson batch (q·n = {per_draw:.1f}): gradients of several "
            "sampled batches would be accumulated into one noisy step, which changes the "
            "sampling the accountant assumes; use the physical batch size option instead, which "
            "splits one logical batch without changing its sampling",
        )
    if covered_names is not None:
        covered = set(covered_names)
        uncovered = [name for name in trainable_names if name not in covered]
        if uncovered:
            shown = ", ".join(uncovered[:5]) + (
                f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else ""
            )
            error(
                "uncovered-parameters",
                f"{len(uncovered)} trainable parameter(s) got no per-sample gradient in DP-SGD: "
                f"{shown}. DP must cover A, B and the head jointly: A's gradient depends on B, so "
                "a B (or head) trained without DP voids the guarantee on the shared A",
            )
    return hazards
