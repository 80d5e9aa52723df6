"""Which clients take part in a round (``clients_per_round``), shared by both transports.

Each round, K of the candidates are drawn uniformly without replacement from a generator seeded
by the run's ``seed`` and the round number alone: public, reproducible (a resumed run draws the
same clients for the same round), and the same function in the in-process federation (over its
clients, in their order) and the Flower ServerApp (over the connected node ids, sorted).

Client sampling is **not** privacy amplification here: the draw is public (anyone with the
configuration can recompute it) and each client's ε is accounted over the rounds it actually
trains, as if it had known in advance (docs/privacy.md, "Clients per round").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

# keeps the draw apart from every other use of the run's seed
_STREAM = 0x5EED_C11E


def sampled(candidates: Sequence[T], k: int | None, *, seed: int, round_number: int) -> list[T]:
    """The ``k`` of ``candidates`` that take part in ``round_number``, in their given order
    (all of them when ``k`` is None or at least their number). Pure."""
    items = list(candidates)
    if k is None or k >= len(items):
        return items
    if k < 1:
        raise ValueError(f"clients per round must be at least 1, got {k}")
    rng = np.random.default_rng(np.random.SeedSequence([_STREAM, int(seed), int(round_number)]))
    chosen = set(rng.choice(len(items), size=k, replace=False).tolist())
    return [item for index, item in enumerate(items) if index in chosen]


def rounds_sampled(
    candidates: Sequence[T], candidate: T, k: int | None, *, seed: int, rounds: range
) -> int:
    """In how many of ``rounds`` ``candidate`` is drawn (pure)."""
    return sum(
        candidate in sampled(candidates, k, seed=seed, round_number=number) for number in rounds
    )
