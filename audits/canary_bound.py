"""The ε lower bound of the one-run audit (Steinke, Nasr & Jagielski 2023), as pure functions.

m canaries are each included in training independently with probability 1/2. After training, an
auditor guesses "in" or "out" for r of them (abstaining on the rest) and gets v right. If the
training is (ε, δ)-DP, their Theorem 5.2 bounds the chance of v or more correct guesses:

    P[correct ≥ v] ≤ β + 2·m·δ·α,
    β = P[W ≥ v],  α = max_{1 ≤ i ≤ v} P[v − i ≤ W < v] / i,  W ~ Binomial(r, e^ε / (1 + e^ε)),

(β alone is Theorem 3.1, the pure ε-DP case). The lower bound at confidence 1 − p is the
largest ε for which this p-value is still below p: any mechanism that is (ε, δ)-DP for a smaller
ε would have produced so many correct guesses with probability less than p. It is found by
bisection, as in the paper's Algorithm (Appendix D).

Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023. The
guesses, the other analysis (:mod:`audits.one_run_fdp`) and the verdict are in
:mod:`audits.canary_audit`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[≥ v correct of r guesses] for an (ε, δ)-DP mechanism with m canaries."""
    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1 / (1 + math.exp(-epsilon))  # accuracy of ε-DP randomized response
    beta = float(stats.binom.sf(v - 1, r, q))  # P[W >= v]
    if v == 0:
        return min(beta, 1.0)
    # window_i = P[v - i <= W < v] for i = 1..v, summed in that order
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float, confidence: float = 0.95, iterations: int = 40
) -> float:
    """Largest ε such that (ε, δ)-DP is rejected at ``confidence`` (0 when nothing is rejected)."""
    p = 1 - confidence
    if not 0 < p < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    low, high = 0.0, 1.0  # p_value(low) < p <= p_value(high)
    while p_value(m, r, v, high, delta) < p:
        low, high = high, high * 2
        if high > 1e3:
            return low
    for _ in range(iterations):
        middle = (low + high) / 2
        if p_value(m, r, v, middle, delta) < p:
            low = middle
        else:
            high = middle
    return low
