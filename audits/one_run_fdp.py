"""The ε lower bound of the one-run f-DP audit (Mahloujifar, Melis & Chaudhuri 2025), as pure
functions.

Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run", Proceedings of the
42nd International Conference on Machine Learning (ICML 2025), PMLR 267:42615-42641.

The game is the one of Steinke, Nasr & Jagielski (2023): m canaries, each included with
probability 1/2; the auditor guesses "in" or "out" for r of them (abstaining on the rest) and
gets v right. Instead of bounding the guesses through (ε, δ), the analysis uses the whole
trade-off curve f the mechanism is claimed to satisfy (f-DP, Dong, Roth & Su, "Gaussian
Differential Privacy", J. R. Stat. Soc. B, 2022): a recursion over the number of correct guesses
bounds how much probability an f-DP mechanism can put on v or more correct guesses; the claim is
rejected at significance p when the observed (r, v) exceeds it. The recursion is the paper's
(its code calls it ``audit_rh_with_cap``); an independent implementation is jax_privacy's
``auditing._epsilon_one_run_fdp``, against which ``tests/test_one_run_fdp.py`` checks ours.

Which curve is tested is a choice the bound states (:data:`CURVES`):

- ``"gaussian"`` (the paper's choice for DP-SGD): the μ-GDP curve whose (ε, δ) profile passes
  through the claimed (ε, δ) (Dong, Roth & Su 2022, Corollary 2.13). A rejection says the
  releases are not μ-GDP for that μ. It assumes the mechanism's curve has the Gaussian shape,
  which DP-SGD approaches as its steps compose (their central limit theorem, Theorem 3.4);
  a Poisson-subsampled mechanism with few steps can be (ε, δ)-DP yet not μ-GDP.
- ``"approximate-dp"``: the (ε, δ)-DP curve itself, f(α) = max(0, 1 − δ − e^ε α,
  e^−ε (1 − δ − α)) (Kairouz, Oh & Viswanath 2015). A rejection refutes the (ε, δ) claim
  with no assumption on the curve's shape.

The lower bound is the largest ε whose claim the observed guesses reject (0 when none).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

import numpy as np
from scipy import optimize
from scipy.special import log_ndtr

Curve = Literal["gaussian", "approximate-dp"]
CURVES: tuple[Curve, ...] = ("gaussian", "approximate-dp")
# the search for ε stops here: a bound this high is reported as this value
EPSILON_CAP = 100.0
_TOLERANCE = 1e-7


def _check_privacy(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


_STANDARD = NormalDist()


def _phi(x: float) -> float:
    """The standard normal CDF, accurate in both tails."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def gaussian_delta(mu: float, epsilon: float) -> float:
    """δ(ε) of μ-GDP: Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Dong, Roth & Su 2022, Cor. 2.13)."""
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got {mu!r}")
    log_a = float(log_ndtr(-epsilon / mu + mu / 2))
    log_b = epsilon + float(log_ndtr(-epsilon / mu - mu / 2))
    if log_b >= log_a:
        return 0.0
    return float(math.exp(log_a) * -math.expm1(log_b - log_a))


@lru_cache(maxsize=4096)
def gaussian_mu(epsilon: float, delta: float) -> float:
    """The μ whose μ-GDP curve is (ε, δ)-DP and no better at ε: δ(ε) of μ-GDP equals δ."""
    _check_privacy(epsilon, delta)
    high = 1.0
    while gaussian_delta(high, epsilon) < delta:
        high *= 2
        if high > 1e4:
            raise ValueError(f"no μ-GDP curve reaches δ = {delta} at ε = {epsilon}")
    low = high / 2
    while low > 1e-12 and gaussian_delta(low, epsilon) > delta:
        low /= 2
    return float(
        optimize.brentq(lambda mu: gaussian_delta(mu, epsilon) - delta, low, high, xtol=1e-12)
    )


def blow_up_inverse(curve: Curve, epsilon: float, delta: float) -> Callable[[float], float]:
    """x ↦ the least probability an event can have under one neighbour when it has probability x
    under the other, for a mechanism on ``curve`` at (ε, δ): the inverse of 1 − f(·)."""
    _check_privacy(epsilon, delta)
    if curve == "gaussian":
        mu = gaussian_mu(epsilon, delta)
        return lambda x: _phi(_STANDARD.inv_cdf(x) - mu) if 0 < x < 1 else float(x >= 1)
    if curve == "approximate-dp":
        grow, shrink = math.exp(epsilon), math.exp(-epsilon)
        return lambda x: max(0.0, (x - delta) * shrink, 1 - delta - grow * (1 - x))
    raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")


def rejects(
    m: int, r: int, v: int, inverse: Callable[[float], float], *, significance: float
) -> bool:
    """Whether v correct of r guesses on m canaries reject the curve behind ``inverse`` at
    ``significance`` (the recursion of Mahloujifar, Melis & Chaudhuri 2025)."""
    _check_counts(m, r, v)
    if not 0 < significance < 1:
        raise ValueError(f"significance must be in (0, 1), got {significance!r}")
    if v == 0:
        return False
    right = significance * v / m
    wrong = significance * (r - v) / m
    for i in range(v - 1, -1, -1):
        grown = max(wrong, inverse(right))
        if grown == wrong:  # a fixed point: nothing changes after this
            break
        right = min(right + i / (r - i) * (grown - wrong), 1.0)
        wrong = grown
    return right + wrong > r / m


def epsilon_lower_bound(
    m: int,
    r: int,
    v: int,
    *,
    delta: float,
    confidence: float = 0.95,
    curve: Curve = "gaussian",
) -> float:
    """The largest ε whose claim on ``curve`` (at δ) v correct of r guesses reject at
    ``confidence``; 0 when they reject none, :data:`EPSILON_CAP` when they reject every ε."""
    _check_counts(m, r, v)
    _check_privacy(0.0, delta)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")
    significance = 1 - confidence

    def rejected(epsilon: float) -> bool:
        return rejects(m, r, v, blow_up_inverse(curve, epsilon, delta), significance=significance)

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):
        low, high = high, high * 2
        if high > EPSILON_CAP:
            return EPSILON_CAP if rejected(EPSILON_CAP) else _bisect(rejected, low, EPSILON_CAP)
    return _bisect(rejected, low, high)


def _bisect(rejected: Callable[[float], bool], low: float, high: float) -> float:
    """The boundary of ``rejected`` in [low, high), given rejected(low) and not rejected(high)."""
    while high - low > _TOLERANCE * max(1.0, low):
        middle = (low + high) / 2
        if rejected(middle):
            low = middle
        else:
            high = middle
    return low


def _check_counts(m: int, r: int, v: int) -> None:
    for name, value in (("m", m), ("r", r), ("v", v)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if m < 1:
        raise ValueError(f"need at least one canary, got m={m}")
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
