"""Accounting under replace-one neighbours (dp_accounting PLD), checked against the exact
Gaussian mechanism, against add/remove-one, and against the audit's own computation.

Fine PLD calls cost 0.2–1.5 s each here; the cases are chosen to keep their number small.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.accounting import (
    DPEvent,
    calibrate_noise_multiplier,
    canonical_history,
    epsilon,
)

pytestmark = pytest.mark.unit

DELTA = 1e-5


def ev(sigma: float, q: float, steps: int) -> DPEvent:
    return DPEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)


# --- DPEvent --------------------------------------------------------------------------------------


@given(
    sigma=st.one_of(
        st.floats(max_value=-1e-12), st.just(math.inf), st.just(math.nan), st.just(True)
    ),
)
@settings(max_examples=30, deadline=None)
def test_bad_noise_multiplier_is_rejected(sigma):
    with pytest.raises(PrivacyError, match="noise multiplier"):
        ev(sigma, 0.01, 10)


@given(
    q=st.one_of(
        st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(math.nan)
    )
)
@settings(max_examples=30, deadline=None)
def test_bad_sample_rate_is_rejected(q):
    with pytest.raises(PrivacyError, match="sample rate"):
        ev(1.0, q, 10)


@given(steps=st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), st.just(True)))
@settings(max_examples=30, deadline=None)
def test_bad_steps_are_rejected(steps):
    with pytest.raises(PrivacyError, match="steps"):
        ev(1.0, 0.01, steps)


@given(
    sigma=st.floats(min_value=0, max_value=1e6),
    q=st.floats(min_value=1e-9, max_value=1.0),
    steps=st.integers(min_value=1, max_value=10**9),
)
@settings(max_examples=50, deadline=None)
def test_valid_events_are_accepted_and_normalised(sigma, q, steps):
    e = ev(sigma, q, steps)
    assert type(e.noise_multiplier) is float and type(e.sample_rate) is float
    assert (e.noise_multiplier, e.sample_rate, e.steps) == (sigma, q, steps)


# --- epsilon (replace-one) ---------------------------------------------------------------------


def gaussian_epsilon(mu: float, delta: float) -> float:
    """ε of the μ-Gaussian mechanism at δ, from its exact privacy profile (Balle & Wang 2018):
    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(excess, 0.0, 500.0)


@pytest.mark.parametrize("sigma, steps", [(6.58, 30), (2.0, 10), (10.0, 100)])
def test_replace_one_at_full_sampling_is_the_gaussian_mechanism_with_twice_the_sensitivity(
    sigma, steps
):
    # q = 1: the replaced record is always in the batch and its clipped gradient may point the
    # other way from its replacement's: k steps are one Gaussian with mean shift 2·√k / σ.
    exact = gaussian_epsilon(2 * math.sqrt(steps) / sigma, DELTA)
    ours = epsilon([ev(sigma, 1.0, steps)], delta=DELTA)
    assert exact <= ours <= exact + 0.01  # a pessimistic discretisation: never below


def test_replace_one_costs_more_than_add_remove_and_matches_the_issues_numbers():
    import dp_accounting
    from dp_accounting import pld

    def add_remove(sigma, q, steps):
        accountant = pld.PLDAccountant()  # dp_accounting's default: add/remove-one
        accountant.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
            )
        )
        return accountant.get_epsilon(DELTA)

    for sigma, q, steps in [(1.0, 0.17, 30), (0.8, 0.05, 300), (2.0, 1.0, 30)]:
        assert epsilon([ev(sigma, q, steps)], delta=DELTA) > add_remove(sigma, q, steps)
    # q = 1 (a client with n <= the expected batch): replace-one doubles the sensitivity
    sigma = 1.96
    assert add_remove(sigma, 1.0, 30) == pytest.approx(
        gaussian_epsilon(math.sqrt(30) / sigma, DELTA), abs=0.01
    )


def test_composition_of_equal_events_equals_one_longer_event():
    split = [ev(1.0, 0.04, 50), ev(1.0, 0.04, 50)]
    whole = [ev(1.0, 0.04, 100)]
    assert canonical_history(split) == canonical_history(whole) == ((1.0, 0.04, 100),)
    assert epsilon(split, delta=DELTA) == epsilon(whole, delta=DELTA)


def test_epsilon_edge_cases():
    assert epsilon([], delta=DELTA) == 0.0
    assert epsilon([ev(0.0, 0.04, 50)], delta=DELTA) == math.inf
    # so little noise that no useful guarantee exists: inf, quickly, not a minutes-long grid
    import time

    start = time.perf_counter()
    assert epsilon([ev(0.001, 0.5, 1000)], delta=DELTA) == math.inf
    assert time.perf_counter() - start < 3
    # huge but computable: the coarse (still pessimistic) grid
    assert 100 < epsilon([ev(0.3, 1.0, 30)], delta=DELTA) < math.inf


