"""The installed-mechanism test: it passes a correct DP-SGD and flags noise below what is accounted.

Both train Dirac gradient canaries through secure_fedsa's own ``train_dp`` (see
audits/canary_train.py) at σ = 2, q = 0.1, 30 steps (claimed ε ≈ 1.29 at δ = 1e-5), and at
σ = 0.8 (claimed ε ≈ 6.6), where only the Gaussian f-DP analysis can see noise cut to σ/7.
"""

from __future__ import annotations

import pytest

from audits.accountants import pld_epsilon
from audits.canary_audit import verdict
from audits.check_canary import audit_history

EVENTS = [(2.0, 0.1, 30)]
DELTA = 1e-5


@pytest.fixture(scope="module")
def claimed():
    return pld_epsilon(EVENTS, DELTA)


def test_correct_mechanism_passes(claimed):
    outcome = audit_history(EVENTS, clip=1.0, delta=DELTA, canaries=1000, seed=0)
    assert outcome["epsilon_lower_bound"] <= claimed
    assert outcome["max_certifiable_epsilon"] > claimed  # the audit could have caught a leak
    assert set(outcome["lower_bounds"]) == {"epsilon-delta", "gaussian-fdp"}
    assert max(outcome["lower_bounds"].values()) == outcome["epsilon_lower_bound"]


@pytest.mark.parametrize("noise_scale, expected", [(1.0, "PASS"), (1 / 7, "FAIL")])
def test_sigma_over_7_at_a_high_claim_needs_the_f_dp_bound(noise_scale, expected):
    events = [(0.8, 0.1, 30)]
    claimed = pld_epsilon(events, DELTA)  # ≈ 6.58: above anything the (ε, δ) analysis certifies
    outcome = audit_history(
        events, clip=1.0, delta=DELTA, canaries=2000, seed=0, noise_scale=noise_scale
    )
    word = verdict(claimed, outcome["epsilon_lower_bound"], outcome["max_certifiable_epsilon"])
    assert word == expected
    assert outcome["lower_bounds"]["epsilon-delta"] < claimed
    if expected == "FAIL":  # only the top guessed "in" refute it: unsampled canaries look out
        best = max(
            (t for t in outcome["tried"] if t["analysis"] == "gaussian-fdp"),
            key=lambda t: t["lower_bound"],
        )
        assert best["k_out"] == 0 and best["lower_bound"] > claimed
        symmetric = [t["lower_bound"] for t in outcome["tried"] if t["k_out"] == t["k_in"]]
        assert max(symmetric) <= claimed


@pytest.mark.parametrize("noise_scale", [0.1, 0.0])
def test_noise_below_the_accounted_is_flagged(claimed, noise_scale):
    outcome = audit_history(
        EVENTS, clip=1.0, delta=DELTA, canaries=1000, seed=0, noise_scale=noise_scale
    )
    assert outcome["epsilon_lower_bound"] > claimed


def test_ghost_clipping_mode_is_audited_too(claimed):
    outcome = audit_history(
        EVENTS, clip=1.0, delta=DELTA, canaries=1000, seed=1, noise_scale=0.0, mode="ghost"
    )
    assert outcome["epsilon_lower_bound"] > claimed
