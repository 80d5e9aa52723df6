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
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

# the guesses the mechanism test makes: the k highest scores "in" and the k lowest "out" for each
# k in this grid (fractions of m); the confidence is split over the grid (Bonferroni), so the
# best k may be reported
CONFIDENCE = 0.95
K_FRACTIONS = (0.025, 0.05, 0.1, 0.25)


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


def guesses(scores: list[float], k_in: int, k_out: int) -> list[int]:
    """+1 (in) for the k_in highest scores, −1 (out) for the k_out lowest, 0 (abstain) else."""
    if k_in + k_out > len(scores):
        raise ValueError("more guesses than canaries")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    result = [0] * len(scores)
    for i in order[:k_out]:
        result[i] = -1
    for i in order[len(scores) - k_in :]:
        result[i] = 1
    return result


def count_correct(guess: list[int], included: list[bool]) -> tuple[int, int]:
    """(r guesses made, v correct)."""
    r = sum(1 for g in guess if g != 0)
    pairs = zip(guess, included, strict=True)
    v = sum(1 for g, s in pairs if (g == 1 and s) or (g == -1 and not s))
    return r, v


def certifiable_epsilon(m: int, delta: float) -> float:
    """The largest ε the mechanism test can back with m canaries: its lower bound when every
    guess of the largest k is right (the test's ceiling; a claim above it cannot be tested)."""
    per_k_confidence = 1 - (1 - CONFIDENCE) / len(K_FRACTIONS)
    r = 2 * max(1, int(max(K_FRACTIONS) * m))
    return epsilon_lower_bound(m, r, r, delta=delta, confidence=per_k_confidence)
