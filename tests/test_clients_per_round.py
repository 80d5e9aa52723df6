"""Clients per round (issue 31), as a skeptic checks it, against the real encoder, Opacus and
TenSEAL: K of the clients are drawn each round from the seed and the round number; only they
train, are charged and send anything; secure aggregation runs among them; every client applies
the aggregate and evaluates.

The run below (seed 3, 3 clients, K = 2) draws client-0 and client-1 in round 1, client-0 and
client-2 in round 2: each client is left out of some round.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import TINY_DP

from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.model.sharing import Manifest, flatten
from secure_fedsa.sampling import rounds_sampled, sampled
from secure_fedsa.secagg.protocol import default_threshold
from secure_fedsa.site import client as client_module
from secure_fedsa.site.client import WEIGHT_UNIT
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

CONFIG = {
    **TINY_DP,
    "num_clients": 3,
    "max_examples": 1200,
    "clients_per_round": 2,
    "seed": 3,
}
CLIENTS = ["client-0", "client-1", "client-2"]
DRAWN = {1: ["client-0", "client-1"], 2: ["client-0", "client-2"]}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _manifest(run_dir: Path) -> Manifest:
    setup = json.loads((run_dir / "setup.json").read_text())
    return Manifest(tuple((m["name"], tuple(m["shape"])) for m in setup["manifest"]))


def _saved(run_dir: Path, cid: str) -> dict:
    return torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)


# -- the draw ---------------------------------------------------------------------------------
def test_the_draw_is_reproducible_uniform_and_covers_every_client():
    ids = [f"client-{i}" for i in range(10)]
    first = [sampled(ids, 3, seed=7, round_number=r) for r in range(1, 2001)]
    assert first == [sampled(ids, 3, seed=7, round_number=r) for r in range(1, 2001)]
    assert all(len(d) == 3 == len(set(d)) and d == sorted(d, key=ids.index) for d in first)
    counts = Counter(c for d in first for c in d)
    assert set(counts) == set(ids)
    assert all(abs(n - 600) < 90 for n in counts.values()), counts  # 2000 · 3/10, ±4.5 sd
    assert first != [sampled(ids, 3, seed=8, round_number=r) for r in range(1, 2001)]
    assert sampled(ids, None, seed=7, round_number=1) == ids
    assert sampled(ids, 10, seed=7, round_number=1) == ids
    assert rounds_sampled(ids, "client-4", 3, seed=7, rounds=range(1, 2001)) == counts["client-4"]
    # the run below
    assert {r: sampled(CLIENTS, 2, seed=3, round_number=r) for r in (1, 2)} == DRAWN


# -- refused before anything is written ------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clients-per-round", "1"], "too few for secure aggregation"),
        (["--clients-per-round", "4"], "between 1 and the number of clients"),
        (["--clients-per-round", "0"], "between 1 and the number of clients"),
        (["--clients-per-round", "2", "--masking-threshold", "3"], "masking threshold 3"),
    ],
)
def test_an_invalid_k_is_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code = main(["run", "--clients", "3", *flags, "--out", str(out), "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_k_one_is_allowed_without_masking_and_k_is_pinned_on_resume(tmp_path, capsys):
    RunConfig(num_clients=3, clients_per_round=1, masking=False)
    RunConfig(num_clients=3, clients_per_round=1, encryption=False, masking=False)
    RunConfig(num_clients=1, clients_per_round=1)  # every client: nothing is drawn
    with pytest.raises(ConfigError, match="too few"):
        RunConfig(num_clients=4, clients_per_round=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(RunConfig(num_clients=3).to_dict()))
    code = main(["run", "--resume", str(run), "--clients-per-round", "2", "--quiet"])
    assert code == 2 and "conflicts with the run's stored configuration" in capsys.readouterr().err


def test_flower_takes_k_from_the_run_config_and_refuses_k_below_min_clients():
    from secure_fedsa.transports.flower.protocol import RUN_KEYS, Deployment

    assert RUN_KEYS["clients-per-round"] == "clients_per_round"
    base = {"clients": 5, "min-clients": 2}
    assert (
        Deployment.from_run_config({**base, "clients-per-round": 0}).config.clients_per_round
        is None
    )
    deployment = Deployment.from_run_config({**base, "clients-per-round": 3})
    assert deployment.config.clients_per_round == 3 and deployment.round_clients == 3
    with pytest.raises(ConfigError, match="below min-clients"):
        Deployment.from_run_config({**base, "min-clients": 3, "clients-per-round": 2})


# -- a sampled run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sampled") / "run"
    summary = run_federation(RunConfig(**CONFIG), run_dir)
    return run_dir, summary


def test_only_drawn_clients_train_spend_and_send(sampled_run):
    run_dir, _ = sampled_run
    metrics = _lines(run_dir / "metrics.jsonl")
    for record in metrics:
        drawn = DRAWN[record["round"]]
        assert record["sampled"] == drawn
        for cid, entry in record["clients"].items():
            assert entry["status"] == ("trained" if cid in drawn else "not sampled"), entry
            assert entry["aggregate"] == "applied"  # everyone received the new shared tensors
        # secure aggregation among the drawn clients only, its threshold computed for them
        assert record["masking"]["participants"] == drawn
        assert record["masking"]["masked_with"] == drawn
        assert record["masking"]["threshold"] == default_threshold(2)
        assert record["aggregate"]["contributors"] == drawn
    for cid in CLIENTS:
        trained = [r for r, drawn in DRAWN.items() if cid in drawn]
        ledger = json.loads((run_dir / "clients" / cid / "privacy_ledger.json").read_text())
        assert [e["round"] for e in ledger["entries"]] == trained  # charged only when drawn
        egress = _lines(run_dir / "egress" / f"{cid}.jsonl")
        assert sorted({e["round"] for e in egress}) == trained  # nothing sent when not drawn
        for number in trained:
            kinds = [e["kind"] for e in egress if e["round"] == number]
            assert sorted(kinds) == [
                "secagg-keys", "secagg-reveal", "secagg-shares", "secagg-survivors", "update"
            ]  # fmt: skip
        # the ε metrics.jsonl shows does not move in a round the client sat out
        spent = [r["clients"][cid]["epsilon_spent"] for r in metrics]
        if cid == "client-1":
            assert spent[1] == spent[0] > 0
        if cid == "client-2":
            assert spent[0] == 0.0 < spent[1]


def test_each_client_is_planned_for_the_rounds_it_is_drawn_in(sampled_run):
    run_dir, summary = sampled_run
    setup = json.loads((run_dir / "setup.json").read_text())
    steps = CONFIG["local_steps"]
    assert setup["privacy"]["client-0"]["planned_steps"] == 2 * steps
    assert setup["privacy"]["client-1"]["planned_steps"] == steps
    assert setup["privacy"]["client-2"]["planned_steps"] == steps
    # fewer rounds, less noise for the same budget; each ends at the budget, never above it
    sigma = {cid: setup["privacy"][cid]["noise_multiplier"] for cid in CLIENTS}
    assert sigma["client-1"] < sigma["client-0"]
    for cid in CLIENTS:
        assert 7.5 < summary["privacy"][cid]["epsilon"] <= CONFIG["epsilon"]


def test_the_sum_of_a_sampled_round_decrypts_exactly_and_reaches_the_left_out(sampled_run):
    run_dir, _ = sampled_run
    setup = json.loads((run_dir / "setup.json").read_text())
    manifest = _manifest(run_dir)
    weights = {c: setup["clients"][c]["train"] / WEIGHT_UNIT for c in DRAWN[2]}
    expected = sum(
        w * flatten(_saved(run_dir, c)["trained"], manifest) for c, w in weights.items()
    ) / sum(weights.values())
    for cid in CLIENTS:
        state = _saved(run_dir, cid)
        assert float(np.max(np.abs(flatten(state["state"], manifest) - expected))) < 1e-7, cid
    # client-1 sat round 2 out: it loaded the new A and kept its own B and head of round 1
    left_out = _saved(run_dir, "client-1")
    assert left_out["trained_round"] == 1
    own = [n for n in left_out["state"] if n not in manifest.names]
    assert own and all(torch.equal(left_out["state"][n], left_out["trained"][n]) for n in own)


def test_the_audit_accepts_a_sampled_run(sampled_run):
    from audits.runner import audit_run

    run_dir, _ = sampled_run
    report = audit_run(run_dir)
    verdicts = {c["name"]: c["result"] for c in report["checks"]}
    for name in ("run-directory", "egress", "accounting", "ledger-integrity", "aggregates"):
        assert verdicts[name] == "pass", (name, report["checks"])


def test_a_left_out_client_that_rejects_an_aggregate_keeps_the_last_one_it_loaded(
    tmp_path, monkeypatch
):
    """client-1 trained round 1 (from the initial A), sat out round 2 and rejects round 2's
    aggregate: it keeps round 1's aggregate, not the A it started its last trained round with
    (which an earlier version went back to)."""
    real = client_module.Client.apply_aggregate

    def altered(self, data, round_number, session, **checks):  # noqa: ANN001, ANN003
        if self.client_id == "client-1" and round_number == 2:
            data = data[:-1] + bytes([data[-1] ^ 1])  # the server's signature no longer holds
        return real(self, data, round_number, session, **checks)

    monkeypatch.setattr(client_module.Client, "apply_aggregate", altered)
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**CONFIG), run_dir)
    round2 = _lines(run_dir / "metrics.jsonl")[1]
    assert list(round2["aggregate"]["rejected_by"]) == ["client-1"]
    manifest = _manifest(run_dir)
    first_aggregate = _saved(run_dir, "client-0")["start_shared"].numpy()  # round 2's start
    second_aggregate = flatten(_saved(run_dir, "client-2")["state"], manifest)
    left_out = _saved(run_dir, "client-1")
    kept = flatten(left_out["state"], manifest)
    initial = left_out["start_shared"].numpy()  # it started round 1, its last, from these
    assert float(np.max(np.abs(kept - first_aggregate))) < 1e-7
    assert float(np.max(np.abs(kept - initial))) > 1e-4
    assert float(np.max(np.abs(kept - second_aggregate))) > 1e-4
