"""ε of a DP-SGD history under replace-one neighbours, computed here from first principles.

An implementation independent of the one the run used (Google's dp_accounting PLD): numpy and
the normal distribution function only, written from the definitions, so that an error in either
shows up as a disagreement.

One step of the Poisson-subsampled Gaussian mechanism with noise multiplier σ and sampling rate q,
under replace-one neighbours, is dominated (in units of the clip) by the pair

    P = (1 − q)·N(0, σ²) + q·N(+1, σ²)        Q = (1 − q)·N(0, σ²) + q·N(−1, σ²)

(the replaced record is in the batch with probability q; its clipped gradient and its
replacement's point in opposite directions). The privacy loss ``L(x) = ln P(x)/Q(x)`` increases
with x, its slope lies in [0, 2/σ²], and Q(x) = P(−x), so the pair is symmetric and one
direction of the hockey-stick divergence suffices:

    δ(ε) = E_{X ~ P^k}[(1 − e^{ε − L_k(X)})₊]     for k composed steps (L_k: the summed losses).

The loss distribution of one step is discretised twice: cells of x carry their P-mass at the
loss of the cell's right end rounded **up** to a grid of width h (an upper bound of every loss
in the cell), or of its left end rounded **down** (a lower bound). Independent sums keep that
order, and δ(ε) increases with the losses, so the composed distributions bound the true δ(ε)
from above and below; tails beyond the grid go to +∞ (upper) or are dropped (lower). Composition
is by FFT convolution with exponentiation by squaring. The result is an interval
``[ε_lower, ε_upper]`` that contains the true ε (up to FFT rounding, about 1e-12 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

History = Sequence[tuple[float, float, int]]  # (σ, q, steps)

# the loss window kept while composing: mass beyond it goes to +inf (upper) or is dropped /
# clipped (lower); ε above the widest window is reported as inf. A first pass on a coarse grid
# sizes the window for the fine pass.
MAX_WINDOW = 256.0
COARSE_GRID = 0.01
MAX_POINTS = 2_000_000  # loss-grid points in the window (memory: a few arrays of this size)
MAX_CELLS = 4_000_000  # x cells per event
TAIL_SIGMAS = 13.0  # the x range: every normal component to 13 σ (tail mass < 1e-38)


@dataclass(frozen=True)
class EpsilonInterval:
    """Bounds that contain the true ε; ``grid`` is the loss grid's width h."""

    lower: float
    upper: float
    grid: float

    def contains(self, value: float, *, slack: float = 0.0) -> bool:
        return self.lower - slack <= value <= self.upper + slack


@dataclass
class _Pmf:
    """A distribution over losses ``(offset + i) · h`` plus mass at +inf."""

    probs: np.ndarray
    offset: int
    inf: float = 0.0


def _loss(x: np.ndarray, sigma: float, q: float) -> np.ndarray:
    """ln P(x)/Q(x), computed stably in log space."""
    a = -(x * x) / (2 * sigma * sigma)
    up = -((x - 1) ** 2) / (2 * sigma * sigma)
    down = -((x + 1) ** 2) / (2 * sigma * sigma)
    if q >= 1.0:
        return up - down
    log_p = np.logaddexp(math.log1p(-q) + a, math.log(q) + up)
    log_q = np.logaddexp(math.log1p(-q) + a, math.log(q) + down)
    return log_p - log_q


def _mass(lo: np.ndarray, hi: np.ndarray, sigma: float, q: float) -> np.ndarray:
    """P-mass of each cell [lo, hi)."""

    def interval(mean: float) -> np.ndarray:
        a, b = (lo - mean) / sigma, (hi - mean) / sigma
        # Φ(b) − Φ(a), from the nearer tail for accuracy
        return np.where(a > 0, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))

    if q >= 1.0:
        return interval(1.0)
    return (1 - q) * interval(0.0) + q * interval(1.0)


def _step_pmfs(sigma: float, q: float, h: float) -> tuple[_Pmf, _Pmf]:
    """(upper, lower) discretised loss distributions of one step."""
    span = 1.0 + TAIL_SIGMAS * sigma
    dx = min(h * sigma * sigma / 2.0, 2 * span / 64)  # the loss moves at most h across a cell
    cells = int(math.ceil(2 * span / dx))
    if cells > MAX_CELLS:
        raise ValueError(f"σ = {sigma:g} needs {cells} cells at grid {h:g}")
    edges = np.linspace(-span, span, cells + 1)
    mass = _mass(edges[:-1], edges[1:], sigma, q)
    loss = _loss(edges, sigma, q)
    left_tail = float(_mass(np.array([-np.inf]), np.array([-span]), sigma, q)[0])
    right_tail = float(_mass(np.array([span]), np.array([np.inf]), sigma, q)[0])
    up_index = np.ceil(loss[1:] / h).astype(np.int64)
    low_index = np.floor(loss[:-1] / h).astype(np.int64)
    # upper: the left tail at the first cell's loss (losses there are lower), the right at +inf
    upper = _histogram(
        np.concatenate([[int(math.ceil(loss[0] / h))], up_index]),
        np.concatenate([[left_tail], mass]),
    )
    upper.inf = right_tail
    # lower: the left tail dropped, the right tail at the last edge's loss
    lower = _histogram(
        np.concatenate([low_index, [int(math.floor(loss[-1] / h))]]),
        np.concatenate([mass, [right_tail]]),
    )
    return upper, lower


