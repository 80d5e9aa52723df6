"""Privacy accounting for DP-SGD: ε of a history of DP events, and the σ that meets a budget.

Pure functions over Opacus' accountants. A :class:`DPEvent` is ``steps`` DP-SGD steps of the
Poisson-subsampled Gaussian mechanism with noise multiplier σ and sampling rate q; a history of
events composes. Two accountants are offered:

- ``prv`` (default in Opacus): numerical composition of privacy loss random variables; tight.
- ``rdp``: Rényi DP; a looser but cheap upper bound (8–13 % higher ε at δ=1e-5).

``gdp`` is refused: the Gaussian-DP central-limit approximation underestimates ε (by up to 20 %
here), so it cannot back a guarantee. :func:`independent_epsilon` recomputes ε with Google's
dp_accounting PLD accountant, a separate implementation, for audits.

Histories are put in a canonical form before accounting (events with equal σ and q merged,
composition being commutative), so ten rounds of 10 steps give exactly the ε of one event of
100 steps: a budget calibrated for the whole plan is met exactly by the rounds that carry it out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.accountant import IAccountant

from secure_fedsa.errors import PrivacyError

__all__ = [
    "ACCOUNTANTS",
    "DPEvent",
    "calibrate_noise_multiplier",
    "epsilon",
    "independent_epsilon",
]

# (σ, q, steps) as Opacus keeps them in ``accountant.history``.
History = tuple[tuple[float, float, int], ...]

# Beyond this many grid points PRV's FFT composition takes tens of seconds to minutes (measured:
# 2e7 points, 11 s; worse cases over 6 min) and ends at ε = inf or in the hundreds anyway.
PRV_MAX_GRID_POINTS = 8_000_000

# Calibration: stop when the ε of the returned σ is within this of the target (and never above).
EPSILON_TOLERANCE = 0.01
MAX_NOISE_MULTIPLIER = 1e6
_MIN_BRACKET = 1e-3
_MAX_BISECTIONS = 40


@dataclass(frozen=True)
class DPEvent:
    """``steps`` Poisson-subsampled Gaussian steps: noise multiplier σ ≥ 0, sampling rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        sigma, q, steps = self.noise_multiplier, self.sample_rate, self.steps
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise PrivacyError(f"noise multiplier must be a number, got {sigma!r}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise PrivacyError(f"noise multiplier must be finite and >= 0, got {sigma!r}")
        if isinstance(q, bool) or not isinstance(q, (int, float)):
            raise PrivacyError(f"sample rate must be a number, got {q!r}")
        if not 0 < q <= 1:
            raise PrivacyError(f"sample rate must be in (0, 1], got {q!r}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise PrivacyError(f"steps must be an integer, got {steps!r}")
        if steps <= 0:
            raise PrivacyError(f"steps must be > 0, got {steps!r}")
        # Normalise types so events compare, hash and serialise alike.
        object.__setattr__(self, "noise_multiplier", float(sigma))
        object.__setattr__(self, "sample_rate", float(q))
        object.__setattr__(self, "steps", int(steps))


# --- accountants -------------------------------------------------------------------------------


class _BoundedPRVAccountant(PRVAccountant):
    """Opacus' PRV accountant that gives up (ε = inf) where its grid would be intractable."""

    def _get_domain(self, **kwargs):  # Opacus' private hook, called with keywords only
        domain = super()._get_domain(**kwargs)
        if domain.size > PRV_MAX_GRID_POINTS:
            raise _Intractable(domain.size)
        return domain


class _Intractable(Exception):
    """PRV's discretisation grid is too large to compute in reasonable time."""


ACCOUNTANTS: dict[str, Callable[[], IAccountant]] = {
    "prv": _BoundedPRVAccountant,
    "rdp": RDPAccountant,
}

_REFUSED: dict[str, str] = {
    "gdp": "the Gaussian-DP accountant is a central-limit approximation that underestimates ε "
    "(by up to 20 % for DP-SGD); use 'prv' (tight) or 'rdp' (a looser upper bound)",
}


def _check_accountant(accountant: str) -> None:
    if accountant in _REFUSED:
        raise PrivacyError(f"accountant {accountant!r} refused: {_REFUSED[accountant]}")
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(
            f"unknown accountant {accountant!r}; choose one of {', '.join(sorted(ACCOUNTANTS))}"
        )


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


def _check_events(events: Sequence[DPEvent]) -> None:
    for event in events:
        if not isinstance(event, DPEvent):
            raise PrivacyError(f"expected DPEvent, got {type(event).__name__}")


def canonical_history(events: Sequence[DPEvent]) -> History:
    """Events with equal (σ, q) merged, in order of first appearance, as (σ, q, steps)."""
    steps: dict[tuple[float, float], int] = {}
    for event in events:
        key = (event.noise_multiplier, event.sample_rate)
        steps[key] = steps.get(key, 0) + event.steps
    return tuple((sigma, q, n) for (sigma, q), n in steps.items())


@lru_cache(maxsize=512)
def _epsilon(history: History, delta: float, accountant: str) -> float:
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # no noise: no guarantee
    acc = ACCOUNTANTS[accountant]()
    acc.history = list(history)
    try:
        # Both accountants warn about loose bounds and overflow in extreme regimes; the value
        # they return is still an upper bound (or inf), which is what we report.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            eps = float(acc.get_epsilon(delta=delta))
    except (_Intractable, OverflowError, FloatingPointError, ValueError, ZeroDivisionError):
        return math.inf
    return eps if eps >= 0 and not math.isnan(eps) else math.inf


def epsilon(events: Sequence[DPEvent], *, delta: float, accountant: str) -> float:
    """ε at ``delta`` of the composition of ``events``; ``inf`` where no finite bound is found.

    An empty history costs nothing (ε = 0); σ = 0 anywhere gives ``inf``. PRV returns ``inf``
    for very small σ with many steps (where RDP may still give a large finite bound).
    """
    _check_delta(delta)
    _check_accountant(accountant)
    _check_events(events)
    return _epsilon(canonical_history(events), float(delta), accountant)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    prior_events: Sequence[DPEvent] = (),
) -> float:
    """The smallest σ (to within ε-tolerance 0.01) such that ``prior_events`` followed by
    ``steps`` steps at (σ, ``sample_rate``) spend at most ``target_epsilon``.

    The returned σ always meets the target; its ε is within :data:`EPSILON_TOLERANCE` below it
    unless the bisection hit its iteration cap. Raises :class:`PrivacyError` if the prior events
    alone already reach the target, or if no σ up to 1e6 meets it.
    """
    if (
        isinstance(target_epsilon, bool)
        or not isinstance(target_epsilon, (int, float))
        or not 0 < target_epsilon < math.inf
    ):
        raise PrivacyError(f"target epsilon must be a finite number > 0, got {target_epsilon!r}")
    _check_delta(delta)
    _check_accountant(accountant)
    _check_events(prior_events)
    DPEvent(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps)  # validates q, steps
    prior = tuple(prior_events)

    if prior:
        spent = epsilon(prior, delta=delta, accountant=accountant)
        if spent >= target_epsilon:
            raise PrivacyError(
                f"the privacy already spent (ε = {spent:.4g} at δ = {delta:g}, "
                f"{sum(e.steps for e in prior)} steps) reaches the target ε = {target_epsilon:g}; "
                "no further training fits this budget"
            )

    eps_of = _epsilon_of_sigma(prior, sample_rate, steps, delta=delta, accountant=accountant)
    # PRV calls cost 0.1–2.6 s and RDP ones ~0.01 s; RDP's σ is a close upper estimate of PRV's,
    # so start the (expensive) search next to it with a narrow bracket. RDP cannot certify very
    # small ε (its orders stop at 63): then search from σ = 1.
    start, factor = 1.0, 2.0
    if accountant != "rdp":
        rdp_eps_of = _epsilon_of_sigma(prior, sample_rate, steps, delta=delta, accountant="rdp")
        with suppress(PrivacyError):
            start = _bisect(rdp_eps_of, target_epsilon, 1.0, 2.0, rel_width=0.02)
            factor = 1.15
    try:
        return _bisect(eps_of, target_epsilon, start, factor, rel_width=1e-5)
    except PrivacyError as exc:
        advice = " (RDP cannot certify very small ε; 'prv' can)" if accountant == "rdp" else ""
        if accountant == "prv" and math.isinf(eps_of(MAX_NOISE_MULTIPLIER)):
            rdp_eps = _epsilon_of_sigma(prior, sample_rate, steps, delta=delta, accountant="rdp")(
                MAX_NOISE_MULTIPLIER
            )
            advice = (
                f": the PRV accountant returns ε = ∞ for every σ at δ = {delta:g}, because its "
                "float64 arithmetic does not reach such a small δ (it stops working somewhere "
                "near 1e-13 to 1e-15). Use a larger --delta (δ only has to be below 1/n; 1e-5 is "
                "usual)"
                + (
                    ", or --accountant rdp, whose (looser) bound holds at any δ"
                    if rdp_eps <= target_epsilon
                    else ""
                )
            )
        raise PrivacyError(
            f"{exc} at δ = {delta:g}, q = {sample_rate:g}, {steps} steps{advice}"
        ) from None


def _epsilon_of_sigma(
    prior: tuple[DPEvent, ...], sample_rate: float, steps: int, *, delta: float, accountant: str
) -> Callable[[float], float]:
    """ε of ``prior`` followed by ``steps`` steps at (σ, ``sample_rate``), as a function of σ."""

    def eps_of(sigma: float) -> float:
        new = DPEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
        return epsilon((*prior, new), delta=delta, accountant=accountant)

    return eps_of


def _bisect(
    eps_of: Callable[[float], float],
    target: float,
    start: float,
    factor: float,
    *,
    rel_width: float,
) -> float:
    """Smallest σ with ``eps_of(σ) <= target``, for ε decreasing in σ.

    Brackets by multiplying/dividing ``start`` by ``factor``, then narrows the bracket until the
    ε at its upper end is within :data:`EPSILON_TOLERANCE` of the target or its relative width
    falls below ``rel_width``. Each new point interpolates log ε against log σ (ε is close to a
    power of σ), aiming just under the target, and stays inside the middle 90 % of the bracket;
    where interpolation is impossible it bisects. Always returns a σ whose ε meets the target.
    """
    hi = start
    eps_hi = eps_of(hi)
    if eps_hi <= target:
        lo = hi / factor
        while (eps_lo := eps_of(lo)) <= target:
            hi, eps_hi, lo = lo, eps_lo, lo / factor
            if lo < _MIN_BRACKET:
                lo, eps_lo = 0.0, math.inf  # ε(0) = inf: a valid lower end
                break
    else:
        lo, eps_lo = hi, eps_hi
        while True:
            hi *= factor
            if hi > MAX_NOISE_MULTIPLIER:
                raise PrivacyError(
                    f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} meets ε = {target:g}"
                )
            if (eps_hi := eps_of(hi)) <= target:
                break
            lo, eps_lo = hi, eps_hi
    aim = max(target - EPSILON_TOLERANCE / 2, target / 2)
    for _ in range(_MAX_BISECTIONS):
        if target - eps_hi <= EPSILON_TOLERANCE or hi - lo <= rel_width * hi:
            break
        mid = _interpolate(lo, eps_lo, hi, eps_hi, aim)
        if (eps_mid := eps_of(mid)) <= target:
            hi, eps_hi = mid, eps_mid
        else:
            lo, eps_lo = mid, eps_mid
    return hi


