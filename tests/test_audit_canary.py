"""The empirical canary audit: it passes a correct DP-SGD and flags noise below what is accounted.

Both train Dirac gradient canaries through secure_fedsa's own ``train_dp`` (see
audits/canary_train.py) at σ = 2, q = 0.1, 30 steps (claimed ε ≈ 1.29 at δ = 1e-5).
"""

from __future__ import annotations

import pytest

from audits.accountants import pld_epsilon
from audits.check_canary import audit_history

pytestmark = pytest.mark.unit

EVENTS = [(2.0, 0.1, 30)]
DELTA = 1e-5


@pytest.fixture(scope="module")
def claimed():
    return pld_epsilon(EVENTS, DELTA)


def test_correct_mechanism_passes(claimed):
    outcome = audit_history(EVENTS, clip=1.0, delta=DELTA, canaries=1000, seed=0)
    assert outcome["epsilon_lower_bound"] <= claimed
    assert outcome["max_certifiable_epsilon"] > claimed  # the audit could have caught a leak


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