def _histogram(index: np.ndarray, weights: np.ndarray) -> _Pmf:
    offset = int(index.min())
    probs = np.bincount(index - offset, weights=weights)
    return _Pmf(probs, offset)


def _convolve(a: _Pmf, b: _Pmf, limit: int, *, upper: bool) -> _Pmf:
    size = len(a.probs) + len(b.probs) - 1
    n = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a.probs, n) * np.fft.rfft(b.probs, n), n)[:size]
    np.maximum(out, 0.0, out=out)
    inf = 1.0 - (1.0 - a.inf) * (1.0 - b.inf)
    return _window(_Pmf(out, a.offset + b.offset, inf), limit, upper=upper)


def _window(pmf: _Pmf, limit: int, *, upper: bool) -> _Pmf:
    """Keep losses in [−limit, limit] (grid units): below, the upper bound piles the mass at
    −limit and the lower bound drops it; above, the upper bound moves it to +inf and the lower
    bound piles it at +limit."""
    probs, offset, inf = pmf.probs, pmf.offset, pmf.inf
    first = -limit - offset  # array index of loss −limit
    if first > 0:
        below = float(probs[:first].sum())
        probs = probs[first:].copy()
        offset = -limit
        if upper:
            probs[0] += below
    last = limit - offset  # array index of loss +limit
    if last < len(probs) - 1:
        above = float(probs[last + 1 :].sum())
        probs = probs[: last + 1].copy()
        if upper:
            inf = 1.0 - (1.0 - inf) * (1.0 - above)
        else:
            probs[-1] += above
    return _Pmf(probs, offset, inf)


def _power(step: _Pmf, count: int, limit: int, *, upper: bool) -> _Pmf:
    result: _Pmf | None = None
    base = _window(step, limit, upper=upper)
    while count:
        if count & 1:
            result = base if result is None else _convolve(result, base, limit, upper=upper)
        count >>= 1
        if count:
            base = _convolve(base, base, limit, upper=upper)
    assert result is not None
    return result


def _delta(pmf: _Pmf, eps: float, h: float) -> float:
    losses = (pmf.offset + np.arange(len(pmf.probs))) * h
    keep = losses > eps
    return pmf.inf + float(np.sum(pmf.probs[keep] * -np.expm1(eps - losses[keep])))


def _epsilon(pmf: _Pmf, delta: float, h: float, window: float) -> float:
    if _delta(pmf, 0.0, h) <= delta:
        return 0.0
    if _delta(pmf, window, h) > delta:
        return math.inf
    lo, hi = 0.0, window
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _delta(pmf, mid, h) <= delta else (mid, hi)
    return hi


def replace_one_epsilon(history: History, delta: float) -> EpsilonInterval:
    """Bounds on ε at ``delta`` of the composition of ``history`` (σ, q, steps) under
    replace-one neighbours. ``inf`` where σ = 0 or ε is beyond the window; ValueError where the
    grid would be too large to compute."""
    events = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not events:
        return EpsilonInterval(0.0, 0.0, 0.0)
    if any(s <= 0 for s, _, _ in events):
        return EpsilonInterval(math.inf, math.inf, 0.0)
    steps = sum(n for _, _, n in events)
    rough = _bounds(events, delta, COARSE_GRID, MAX_WINDOW, uppers=(True,))[0]
    if math.isinf(rough):
        return EpsilonInterval(math.inf, math.inf, COARSE_GRID)
    window = min(MAX_WINDOW, max(16.0, 2 * rough + 8))
    # the grid: rounding moves each step's loss by at most 2h, so k steps by 2kh: keep that
    # near 0.005, as far as the window's size allows
    h = max(0.0025 / steps, 2 * window / MAX_POINTS)
    upper, lower = _bounds(events, delta, h, window, uppers=(True, False))
    return EpsilonInterval(lower=lower, upper=upper, grid=h)


def _bounds(
    events: list[tuple[float, float, int]],
    delta: float,
    h: float,
    window: float,
    *,
    uppers: tuple[bool, ...],
) -> list[float]:
    limit = int(window / h)
    bounds = []
    for upper in uppers:
        total: _Pmf | None = None
        for sigma, q, n in events:
            part = _power(_step_pmfs(sigma, q, h)[0 if upper else 1], n, limit, upper=upper)
            total = part if total is None else _convolve(total, part, limit, upper=upper)
        assert total is not None
        bounds.append(_epsilon(total, delta, h, window))
    return bounds
