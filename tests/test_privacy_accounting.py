"""Accounting over real Opacus accountants, checked against each other and against dp_accounting.

PRV calls cost 0.05–0.5 s each here; the cases are chosen to keep their number small.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.accounting import (
    DPEvent,
    calibrate_noise_multiplier,
    canonical_history,
    epsilon,
    independent_epsilon,
)

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


# --- epsilon ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "events",
    [
        [ev(1.0, 0.01, 1000)],
        [ev(1.0, 0.04, 500)],
        [ev(1.0, 0.04, 300), ev(1.5, 0.02, 600)],
    ],
    ids=["sigma1-q.01-1000", "sigma1-q.04-500", "two-events"],
)
def test_rdp_is_an_upper_bound_close_to_prv(events):
    # (with only tens of steps RDP's excess grows to ~20 %: e.g. σ=0.8, q=0.04, 50 steps)
    prv = epsilon(events, delta=DELTA, accountant="prv")
    rdp = epsilon(events, delta=DELTA, accountant="rdp")
    assert 0 < prv <= rdp <= 1.15 * prv


def test_prv_agrees_with_google_pld():
    events = [ev(1.0, 0.01, 1000)]
    prv = epsilon(events, delta=DELTA, accountant="prv")
    pld = independent_epsilon(events, delta=DELTA)
    assert abs(prv - pld) < 0.05


def test_composition_of_equal_events_equals_one_longer_event():
    split = [ev(1.0, 0.04, 50), ev(1.0, 0.04, 50)]
    whole = [ev(1.0, 0.04, 100)]
    assert canonical_history(split) == canonical_history(whole) == ((1.0, 0.04, 100),)
    assert epsilon(split, delta=DELTA, accountant="prv") == epsilon(
        whole, delta=DELTA, accountant="prv"
    )
    # The merge is sound: Opacus composing the two groups separately gives the same ε.
    acc = PRVAccountant()
    acc.history = [(1.0, 0.04, 50), (1.0, 0.04, 50)]
    separate = acc.get_epsilon(delta=DELTA)
    assert separate == pytest.approx(epsilon(whole, delta=DELTA, accountant="prv"), abs=0.02)


def test_epsilon_edge_cases():
    assert epsilon([], delta=DELTA, accountant="prv") == 0.0
    assert epsilon([ev(0.0, 0.04, 50)], delta=DELTA, accountant="prv") == math.inf
    assert epsilon([ev(0.0, 0.04, 50)], delta=DELTA, accountant="rdp") == math.inf
    assert independent_epsilon([ev(0.0, 0.04, 50)], delta=DELTA) == math.inf
    assert independent_epsilon([], delta=DELTA) == 0.0


def test_prv_gives_inf_quickly_where_its_grid_is_intractable():
    # Opacus' PRV needs ~11 s here (a 2e7-point grid) and returns inf; we stop before.
    import time

    start = time.perf_counter()
    assert epsilon([ev(0.5, 0.5, 1000)], delta=DELTA, accountant="prv") == math.inf
    assert time.perf_counter() - start < 3
    # RDP still gives a (huge) finite upper bound
    assert math.isfinite(epsilon([ev(0.5, 0.5, 1000)], delta=DELTA, accountant="rdp"))


def test_gdp_is_refused_and_unknown_names_are_listed():
    with pytest.raises(PrivacyError, match="underestimates"):
        epsilon([ev(1.0, 0.01, 10)], delta=DELTA, accountant="gdp")
    with pytest.raises(PrivacyError, match="prv, rdp"):
        epsilon([ev(1.0, 0.01, 10)], delta=DELTA, accountant="moments")


@pytest.mark.parametrize("delta", [0, 1, -1e-5, 1.5, math.nan])
def test_bad_delta_is_rejected(delta):
    with pytest.raises(PrivacyError, match="delta"):
        epsilon([ev(1.0, 0.01, 10)], delta=delta, accountant="rdp")


def test_only_events_are_accepted():
    with pytest.raises(PrivacyError, match="DPEvent"):
        epsilon([(1.0, 0.01, 10)], delta=DELTA, accountant="rdp")


# --- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_calibrated_sigma_ends_just_under_the_target(accountant):
    kw = {"delta": DELTA, "accountant": accountant}
    sigma = calibrate_noise_multiplier(target_epsilon=8.0, sample_rate=0.04, steps=50, **kw)
    reached = epsilon([ev(sigma, 0.04, 50)], **kw)
    assert 8.0 - 0.01 <= reached <= 8.0
    assert epsilon([ev(sigma * 0.97, 0.04, 50)], **kw) > 8.0


def test_calibration_accounts_for_prior_events():
    prior = (ev(0.7, 0.04, 100),)
    kw = {"delta": DELTA, "accountant": "prv"}
    sigma = calibrate_noise_multiplier(
        target_epsilon=8.0, sample_rate=0.04, steps=50, prior_events=prior, **kw
    )
    reached = epsilon([*prior, ev(sigma, 0.04, 50)], **kw)
    assert 8.0 - 0.01 <= reached <= 8.0
    assert epsilon([*prior, ev(sigma * 0.97, 0.04, 50)], **kw) > 8.0
    # the rounds that carry out the plan spend exactly the planned ε
    rounds = [*prior, *[ev(sigma, 0.04, 10)] * 5]
    assert epsilon(rounds, **kw) == reached


def test_calibration_refuses_when_prior_spending_reaches_the_target():
    with pytest.raises(PrivacyError, match="already spent"):
        calibrate_noise_multiplier(
            target_epsilon=8.0,
            delta=DELTA,
            sample_rate=0.04,
            steps=50,
            accountant="rdp",
            prior_events=(ev(0.3, 0.04, 20),),
        )


def test_calibration_validates_before_computing():
    base = {"delta": DELTA, "sample_rate": 0.04, "steps": 50, "accountant": "rdp"}
    for bad in [0, -1, math.inf, math.nan]:
        with pytest.raises(PrivacyError, match="target epsilon"):
            calibrate_noise_multiplier(target_epsilon=bad, **base)
    with pytest.raises(PrivacyError, match="sample rate"):
        calibrate_noise_multiplier(target_epsilon=8.0, **{**base, "sample_rate": 1.5})
    with pytest.raises(PrivacyError, match="steps"):
        calibrate_noise_multiplier(target_epsilon=8.0, **{**base, "steps": 0})
    with pytest.raises(PrivacyError, match="underestimates"):
        calibrate_noise_multiplier(target_epsilon=8.0, **{**base, "accountant": "gdp"})


def test_rdp_cannot_certify_tiny_epsilon_but_says_what_to_do():
    with pytest.raises(PrivacyError, match="'prv' can"):
        calibrate_noise_multiplier(
            target_epsilon=0.1, delta=DELTA, sample_rate=0.01, steps=100, accountant="rdp"
        )


def test_missing_dp_accounting_is_reported_with_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dp_accounting(name, *args, **kwargs):
        if name.startswith("dp_accounting"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dp_accounting)
    with pytest.raises(PrivacyError, match="pip install dp-accounting"):
        independent_epsilon([ev(1.0, 0.01, 10)], delta=DELTA)
