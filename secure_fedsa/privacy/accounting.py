"""Privacy accounting for DP-SGD: ε of a history of DP events, and the σ that meets a budget.

**Neighbouring relation: replace-one.** Every run publishes each client's number of training
records n (the ledger's sampling rate q = batch / n gives it away, and secure aggregation's
weights are fixed from it). Under add/remove-one neighbours the two datasets differ in size, so a
guarantee stated that way says nothing once n is public. Two datasets are neighbours here when
they have the same size and differ in one record (replaced by any other record). That is the
relation every ε of this package is stated in.

A :class:`DPEvent` is ``steps`` DP-SGD steps of the Poisson-subsampled Gaussian mechanism with
noise multiplier σ (noise standard deviation σ·C for clip C) and sampling rate q; a history of
events composes. Under replace-one, one step's worst case is the pair of mixtures
``(1−q)·N(0, σ²) + q·N(+1, σ²)`` and ``(1−q)·N(0, σ²) + q·N(−1, σ²)`` (in units of C: the
replaced record is in the batch with probability q and its clipped gradient may point the other
way from its replacement's). ε comes from Google's dp_accounting privacy-loss-distribution (PLD)
accountant with ``NeighboringRelation.REPLACE_ONE``, which composes exactly that pair with a
pessimistic discretisation (ε is an upper bound, within about 0.01 of the true value).

Opacus' accountants (PRV, RDP) analyse add/remove-one only; configurations written before this
correction (``accountant = "prv"`` or ``"rdp"``) can still be read, never trained with.

Histories are put in a canonical form before accounting (events with equal σ and q merged,
composition being commutative), so ten rounds of 10 steps give exactly the ε of one event of
100 steps: a budget calibrated for the whole plan is met exactly by the rounds that carry it out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from secure_fedsa.errors import PrivacyError

__all__ = [
    "ACCOUNTANTS",
    "NEIGHBOURING_RELATION",
    "DPEvent",
    "calibrate_noise_multiplier",
    "canonical_history",
    "epsilon",
]

NEIGHBOURING_RELATION = "replace-one"
# One accountant: dp_accounting's PLD under replace-one (the name is what the ledger records).
ACCOUNTANTS = ("pld",)

# (σ, q, steps) after merging events with equal σ and q.
History = tuple[tuple[float, float, int], ...]

# PLD discretisation of the privacy loss. FINE is what every recorded ε uses (about 0.5-1.5 s a
# call here); COARSE (100 times faster, a looser upper bound) brackets the calibration and
# reports ε above FINE_LIMIT, where the last digits mean nothing.
FINE_INTERVAL = 1e-4
COARSE_INTERVAL = 1e-2
FINE_LIMIT = 100.0
# Beyond this many points per step the PLD takes tens of seconds to minutes; such a σ is so small
# that ε is in the thousands: it is reported as inf (no useful guarantee), as before.
MAX_GRID_POINTS = 2_000_000

# dp_accounting's PLD truncates tails of mass about e^-50 per step and counts them into δ: below
# this δ it returns ε = inf for every σ it can represent, so such a δ is refused up front.
MIN_DELTA = 1e-12

# Calibration: stop when the ε of the returned σ is within this of the target (and never above).
EPSILON_TOLERANCE = 0.01
MAX_NOISE_MULTIPLIER = 1e6
_MIN_BRACKET = 1e-3
_MAX_BISECTIONS = 40

_LEGACY = {
    "prv": "Opacus' PRV accountant",
    "rdp": "Opacus' RDP accountant",
}


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


def check_accountant(accountant: str) -> None:
    """Raise :class:`PrivacyError` unless ``accountant`` is one this package trains with."""
    if accountant in _LEGACY:
        raise PrivacyError(
            f"accountant {accountant!r} ({_LEGACY[accountant]}) analyses add/remove-one "
            "neighbours, which protect nothing once a client's number of records is public (it "
            "is: the sampling rate and the aggregation weights give it away). This version "
            "accounts under replace-one neighbours with 'pld'; a run made with "
            f"{accountant!r} cannot be continued: start a new run"
        )
    if accountant == "gdp":
        raise PrivacyError(
            "accountant 'gdp' refused: the Gaussian-DP central-limit approximation "
            "underestimates ε; use 'pld'"
        )
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(
            f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}"
        )


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    if delta < MIN_DELTA:
        raise PrivacyError(
            f"δ = {delta:g} is below what the accountant resolves ({MIN_DELTA:g}): its PLD "
            "truncates tails of about that mass. δ only has to be below 1/n; 1e-5 is usual"
        )


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


def _grid_points(sigma: float, interval: float) -> float:
    """A generous estimate of the PLD's points per step (its loss range over ``interval``): the
    replace-one loss at q = 1 is 2x/σ², over x within 1 + 10σ."""
    return 4.0 * (1.0 + 10.0 * sigma) / (sigma * sigma) / interval


@lru_cache(maxsize=1024)
def _pld_epsilon(history: History, delta: float, interval: float) -> float:
    import dp_accounting
    from dp_accounting import pld

    composed = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), n
            )
            for sigma, q, n in history
        ]
    )
    accountant = pld.PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
        value_discretization_interval=interval,
    )
    try:
        with np.errstate(all="ignore"):
            accountant.compose(composed)
            eps = float(accountant.get_epsilon(delta))
    except (OverflowError, FloatingPointError, ValueError, ZeroDivisionError, MemoryError):
        return math.inf
    return eps if eps >= 0 and not math.isnan(eps) else math.inf


def _epsilon(history: History, delta: float) -> float:
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # no noise: no guarantee
    smallest = min(sigma for sigma, _, _ in history)
    if _grid_points(smallest, COARSE_INTERVAL) > MAX_GRID_POINTS:
        return math.inf
    coarse = _pld_epsilon(history, delta, COARSE_INTERVAL)
    if coarse > FINE_LIMIT or _grid_points(smallest, FINE_INTERVAL) > MAX_GRID_POINTS:
        return coarse  # an upper bound; at this size the last digits do not matter
    return _pld_epsilon(history, delta, FINE_INTERVAL)


def epsilon(events: Sequence[DPEvent], *, delta: float, accountant: str = "pld") -> float:
    """ε at ``delta`` of the composition of ``events`` under replace-one neighbours; ``inf``
    where no finite bound is found.

    An empty history costs nothing (ε = 0); σ = 0 anywhere gives ``inf``. Deterministic: the
    same events always give the same ε (the ledger relies on recomputing it).
    """
    _check_delta(delta)
    check_accountant(accountant)
    _check_events(events)
    return _epsilon(canonical_history(events), float(delta))


def _coarse_epsilon(events: Sequence[DPEvent], delta: float) -> float:
    history = canonical_history(events)
    if not history:
        return 0.0
    smallest = min(sigma for sigma, _, _ in history)
    if smallest == 0 or _grid_points(smallest, COARSE_INTERVAL) > MAX_GRID_POINTS:
        return math.inf
    return _pld_epsilon(history, float(delta), COARSE_INTERVAL)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "pld",
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
    check_accountant(accountant)
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

    def with_sigma(sigma: float) -> tuple[DPEvent, ...]:
        return (*prior, DPEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps))

    # The coarse grid is 100 times cheaper and its ε is a little above the fine one: bracket with
    # it, then search the fine ε just below the coarse answer.
    start, factor = 1.0, 2.0
    try:
        start = _bisect(
            lambda s: _coarse_epsilon(with_sigma(s), delta), target_epsilon, 1.0, 2.0, 0.01
        )
        factor = 1.1
    except PrivacyError:
        pass
    try:
        return _bisect(
            lambda s: epsilon(with_sigma(s), delta=delta, accountant=accountant),
            target_epsilon,
            start,
            factor,
            1e-5,
        )
    except PrivacyError as exc:
        raise PrivacyError(f"{exc} at δ = {delta:g}, q = {sample_rate:g}, {steps} steps") from None


def _bisect(
    eps_of: Callable[[float], float],
    target: float,
    start: float,
    factor: float,
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
