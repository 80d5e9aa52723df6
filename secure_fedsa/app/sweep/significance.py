"""Tests of paired differences over seeds, and the correction for testing many at once.

Each seed is one replicate, so a comparison has one difference per seed (``d_1 … d_n``). Two
tests ask whether those differences are centred on zero; neither assumes they are normal:

- :func:`sign_flip_p`, the **exact paired sign-flip (permutation) test**, two-sided. Under "no
  difference" every difference is as likely to have come out with the opposite sign, so each of
  the ``2^n`` sign patterns is equally likely. The p-value is the share of patterns whose
  ``|Σ ± d_i|`` is at least the observed ``|Σ d_i|`` (the observed pattern and its mirror image
  included, so ``p ≥ 2 / 2^n`` whenever some difference is not zero: 0.0625 for 5 seeds; 6 seeds
  are needed before p can fall below 0.05). For ``n ≤ 20`` every pattern is enumerated; above,
  :data:`MONTE_CARLO_DRAWS` random patterns are drawn with the fixed seed :data:`MONTE_CARLO_SEED`
  and ``p = (1 + hits) / (1 + draws)``, which never understates p. A zero difference flips to
  itself: it doubles the patterns and the hits alike, so zeros leave p unchanged, and all-zero
  differences give ``p = 1``.
- :func:`wilcoxon_p`, the **exact Wilcoxon signed-rank test**, two-sided. Zeros are dropped
  first (Wilcoxon's convention, ``zero_method="wilcox"``); none left gives ``p = 1``. Without ties
  among the remaining ``|d_i|`` the p-value is scipy's exact null distribution
  (``scipy.stats.wilcoxon(..., method="exact")``). With ties the ranks are midranks, and scipy's
  "exact" table is no longer exact; the p-value is then the exact conditional one: the sign-flip
  enumeration above applied to the signed midranks (the same Monte Carlo above 20 values).

Both tests first take the differences to :data:`DECIMALS` decimal places, as integers: an
accuracy is a fraction of a test split far smaller than ``10^12`` examples, so no real difference
is lost, and two differences that are equal on paper but not in floating point (``0.8 − 0.7``
against ``0.9 − 0.8``) count as equal, in the enumeration and in the ranks.

:func:`holm` is the **Holm–Bonferroni step-down correction** for a family of ``m`` p-values (one
table): sorted ascending, ``p_(i)`` becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``. A
comparison is called significant when its adjusted p is below :data:`ALPHA`; this keeps the
chance of calling anything in the table significant when nothing differs at most 5 %, whatever
the dependence between the comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
DECIMALS = 12
EXACT_MAX_N = 20
MONTE_CARLO_DRAWS = 100_000
MONTE_CARLO_SEED = 31
_CHUNK = 10_000
_INT_LIMIT = 2**62


def _as_integers(values: Sequence[float], decimals: int = DECIMALS) -> np.ndarray:
    """``values`` to ``decimals`` places, as exact integers (``round(v · 10^decimals)``)."""
    numbers = list(values)
    if not numbers:
        raise ValueError("a test needs at least one difference")
    out = []
    for value in numbers:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"differences must be numbers, got {value!r}") from None
        if not np.isfinite(number):
            raise ValueError(f"differences must be finite, got {value!r}")
        out.append(round(number * 10**decimals))
    if sum(abs(v) for v in out) >= _INT_LIMIT:
        raise ValueError(
            f"differences too large for exact arithmetic at {decimals} decimal places "
            f"(the sum of their sizes must stay below {_INT_LIMIT / 10**decimals:.3g})"
        )
    return np.array(out, dtype=np.int64)


def _sign_flip_p_integers(values: np.ndarray) -> float:
    """Two-sided sign-flip p of integer values (exact up to :data:`EXACT_MAX_N` values)."""
    if not values.any():
        return 1.0
    observed = abs(int(values.sum()))
    n = len(values)
    if n <= EXACT_MAX_N:
        sums = np.zeros(1, dtype=np.int64)
        for value in values:  # every sign pattern: 2^n sums, built one value at a time
            sums = np.concatenate((sums + value, sums - value))
        return int(np.count_nonzero(np.abs(sums) >= observed)) / 2**n
    rng = np.random.default_rng(MONTE_CARLO_SEED)
    hits = 0
    for start in range(0, MONTE_CARLO_DRAWS, _CHUNK):
        size = min(_CHUNK, MONTE_CARLO_DRAWS - start)
        signs = rng.choice(np.array([-1, 1], dtype=np.int64), size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ values) >= observed))
    return (1 + hits) / (1 + MONTE_CARLO_DRAWS)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided p of the paired sign-flip test of ``differences`` (exact for n ≤ 20)."""
    return _sign_flip_p_integers(_as_integers(differences))


def sign_flip_p_above(differences: Sequence[float], margin: float = 0.0) -> float:
    """One-sided p of the paired sign-flip test that the mean of ``differences`` exceeds
    ``margin``: the share of the 2^n sign patterns of ``d − margin`` whose sum is at least the
    observed one (exact for n ≤ 20; the same seeded draws as :func:`sign_flip_p` above)."""
    values = _as_integers([float(d) - margin for d in differences])
    observed = int(values.sum())
    n = len(values)
    if n <= EXACT_MAX_N:
        sums = np.zeros(1, dtype=np.int64)
        for value in values:
            sums = np.concatenate((sums + value, sums - value))
        return int(np.count_nonzero(sums >= observed)) / 2**n
    rng = np.random.default_rng(MONTE_CARLO_SEED)
    hits = 0
    for start in range(0, MONTE_CARLO_DRAWS, _CHUNK):
        size = min(_CHUNK, MONTE_CARLO_DRAWS - start)
        signs = rng.choice(np.array([-1, 1], dtype=np.int64), size=(size, n))
        hits += int(np.count_nonzero(signs @ values >= observed))
    return (1 + hits) / (1 + MONTE_CARLO_DRAWS)


def smallest_sign_flip_p(n: int) -> float:
    """The smallest p the exact sign-flip test can give with ``n`` non-zero differences."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return min(1.0, 2 / 2**n)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p of the exact Wilcoxon signed-rank test of ``differences`` (zeros dropped;
    with ties, the exact conditional p over the signed midranks)."""
    from scipy.stats import rankdata, wilcoxon

    values = _as_integers(differences)
    values = values[values != 0]
    if len(values) == 0:
        return 1.0
    sizes = np.abs(values)
    if len(np.unique(sizes)) == len(sizes):
        return float(wilcoxon(values.astype(float), method="exact").pvalue)
    doubled = np.rint(2 * rankdata(sizes)).astype(np.int64)  # midranks are multiples of 1/2
    return _sign_flip_p_integers(np.sign(values) * doubled)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given (``[]`` for an empty family)."""
    values = []
    for p in p_values:
        try:
            number = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"p-values must be numbers in [0, 1], got {p!r}") from None
        if not 0.0 <= number <= 1.0:  # NaN fails too
            raise ValueError(f"p-values must be numbers in [0, 1], got {p!r}")
        values.append(number)
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted
