"""One round engine, two transports: the same run in-process and on Flower writes the same files.

The Flower side is the real ServerApp and ClientApp over the in-memory grid
(tests/flower_grid.py); each site holds one partition of the bundled dataset, exactly as the
in-process federation splits it, and both runs use one key directory. The real Flower processes
are tests/test_flower_deployment.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flower_grid import FakeGrid, _task_identity, run, site_context  # noqa: E402, F401
from flwr.app import Context  # noqa: E402

from secure_fedsa import options  # noqa: E402
from secure_fedsa.config import RunConfig  # noqa: E402

pytestmark = pytest.mark.integration

SMALL = dict(
    num_layers=1,
    max_examples=400,
    num_clients=2,
    partition="iid",
    rounds=2,
    local_steps=1,
    batch_size=32,
    physical_batch_size=32,
    max_length=12,
    eval_examples_per_round=16,
    seed=5,
)
# what depends on the machine's speed, not on the run
TIMINGS = {"seconds", "server_seconds", "seconds_by_phase"}


def run_config(config: RunConfig, **deployment: object) -> dict:
    """``config`` as a Flower run config (the option table's keys and spellings)."""
    out: dict = {}
    for key, option in options.flower_options().items():
        value = getattr(config, option.name)
        if value is None:  # TOML has no null: a run config says 0 or ""
            value = {"int": 0, "float": 0.0}.get(option.kind, "")
        elif option.kind == "list":
            value = ",".join(value)
        out[key] = value
    return {**out, **deployment}


def _sites(tmp: Path, keys: Path, config: RunConfig, flower: dict) -> dict[int, Context]:
    """One context per site: partition i of the run's dataset, named client-i."""
    return {
        100 + i: site_context(
            100 + i,
            {
                "partition-id": i,
                "num-partitions": config.num_clients,
                "keys": str(keys / "client.keys"),
                "identity": str(keys / "identities" / f"client-{i}.key"),
                "state-dir": str(tmp / f"client-{i}"),
                # the site pins the masking the operator chose (Flower sites default to on)
                "require-masking": config.masking and config.encryption,
            },
            flower,
        )
        for i in range(config.num_clients)
    }


def _keys(tmp: Path, config: RunConfig) -> Path:
    """One key set for both runs, each client's weight fixed by its training records."""
    from secure_fedsa.site.keys import init_keys
    from secure_fedsa.site.prepare_data import prepare

    sizes = {cid: data.num_train for cid, data in prepare(config).clients.items()}
    init_keys(tmp / "keys", max_clients=config.max_clients, client_ids=list(sizes), sizes=sizes)
    return tmp / "keys"


def _flower(tmp: Path, config: RunConfig, keys: Path, **deployment: object) -> tuple[dict, Path]:
    """``config`` run on the Flower grid; (its summary, the server's run directory)."""
    from secure_fedsa.transports.flower.protocol import Deployment

    run_dir = tmp / "flower-server"
    flower = run_config(
        config, **{"min-clients": config.num_clients, "keys-dir": str(keys),
                   "run-dir": str(run_dir), "wait-for-nodes": 0.0, "round-timeout": 600.0},
        **deployment,
    )  # fmt: skip
    # the deployment derives exactly this configuration from its run config
    assert Deployment.from_run_config(flower).config == config.replace(keys_dir=None)
    return run(FakeGrid(_sites(tmp / "sites", keys, config, flower)), flower), run_dir


def _without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _files(run_dir: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return _without_timings(summary), _without_timings(metrics)  # type: ignore[return-value]


def test_in_process_and_flower_write_the_same_summary_and_metrics(tmp_path):
    """Same configuration and seed, no DP (DP noise comes from the OS, never from the seed):
    summary.json and metrics.jsonl are the same on both transports, timings aside. With the
    evaluation released, so that every accuracy is compared too; CKKS and masking on."""
    from secure_fedsa.transports.federation import run_federation

    keys = _keys(tmp_path, RunConfig(**SMALL))
    config = RunConfig(**SMALL, dp=False, epsilon=None, release_evaluation=True)
    run_federation(config.replace(keys_dir=str(keys)), tmp_path / "in-process")
    summary, run_dir = _flower(tmp_path, config, keys)
    assert summary["status"] == "completed"

    local, flower = _files(tmp_path / "in-process"), _files(run_dir)
    assert flower[1] == local[1]  # metrics.jsonl, round by round
    assert flower[0] == local[0]  # summary.json
    # not vacuous: both rounds aggregated both masked, encrypted updates and were evaluated
    for record in local[1]:
        assert record["aggregate"]["status"] == "applied" and record["contributors"] == 2
        assert record["masking"]["masked_with"] == ["client-0", "client-1"]
        assert record["upload_bytes"] > 0 and record["mean_accuracy"] is not None
    assert set(local[0]["evaluation"]["per_client"]) == {"client-0", "client-1"}


def test_flower_with_a_shared_head_on_three_classes_accepts_the_updates(tmp_path):
    """head = shared on 3-class data (tweets) over Flower: the server's head is the sites'
    (3 labels), so their updates are accepted and aggregated (the server used to build a
    2-label head, its manifest hash differed from the sites' and it rejected every update)."""
    config = RunConfig(
        **{**SMALL, "rounds": 1, "max_examples": 300}, dataset="tweets", head="shared",
        dp=False, epsilon=None, encryption=False,
    )  # fmt: skip
    summary, run_dir = _flower(tmp_path, config, _keys(tmp_path, config))
    assert summary["status"] == "completed"
    (record,) = _files(run_dir)[1]
    assert record["rejected"] == [] and record["contributors"] == 2
    assert record["aggregate"]["status"] == "applied"
    setup = json.loads((run_dir / "setup.json").read_text())
    assert {"name": "head.classifier.weight", "shape": [3, 384]} in setup["manifest"]
