"""Learning-rate schedules over a whole federation, as pure functions.

A schedule gives every local step of every round a factor in (0, 1] that multiplies the run's
``lr``. The step's position is counted over the whole federation (``rounds * local_steps``
steps), so a client that resumes a round, or a Flower client that trains round 3 in a fresh
process, uses the same factors as one that ran from the start. Factors never exceed 1, so the
per-round movement bound of the aggregate check (``lr * sum r_t``, docs/crypto.md) holds for
every schedule.

- ``constant``: 1 everywhere (the learning rate of every step is ``lr``).
- ``linear``: decays linearly from 1 at the first step towards 0, ``1 - g / T`` at global step
  ``g`` of ``T``; the last step gets ``1 / T``.
- ``cosine``: half a cosine from 1 towards 0, ``(1 + cos(pi g / T)) / 2``.
"""

from __future__ import annotations

import math

from secure_fedsa.config import LR_SCHEDULES


def step_factor(schedule: str, step: int, total: int) -> float:
    """The lr factor of global step ``step`` (0-based) of ``total`` steps (pure)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(
            f"unknown lr schedule {schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"
        )
    if not 0 <= step < total:
        raise ValueError(f"step {step} is outside a schedule of {total} steps")
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - step / total
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def round_factors(
    schedule: str, round_number: int, *, rounds: int, local_steps: int
) -> list[float]:
    """The lr factors of the ``local_steps`` steps of round ``round_number`` (1-based) of a
    federation of ``rounds`` rounds (pure)."""
    if not 1 <= round_number <= rounds:
        raise ValueError(f"round {round_number} is outside a federation of {rounds} rounds")
    start = (round_number - 1) * local_steps
    total = rounds * local_steps
    return [step_factor(schedule, start + i, total) for i in range(local_steps)]
