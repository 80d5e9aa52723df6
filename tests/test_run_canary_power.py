"""The run-level canary audit has power (issue 34.4): privacy bugs planted in the run's own
process FAIL it, honest runs do not. Marked ``e2e`` (a tiny federation per case, with the
default encryption and the default 2 000 canaries per client: minutes in all); run with
``pytest -m e2e tests/test_run_canary_power.py``. benchmarks/run_canary_power.py measures the
same cases, each bug three times per ε, and the false-positive rate over 20 honest runs per ε
(docs/audit.md).

The audit (audits/canary_audit.py) takes the larger of two one-run analyses: Steinke, Nasr &
Jagielski 2023 and the Gaussian f-DP analysis of Mahloujifar, Melis & Chaudhuri 2025. Where
they still cannot reach the requirement, the case is a strict xfail stating the measured
numbers: the requirement stays written down, and a stronger audit turns the xfail into a failure
that asks for the marker to go.
"""

from __future__ import annotations

import pytest
from planted_bugs import PLANTED
from tiny_runs import TINY_AUDIT

from audits.runner import audit_run
from secure_fedsa.config import RunConfig
from secure_fedsa.transports.federation import Progress, run_federation

pytestmark = pytest.mark.e2e

# measured over 3 runs each, 6 client audits (benchmarks/results/run-canary/power.json)
SIGMA_2_EPS_1 = (
    "σ/2 at ε = 1 (true ε 2.14): ε_LB 0.32-0.81 against the claim of 0.99 (a preliminary run "
    "had one client at 1.06, its other at 0.58): a leak of twice the claim is at the edge of "
    "what 2 000 canaries see in AdamW's released updates"
)
SIGMA_2_EPS_8 = "σ/2 at ε = 8 (true ε 19.1): ε_LB 5.70-6.40 against the claim of 8 (ceiling 8.19)"
ACCOUNTANT = (
    "the accountant reporting ε/2 (true ε 1.99 at claim 1, 16.0 at claim 8): ε_LB 0.45-0.94 at "
    "ε = 1 and 4.75-6.29 at ε = 8, below the claims"
)
EXPECTED = {
    ("sigma/7", 1.0): "fail",
    ("no-clip", 1.0): "fail",
    ("sigma/7", 8.0): "fail",
    ("no-clip", 8.0): "fail",
    ("sigma/2", 1.0): pytest.mark.xfail(strict=True, reason=SIGMA_2_EPS_1),
    ("sigma/2", 8.0): pytest.mark.xfail(strict=True, reason=SIGMA_2_EPS_8),
    ("accountant/2", 1.0): pytest.mark.xfail(strict=True, reason=ACCOUNTANT),
    ("accountant/2", 8.0): pytest.mark.xfail(strict=True, reason=ACCOUNTANT),
}


def _audited(tmp_path, planted: str, epsilon: float) -> dict:  # noqa: ANN001
    config = RunConfig(**{**TINY_AUDIT, "epsilon": epsilon})
    run_dir = tmp_path / "run"
    with PLANTED[planted]():
        run_federation(config, run_dir, Progress(message=lambda _: None))
    report = audit_run(run_dir)
    return next(c for c in report["checks"] if c["name"] == "run-canary-audit")


@pytest.mark.parametrize(
    ("planted", "epsilon"),
    [
        pytest.param(bug, eps, marks=[] if mark == "fail" else [mark], id=f"{bug}-eps{eps:g}")
        for (bug, eps), mark in EXPECTED.items()
    ],
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
        assert entry["max_certifiable_epsilon"] > 8.0  # 2 000 canaries can certify the claim
    assert all(
        "this run's releases are consistent with its claim at 95 % confidence" in f
        for f in check["findings"]
    )
