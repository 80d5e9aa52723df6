"""The run-level canary audit has power (issue 34.4): privacy bugs planted in the run's own
process FAIL it, honest runs do not. Marked ``e2e`` (a tiny federation per case, with the
default encryption and the default 10 000 canaries per client: minutes in all); run with
``pytest -m e2e tests/test_run_canary_power.py``. benchmarks/run_canary_power.py measures the
same cases, each bug several times per ε, and the false-positive rate over 20 honest runs per ε
(docs/audit.md).

The audit (audits/check_run_canary.py) scores each canary on the noisy sums the client's DP-SGD
released on its coordinate and tests one set of guesses, chosen from public numbers before the
scores are read, with the Gaussian f-DP analysis of Mahloujifar, Melis & Chaudhuri 2025. Every
planted bug here leaks at least twice the claimed ε, the leak the guesses are chosen for; each
client fails with probability about 0.995 or more (docs/audit.md), so a case below fails by
chance about once in a hundred runs.
"""

from __future__ import annotations

import pytest
from planted_bugs import PLANTED
from tiny_runs import TINY_AUDIT

from audits.runner import audit_run
from secure_fedsa.config import DEFAULT_CANARIES, RunConfig
from secure_fedsa.transports.federation import Progress, run_federation

pytestmark = pytest.mark.e2e

# tests/planted_bugs.py; true ε of what ran at the claims of 1 and 8: σ/7 9.18 and 116.8, σ/2
# 2.14 and 19.1, the halved accountant 1.99 and 16.0, no clipping ∞ (docs/audit.md)
BUGS = ("sigma/7", "sigma/2", "no-clip", "accountant/2")


def _audited(tmp_path, planted: str, epsilon: float) -> dict:  # noqa: ANN001
    config = RunConfig(**{**TINY_AUDIT, "epsilon": epsilon})
    run_dir = tmp_path / "run"
    with PLANTED[planted]():
        run_federation(config, run_dir, Progress(message=lambda _: None))
    report = audit_run(run_dir)
    return next(c for c in report["checks"] if c["name"] == "run-canary-audit")


@pytest.mark.parametrize(
    ("planted", "epsilon"),
    [pytest.param(bug, eps, id=f"{bug}-eps{eps:g}") for bug in BUGS for eps in (1.0, 8.0)],
)
def test_a_planted_privacy_bug_fails_the_run_level_audit(tmp_path, planted, epsilon):
    check = _audited(tmp_path, planted, epsilon)
    # every client has the bug: the audit must catch it in each, not by luck in one
    outcomes = {cid: e["outcome"] for cid, e in check["evidence"]["clients"].items()}
    assert outcomes == {"client-0": "fail", "client-1": "fail"}, check["findings"]
    assert check["result"] == "fail"
    assert all("leak more than claimed" in f for f in check["findings"] if f.startswith("fail"))


def test_an_honest_run_passes_at_epsilon_1(tmp_path):
    check = _audited(tmp_path, "honest", 1.0)
    assert check["result"] == "pass", check["findings"]


def test_an_honest_run_passes_at_epsilon_8_with_the_default_canaries(tmp_path):
    check = _audited(tmp_path, "honest", 8.0)
    assert check["result"] == "pass", check["findings"]
    for entry in check["evidence"]["clients"].values():
        assert entry["epsilon_lower_bound"] < entry["claimed_epsilon"] < 8.0
        assert entry["max_certifiable_epsilon"] > 8.0  # the default canaries certify the claim
        assert entry["canaries"] == DEFAULT_CANARIES and entry["scored_on"] == "noisy sums"
    assert all(
        "this run's releases are consistent with its claim at 95 % confidence" in f
        for f in check["findings"]
    )