def _interpolate(lo: float, eps_lo: float, hi: float, eps_hi: float, aim: float) -> float:
    """σ in (lo, hi) where the log-log line through the bracket ends reaches ``aim``."""
    width = hi - lo
    if lo > 0 and math.isfinite(eps_lo) and eps_hi > 0 and eps_lo > eps_hi:
        t = math.log(eps_lo / aim) / math.log(eps_lo / eps_hi)
        mid = math.exp(math.log(lo) + t * math.log(hi / lo))
    else:
        mid = lo + width / 2
    return min(max(mid, lo + 0.05 * width), hi - 0.05 * width)


def independent_epsilon(events: Sequence[DPEvent], *, delta: float) -> float:
    """ε of ``events`` from Google's dp_accounting PLD accountant (add-or-remove-one neighbours).

    An implementation independent of Opacus, for audits. Needs ``pip install dp-accounting``.
    """
    _check_delta(delta)
    _check_events(events)
    try:
        import dp_accounting
        from dp_accounting import pld
    except ImportError as exc:
        raise PrivacyError(
            "independent accounting needs Google's dp_accounting: pip install dp-accounting"
        ) from exc
    history = canonical_history(events)
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    composed = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    sampling_probability=q, event=dp_accounting.GaussianDpEvent(sigma)
                ),
                count=n,
            )
            for sigma, q, n in history
        ]
    )
    accountant = pld.PLDAccountant()
    accountant.compose(composed)
    eps = float(accountant.get_epsilon(delta))
    return eps if not math.isnan(eps) else math.inf
