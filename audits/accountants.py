"""ε of a DP-SGD history, computed directly with libraries other than the run's own wrapper.

A history is a sequence of ``(σ, q, steps)``: ``steps`` Poisson-subsampled Gaussian steps with
noise multiplier σ and sampling rate q (add/remove-one neighbours). These functions call Google's
dp_accounting (PLD) and Opacus' RDP/PRV analysis directly, not ``secure_fedsa.privacy``. Each
returns ``inf`` where no finite bound can be computed (σ = 0, numerical blow-up).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

History = Sequence[tuple[float, float, int]]

# Rényi orders: Opacus' default grid plus larger orders (small ε needs large α).
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512]


def merged(history: History) -> list[tuple[float, float, int]]:
    """Equal (σ, q) merged (composition commutes), in order of first appearance."""
    steps: dict[tuple[float, float], int] = {}
    for sigma, q, n in history:
        steps[(float(sigma), float(q))] = steps.get((float(sigma), float(q)), 0) + int(n)
    return [(s, q, n) for (s, q), n in steps.items()]


def _finite(value: float) -> float:
    return value if value >= 0 and not math.isnan(value) else math.inf


def pld_epsilon(history: History, delta: float) -> float:
    """Google dp_accounting's privacy-loss-distribution accountant."""
    return _pld(tuple(merged(history)), float(delta))


@lru_cache(maxsize=256)
def _pld(events: tuple[tuple[float, float, int], ...], delta: float) -> float:
    import dp_accounting
    from dp_accounting import pld

    if not events:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in events):
        return math.inf
    composed = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), n
            )
            for sigma, q, n in events
        ]
    )
    accountant = pld.PLDAccountant()
    try:
        accountant.compose(composed)
        return _finite(float(accountant.get_epsilon(delta)))
    except (ValueError, OverflowError, FloatingPointError):
        return math.inf


def rdp_epsilon(history: History, delta: float) -> float:
    """Rényi-DP upper bound (Mironov et al. 2019) from Opacus' analysis functions."""
    return _rdp(tuple(merged(history)), float(delta))


@lru_cache(maxsize=256)
def _rdp(events: tuple[tuple[float, float, int], ...], delta: float) -> float:
    import numpy as np
    from opacus.accountants.analysis import rdp

    if not events:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in events):
        return math.inf
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        total = sum(
            rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=n, orders=RDP_ORDERS)
            for sigma, q, n in events
        )
        eps, _ = rdp.get_privacy_spent(orders=RDP_ORDERS, rdp=total, delta=delta)
    return _finite(float(eps))


def prv_epsilon(history: History, delta: float) -> float:
    """Opacus' PRV accountant (numerical composition), called directly."""
    return _prv(tuple(merged(history)), float(delta))


@lru_cache(maxsize=256)
def _prv(events: tuple[tuple[float, float, int], ...], delta: float) -> float:
    from opacus.accountants import PRVAccountant

    if not events:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in events):
        return math.inf
    accountant = PRVAccountant()
    accountant.history = list(events)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _finite(float(accountant.get_epsilon(delta=delta)))
    except (ValueError, OverflowError, FloatingPointError, ZeroDivisionError, MemoryError):
        return math.inf


def agrees(reported: float, reference: float, *, abs_tol: float, rel_tol: float) -> bool:
    """|reported − reference| ≤ max(abs_tol, rel_tol·reference); two infinities agree."""
    if math.isinf(reported) or math.isinf(reference):
        return reported == reference
    return abs(reported - reference) <= max(abs_tol, rel_tol * abs(reference))
