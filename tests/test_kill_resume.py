"""kill -9 at a random moment of a real `secure-fedsa run` process, then --resume (P5).

Whatever the moment (training, between the ledger write and the state write, after the upload
was recorded but before metrics.jsonl), the resumed run must complete, never spend more than the
budget, and leave a run directory whose ledgers pay for every update that left a client: the
audit's ledger, accounting and egress checks must pass on it. The moment is drawn at random and
printed, so a failure can be replayed with the same delay.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from secure_fedsa.app.cli import main

pytestmark = pytest.mark.integration

FLAGS = [
    "--num-layers", "1", "--max-examples", "800", "--clients", "2", "--partition", "iid",
    "--rounds", "3", "--local-steps", "2", "--batch-size", "64", "--physical-batch-size", "64",
    "--max-length", "16", "--eval-examples", "10", "--epsilon", "8",
]  # fmt: skip
LEDGER = "clients/client-0/privacy_ledger.json"


def _entries(run_dir) -> int:
    try:
        return len(json.loads((run_dir / LEDGER).read_text())["entries"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_and_resume(run_dir, delay: float) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "secure_fedsa.app.cli",
        "run",
        "--out",
        str(run_dir),
        "--quiet",
    ]
    proc = subprocess.Popen(
        [*command, *FLAGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while _entries(run_dir) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # training has begun: the first round is being charged
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0, f"delay {delay:.3f}s"
    from audits.runner import audit_run

    return audit_run(run_dir)


def _check(report: dict, run_dir, delay: float) -> None:
    results = {c["name"]: c for c in report["checks"]}
    for name in ("ledger-integrity", "accounting", "egress"):
        assert results[name]["result"] == "pass", (delay, name, results[name]["findings"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 3
    for privacy in summary["privacy"].values():
        assert privacy["epsilon"] <= 8.0


# a kill -9 trial (an end-to-end federation in a subprocess): on demand, with its 8 siblings
@pytest.mark.e2e
def test_kill_9_at_a_random_moment_then_resume(tmp_path):
    delay = random.SystemRandom().uniform(0.0, 6.0)
    print(f"killing {delay:.3f}s after the first ledger entry")
    run_dir = tmp_path / "run"
    _check(_kill_and_resume(run_dir, delay), run_dir, delay)


@pytest.mark.e2e
@pytest.mark.parametrize("attempt", range(8))
def test_kill_9_at_many_random_moments(tmp_path, attempt):
    delay = random.SystemRandom().uniform(0.0, 12.0)
    print(f"attempt {attempt}: killing {delay:.3f}s after the first ledger entry")
    run_dir = tmp_path / "run"
    _check(_kill_and_resume(run_dir, delay), run_dir, delay)
