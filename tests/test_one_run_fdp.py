"""The one-run f-DP bound (Mahloujifar, Melis & Chaudhuri, ICML 2025), checked against an
independent implementation: jax_privacy's ``auditing._epsilon_one_run_fdp``.

Reference values: jax_privacy (github.com/google-deepmind/jax_privacy) at commit
8967688c26d46f3b74bfdfe61ef1f984b887abab, module ``jax_privacy/auditing.py``. That module needs
only numpy, scipy and dp_accounting, so its functions were run as they are (no jax) on the
cases below: ``_epsilon_one_run_fdp(0, m, r, v, significance, delta)``, and
``dp_accounting.get_sigma_gaussian(ε, δ)`` for μ = 1/σ. The last three cases are the values
jax_privacy's own test-suite publishes (``tests/auditing_test.py``,
``test_epsilon_one_run_close``: 10 000 in and 10 000 out scores at shift 1, 2, 4, significance
0.05 with Bonferroni over the thresholds, δ = 1e-6), given here as the (r, v) and the number of
thresholds of the threshold its ``_epsilon_one_run_all_thresholds`` picked.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits import canary_bound
from audits.one_run_fdp import (
    EPSILON_CAP,
    blow_up_inverse,
    epsilon_lower_bound,
    gaussian_delta,
    gaussian_mu,
    rejects,
)

# (m, r guesses, v correct, significance, δ) -> ε from jax_privacy's _epsilon_one_run_fdp
JAX_PRIVACY = [
    ((1000, 100, 95, 0.05, 1e-5), 3.3233),
    ((1000, 500, 500, 0.05, 1e-5), 9.919382),
    ((100, 50, 50, 0.05, 1e-5), 5.839971),
    ((10000, 2500, 2400, 0.05, 1e-6), 5.072794),
    ((1000, 200, 150, 0.05, 1e-5), 1.296916),
    ((100, 10, 10, 0.1, 1e-3), 1.507078),
    ((1000, 500, 400, 0.00625, 1e-5), 1.597349),
    ((100000, 50000, 50000, 0.00625, 1e-5), 13.820941),
    ((50, 20, 11, 0.05, 1e-5), 0.0),
    # published by jax_privacy's tests (shift 1, 2, 4): 2.164749, 4.7218075, 9.133752
    ((20000, 406, 379, 0.05 / 386, 1e-6), 2.164749),
    ((20000, 938, 934, 0.05 / 374, 1e-6), 4.7218075),
    ((20000, 5436, 5436, 0.05 / 140, 1e-6), 9.133752),
]


@pytest.mark.parametrize("case, expected", JAX_PRIVACY)
def test_matches_jax_privacy(case, expected):
    m, r, v, significance, delta = case
    ours = epsilon_lower_bound(m, r, v, delta=delta, confidence=1 - significance)
    assert ours == pytest.approx(expected, rel=2e-6, abs=2e-6)


@pytest.mark.parametrize(
    "epsilon, delta, mu",  # μ = 1 / dp_accounting.get_sigma_gaussian(ε, δ)
    [(1.0, 1e-5, 0.26805112), (8.0, 1e-5, 1.6660306), (2.0, 1e-3, 0.691927)],
)
def test_gaussian_mu_matches_dp_accounting(epsilon, delta, mu):
    assert gaussian_mu(epsilon, delta) == pytest.approx(mu, rel=1e-6)
    assert gaussian_delta(gaussian_mu(epsilon, delta), epsilon) == pytest.approx(delta, rel=1e-8)


@pytest.mark.parametrize(
    "m, r, v", [(1000, 100, 95), (1000, 500, 500), (100, 50, 50), (1000, 200, 150)]
)
def test_the_epsilon_delta_curve_reproduces_the_steinke_analysis(m, r, v):
    """The same recursion on the (ε, δ) curve lands within 0.05 of Steinke et al.'s bound: two
    independent analyses of the same claim."""
    ours = epsilon_lower_bound(m, r, v, delta=1e-5, curve="approximate-dp")
    theirs = canary_bound.epsilon_lower_bound(m, r, v, delta=1e-5)
    assert ours == pytest.approx(theirs, abs=0.05)
    # the Gaussian curve is a stronger claim: it is refuted up to a higher ε
    assert epsilon_lower_bound(m, r, v, delta=1e-5) > ours


def test_chance_level_guesses_certify_nothing():
    assert epsilon_lower_bound(1000, 500, 250, delta=1e-5) == 0.0
    assert epsilon_lower_bound(1000, 0, 0, delta=1e-5) == 0.0


def test_the_bound_is_where_the_claim_stops_being_rejected():
    bound = epsilon_lower_bound(1000, 200, 190, delta=1e-5)
    for epsilon, expected in ((bound * 0.99, True), (bound * 1.01, False)):
        inverse = blow_up_inverse("gaussian", epsilon, 1e-5)
        assert rejects(1000, 200, 190, inverse, significance=0.05) is expected


def test_a_claim_of_no_privacy_at_all_is_never_rejected():
    # δ close to 1: the curve allows everything; nothing can be certified
    assert epsilon_lower_bound(100, 50, 50, delta=0.999) == 0.0
    assert EPSILON_CAP >= 100


@settings(max_examples=25, deadline=None)
@given(r=st.integers(1, 400), data=st.data())
def test_monotone_in_correct_guesses_and_never_above_the_perfect_attack(r, data):
    v = data.draw(st.integers(0, r - 1))
    low = epsilon_lower_bound(1000, r, v, delta=1e-5)
    high = epsilon_lower_bound(1000, r, v + 1, delta=1e-5)
    perfect = epsilon_lower_bound(1000, r, r, delta=1e-5)
    assert 0 <= low <= high + 1e-9 <= perfect + 2e-9


@settings(max_examples=10, deadline=None)
@given(m=st.integers(10, 5000))
def test_more_confidence_never_certifies_more(m):
    r = m // 4
    assert epsilon_lower_bound(m, r, r, delta=1e-5, confidence=0.99) <= epsilon_lower_bound(
        m, r, r, delta=1e-5, confidence=0.9
    )


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(-3, 50),
    r=st.integers(-3, 60),
    v=st.integers(-3, 60),
)
def test_impossible_counts_are_refused(m, r, v):
    if 0 <= v <= r <= m and m >= 1:
        return
    with pytest.raises(ValueError):
        epsilon_lower_bound(m, r, v, delta=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delta": math.nan},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": 1e-5, "confidence": 1.0},
        {"delta": 1e-5, "confidence": math.nan},
        {"delta": 1e-5, "curve": "laplace"},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        epsilon_lower_bound(100, 10, 10, **kwargs)


@pytest.mark.parametrize("value", [1.5, math.nan, True, "3"])
def test_counts_must_be_integers(value):
    with pytest.raises(TypeError):
        epsilon_lower_bound(100, value, 1, delta=1e-5)


@pytest.mark.parametrize("epsilon", [math.nan, -1.0, math.inf])
def test_a_curve_needs_a_finite_epsilon(epsilon):
    with pytest.raises(ValueError):
        blow_up_inverse("gaussian", epsilon, 1e-5)
