"""The honest baseline, "alone": each client trains on its own without DP (issue 31).

`secure-fedsa run` reports each client's accuracy next to what it would have had alone; the
baseline is exactly a local-only run without DP on the same split, computed once and cached;
like every accuracy it stays in the client's own directory unless the evaluation is released.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.app.alone import alone_accuracy, alone_config, cache_key
from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.transports.federation import load_summary, run_federation

pytestmark = pytest.mark.integration

FLAGS = [
    "--num-layers", "1", "--max-examples", "800", "--clients", "2", "--partition", "iid",
    "--rounds", "2", "--local-steps", "2", "--batch-size", "64", "--physical-batch-size", "64",
    "--max-length", "16", "--eval-examples", "10", "--quiet",
]  # fmt: skip
SMALL = dict(
    num_layers=1, max_examples=800, num_clients=2, partition="iid", rounds=2, local_steps=2,
    batch_size=64, physical_batch_size=64, max_length=16, eval_examples_per_round=10,
)  # fmt: skip


def test_the_baseline_is_local_training_without_any_protection_on_the_same_split():
    config = RunConfig(**SMALL, method="fedit", head="shared", epsilon=3.0, masking_threshold=2)
    alone = alone_config(config)
    assert (alone.method, alone.head, alone.dp, alone.encryption, alone.masking) == (
        "local", "local", False, False, False,
    )  # fmt: skip
    same_split = ("seed", "partition", "alpha", "max_examples", "num_clients", "rounds")
    assert all(getattr(alone, name) == getattr(config, name) for name in same_split)


def test_alone_trains_every_round_and_as_many_steps_as_a_finished_client():
    config = RunConfig(**{**SMALL, "num_clients": 3}, clients_per_round=2, finish_steps=5)
    alone = alone_config(config)
    assert alone.clients_per_round is None  # a site alone is never left out of a round
    assert alone.finish_steps == 5  # rounds x local steps + 5, like the finished client
    assert cache_key(config) == cache_key(config.replace(clients_per_round=None))
    assert cache_key(config) != cache_key(config.replace(finish_steps=0))


@given(
    epsilon=st.floats(0.5, 20),
    method=st.sampled_from(["fedsa", "fedit", "ffa"]),
    masking=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_the_cache_key_ignores_protections_and_methods_but_not_the_split(epsilon, method, masking):
    base = RunConfig(**SMALL)
    other = base.replace(epsilon=epsilon, method=method, masking=masking)
    assert cache_key(other) == cache_key(base)
    for change in ({"seed": 1}, {"alpha": 0.3}, {"rounds": 3}, {"lr": 1e-3}, {"num_clients": 3}):
        assert cache_key(base.replace(**change)) != cache_key(base)


def test_run_reports_each_clients_gain_from_joining_and_keeps_it_private(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *FLAGS, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    reference = tmp_path / "local"
    run_federation(
        RunConfig(**SMALL, method="local", dp=False, epsilon=None, encryption=False,
                  masking=False),
        reference,
    )  # fmt: skip
    alone = load_summary(reference)["evaluation"]["per_client"]
    for cid in ("client-0", "client-1"):
        evaluation = json.loads((out / "clients" / cid / "evaluation.json").read_text())
        assert evaluation["alone_accuracy"] == alone[cid]  # exactly the local run without DP
        assert evaluation["gain_from_joining"] == evaluation["accuracy"] - alone[cid]
        assert f"alone (local, no DP) {alone[cid]:.4f}" in printed.out
    assert "gain from joining" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert "alone_per_client" not in json.dumps(summary)  # not released
    # the second run with another budget reads the cache
    again = alone_accuracy(RunConfig(**SMALL, epsilon=2.0))
    assert again["cached"] is True and again["per_client"] == alone


def test_a_released_evaluation_carries_the_baseline_too(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *FLAGS, "--out", str(out), "--release-evaluation", "--rounds", "1"]) == 0
    evaluation = json.loads((out / "summary.json").read_text())["evaluation"]
    assert evaluation["released"] is True
    assert set(evaluation["alone_per_client"]) == set(evaluation["gain_from_joining"])
