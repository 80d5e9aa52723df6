"""Where a round's time goes: per client and phase in metrics.jsonl, summed in summary.json,
printed once at the end of a quiet run (which prints each of its lines once). Training time
follows the Poisson batch sizes, so it is private: only in each client's own rounds.jsonl."""

from __future__ import annotations

import json

import pytest

from secure_fedsa.app.cli import main
from secure_fedsa.engine.record import PHASES, phase_seconds

pytestmark = pytest.mark.integration

FLAGS = [
    "--num-layers", "1", "--max-examples", "800", "--clients", "2", "--partition", "iid",
    "--rounds", "2", "--local-steps", "2", "--batch-size", "64", "--physical-batch-size", "64",
    "--max-length", "16", "--eval-examples", "10", "--epsilon", "8",
]  # fmt: skip


def test_phase_seconds_sums_every_round_client_and_the_server():
    metrics = [
        {"clients": {"a": {"seconds": {"train": 1.0, "encrypt": 0.5}}, "b": {"seconds": {}}},
         "server_seconds": 0.25},
        {"clients": {"a": {"seconds": {"train": 2.0, "evaluate": 1.0, "bogus": 9.0}},
                     "b": {"status": "budget exhausted"}}},
    ]  # fmt: skip
    totals = phase_seconds(metrics, final_evaluation=3.0)
    assert totals == {
        "encrypt": 0.5, "aggregate": 0.25, "decrypt": 0.0, "evaluate": 1.0,
        "final_evaluation": 3.0,
    }  # fmt: skip


# a whole federation for its timing lines: on demand
@pytest.mark.e2e
def test_metrics_summary_and_a_quiet_log_show_where_the_time_went(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *FLAGS]) == 0
    err = capsys.readouterr().err
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for record in metrics:
        for entry in record["clients"].values():
            seconds = entry["seconds"]
            assert set(seconds) == set(PHASES)
            assert seconds["encrypt"] > 0 and seconds["evaluate"] > 0
            assert seconds["aggregate"] > 0 and seconds["decrypt"] > 0
        assert record["server_seconds"] > 0
    summary = json.loads((out / "summary.json").read_text())
    phases = summary["seconds_by_phase"]
    assert phases == pytest.approx(
        phase_seconds(metrics, final_evaluation=phases["final_evaluation"])
    )
    assert "train" not in phases and "seconds" not in summary  # both follow the batch sizes
    from secure_fedsa.site.private_stats import read_rounds

    for cid in ("client-0", "client-1"):
        assert all(r["train_seconds"] > 0 for r in read_rounds(out / "clients" / cid))
    # the split is printed once, and every log line once (no second root handler)
    lines = err.splitlines()
    assert sum("time: training" in line for line in lines) == 1
    round_lines = [line for line in lines if "round 1/2 |" in line]
    assert len(round_lines) == 1, round_lines
    assert not any(line.startswith("INFO:") for line in lines)
