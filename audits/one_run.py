"""The one-run analysis of the run-level canary audit: (scores, bits) -> an ε lower bound.

:func:`one_run_bound` is the one place the audit turns canary scores and their secret bits into
a bound; :mod:`audits.check_run_canary` calls nothing else. Today it is the bound of Steinke,
Nasr & Jagielski ("Privacy Auditing with One (1) Training Run", NeurIPS 2023, Theorem 5.2, in
:mod:`audits.canary_bound`): the auditor guesses bit 1 for the k highest scores and bit 0 for the
k lowest, for each k in :data:`audits.canary_bound.K_FRACTIONS` (the confidence split over them),
and keeps the best bound. It uses only which guesses were right, and its δ term caps what any
number of canaries can certify at about ε ≈ 6.1 (δ = 1e-5): no run claiming ε = 8 can fail it.
The f-DP analysis of Mahloujifar, Melis & Chaudhuri ("Auditing f-Differential Privacy in One
Run", ICML 2025), which uses the scores themselves, is to replace it (issue 34, item 2: a pure
function of the same scores and bits, ``audits/one_run_fdp.py``): change :data:`BOUNDS`' default
and nothing else.

Pure functions: no file, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from audits.canary_bound import (
    CONFIDENCE,
    K_FRACTIONS,
    certifiable_epsilon,
    count_correct,
    epsilon_lower_bound,
    guesses,
)


@dataclass(frozen=True)
class OneRunBound:
    """What a one-run analysis concluded from m canaries."""

    method: str  # which analysis (and paper) produced it
    epsilon_lower_bound: float  # ε below which (ε, δ)-DP is rejected at ``confidence``
    max_certifiable_epsilon: float  # the largest lower bound these m canaries could give
    confidence: float
    details: dict[str, Any] = field(default_factory=dict)


def check_inputs(scores: Sequence[float], bits: Sequence[bool], delta: float) -> None:
    """Raise ValueError unless there is one finite score per bit, at least one canary, and
    0 < δ < 1."""
    if len(scores) != len(bits) or not scores:
        raise ValueError(f"need one score per bit, got {len(scores)} scores and {len(bits)} bits")
    if not all(isinstance(b, bool) for b in bits):
        raise ValueError("bits must be booleans")
    if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
        raise ValueError("scores must be finite numbers")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def steinke_bound(scores: Sequence[float], bits: Sequence[bool], *, delta: float) -> OneRunBound:
    """Steinke, Nasr & Jagielski (2023), Theorem 5.2, with the top/bottom-k guesses of
    :data:`K_FRACTIONS` (Bonferroni over the grid), at 95 % confidence."""
    check_inputs(scores, bits, delta)
    m = len(bits)
    per_k = 1 - (1 - CONFIDENCE) / len(K_FRACTIONS)
    best, tried = 0.0, []
    for fraction in K_FRACTIONS:
        k = max(1, int(fraction * m))
        if 2 * k > m:
            continue
        r, v = count_correct(guesses(list(scores), k, k), list(bits))
        bound = epsilon_lower_bound(m, r, v, delta=delta, confidence=per_k)
        tried.append({"k": k, "guesses": r, "correct": v, "lower_bound": bound})
        best = max(best, bound)
    return OneRunBound(
        method="Steinke, Nasr & Jagielski 2023 (Theorem 5.2)",
        epsilon_lower_bound=best,
        max_certifiable_epsilon=certifiable_epsilon(m, delta),
        confidence=CONFIDENCE,
        details={"tried": tried},
    )


Bound = Callable[..., OneRunBound]
# the analyses the audit knows, by name; DEFAULT is the one it reports
BOUNDS: dict[str, Bound] = {"steinke": steinke_bound}
DEFAULT = "steinke"


def one_run_bound(scores: Sequence[float], bits: Sequence[bool], *, delta: float) -> OneRunBound:
    """The ε lower bound the audit reports for these canary scores and bits."""
    return BOUNDS[DEFAULT](scores, bits, delta=delta)