def test_a_delta_below_what_the_pld_resolves_is_refused_with_the_way_out():
    assert (
        epsilon([ev(1.0, 0.04, 100)], delta=DELTA)
        < epsilon([ev(1.0, 0.04, 100)], delta=1e-12)
        < math.inf
    )
    for call in (
        lambda: epsilon([ev(1.0, 0.04, 100)], delta=1e-30),
        lambda: calibrate_noise_multiplier(
            target_epsilon=8.0, delta=1e-30, sample_rate=0.04, steps=100
        ),
    ):
        with pytest.raises(PrivacyError, match="below 1/n; 1e-5 is usual"):
            call()


def test_add_remove_accountants_and_gdp_are_refused_with_the_reason():
    for name in ("prv", "rdp"):
        with pytest.raises(PrivacyError, match="add/remove-one neighbours, which protect nothing"):
            epsilon([ev(1.0, 0.01, 10)], delta=DELTA, accountant=name)
    with pytest.raises(PrivacyError, match="underestimates"):
        epsilon([ev(1.0, 0.01, 10)], delta=DELTA, accountant="gdp")
    with pytest.raises(PrivacyError, match="choose one of pld"):
        epsilon([ev(1.0, 0.01, 10)], delta=DELTA, accountant="moments")


@pytest.mark.parametrize("delta", [0, 1, -1e-5, 1.5, math.nan])
def test_bad_delta_is_rejected(delta):
    with pytest.raises(PrivacyError, match="delta"):
        epsilon([ev(1.0, 0.01, 10)], delta=delta)


def test_only_events_are_accepted():
    with pytest.raises(PrivacyError, match="DPEvent"):
        epsilon([(1.0, 0.01, 10)], delta=DELTA)


# --- the audit's independent computation ----------------------------------------------------------


@pytest.mark.parametrize(
    "history",
    [
        [(0.6831, 0.2, 4)],
        [(1.0514, 0.1524, 30)],
        [(6.5792, 1.0, 30)],
        [(1.0, 0.17, 20), (1.3, 0.17, 10)],  # σ recalibrated on resume
    ],
)
def test_the_audits_own_replace_one_bounds_contain_the_runs_epsilon(history):
    from audits.replace_one import replace_one_epsilon

    bounds = replace_one_epsilon(history, DELTA)
    ours = epsilon([ev(*event) for event in history], delta=DELTA)
    assert bounds.lower <= ours <= bounds.upper + 0.002
    assert bounds.upper - bounds.lower < 0.01


def test_the_audits_bounds_contain_the_exact_gaussian_value():
    from audits.replace_one import replace_one_epsilon

    bounds = replace_one_epsilon([(3.0, 1.0, 20)], DELTA)
    assert bounds.contains(gaussian_epsilon(2 * math.sqrt(20) / 3.0, DELTA))


# --- calibration --------------------------------------------------------------------------------


def test_calibrated_sigma_ends_just_under_the_target():
    sigma = calibrate_noise_multiplier(target_epsilon=8.0, delta=DELTA, sample_rate=0.04, steps=50)
    reached = epsilon([ev(sigma, 0.04, 50)], delta=DELTA)
    assert 8.0 - 0.01 <= reached <= 8.0
    assert epsilon([ev(sigma * 0.97, 0.04, 50)], delta=DELTA) > 8.0


def test_calibration_accounts_for_prior_events():
    prior = (ev(0.9, 0.04, 100),)
    sigma = calibrate_noise_multiplier(
        target_epsilon=8.0, delta=DELTA, sample_rate=0.04, steps=50, prior_events=prior
    )
    reached = epsilon([*prior, ev(sigma, 0.04, 50)], delta=DELTA)
    assert 8.0 - 0.01 <= reached <= 8.0
    assert epsilon([*prior, ev(sigma * 0.97, 0.04, 50)], delta=DELTA) > 8.0
    # the rounds that carry out the plan spend exactly the planned ε
    rounds = [*prior, *[ev(sigma, 0.04, 10)] * 5]
    assert epsilon(rounds, delta=DELTA) == reached


def test_calibration_refuses_when_prior_spending_reaches_the_target():
    with pytest.raises(PrivacyError, match="already spent"):
        calibrate_noise_multiplier(
            target_epsilon=8.0,
            delta=DELTA,
            sample_rate=0.04,
            steps=50,
            prior_events=(ev(0.3, 0.04, 20),),
        )


def test_calibration_validates_before_computing():
    base = {"delta": DELTA, "sample_rate": 0.04, "steps": 50}
    for bad in [0, -1, math.inf, math.nan]:
        with pytest.raises(PrivacyError, match="target epsilon"):
            calibrate_noise_multiplier(target_epsilon=bad, **base)
    with pytest.raises(PrivacyError, match="sample rate"):
        calibrate_noise_multiplier(target_epsilon=8.0, **{**base, "sample_rate": 1.5})
    with pytest.raises(PrivacyError, match="steps"):
        calibrate_noise_multiplier(target_epsilon=8.0, **{**base, "steps": 0})
    with pytest.raises(PrivacyError, match="add/remove"):
        calibrate_noise_multiplier(target_epsilon=8.0, **base, accountant="prv")


def test_calibration_reaches_small_budgets():
    sigma = calibrate_noise_multiplier(target_epsilon=0.5, delta=DELTA, sample_rate=0.01, steps=100)
    assert 0.49 <= epsilon([ev(sigma, 0.01, 100)], delta=DELTA) <= 0.5
