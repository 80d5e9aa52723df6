"""End to end, in process, on the real encoder cut to one layer and real Rotten Tomatoes text."""

from __future__ import annotations

import json

import pytest
import torch

from secure_fedsa.config import RunConfig
from secure_fedsa.model.encoder import tensor_group
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

SMALL = dict(
    num_layers=1,
    max_examples=600,
    num_clients=3,
    partition="dirichlet",
    alpha=0.5,
    rounds=3,
    local_steps=8,
    batch_size=32,
    physical_batch_size=32,
    max_length=32,
    lr=5e-3,
    eval_examples_per_round=40,
    seed=0,
)


def _states(run_dir):
    states = {}
    for client_dir in sorted((run_dir / "clients").iterdir()):
        states[client_dir.name] = torch.load(client_dir / "state.pt", weights_only=True)["state"]
    return states


def _group(state, group):
    return {k: v for k, v in state.items() if tensor_group(k) == group}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# What each method shares shows after a short run; whether it learns needs SMALL's length
SHORT = {**SMALL, "rounds": 2, "local_steps": 2}
METHODS = ("fedsa", "fedit", "ffa", "local")


def _plain(method: str, sizes: dict) -> RunConfig:
    return RunConfig(method=method, dp=False, epsilon=None, encryption=False, **sizes)


@pytest.fixture(scope="module")
def plain_runs(shared_run):
    """One short run per method, DP and encryption off (their own tests are below)."""
    return {method: shared_run(_plain(method, SHORT)) for method in METHODS}


@pytest.mark.e2e  # four federations of 3 rounds x 8 steps: on demand
@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns_above_chance(shared_run, method):
    run_dir, summary = shared_run(_plain(method, SMALL))
    counts = {
        d.name: json.loads((d / "evaluation.json").read_text())["label_counts"]
        for d in (run_dir / "clients").iterdir()
    }
    # chance = the majority-class rate of each client's data, averaged over clients
    majority = sum(max(c) / sum(c) for c in counts.values()) / len(counts)
    assert summary["evaluation"]["mean"] > 0.5
    assert summary["evaluation"]["mean"] >= majority - 0.05
    assert len(run_dir.joinpath("metrics.jsonl").read_text().splitlines()) == SMALL["rounds"]


def test_fedsa_shares_a_only(plain_runs):
    run_dir, _ = plain_runs["fedsa"]
    states = list(_states(run_dir).values())
    for other in states[1:]:
        assert _same(_group(states[0], "A"), _group(other, "A"))  # aggregated A
        assert not _same(_group(states[0], "B"), _group(other, "B"))  # local B
        assert not _same(_group(states[0], "head"), _group(other, "head"))


def test_fedit_shares_a_and_b(plain_runs):
    states = list(_states(plain_runs["fedit"][0]).values())
    for other in states[1:]:
        assert _same(_group(states[0], "A"), _group(other, "A"))
        assert _same(_group(states[0], "B"), _group(other, "B"))
        assert not _same(_group(states[0], "head"), _group(other, "head"))


def test_ffa_keeps_a_at_its_initial_value(plain_runs, tiny_model):
    initial = _group(tiny_model.adapter_state(), "A")  # same seed, same model
    states = list(_states(plain_runs["ffa"][0]).values())
    for state in states:
        assert _same(initial, _group(state, "A"))
    for other in states[1:]:
        assert _same(_group(states[0], "B"), _group(other, "B"))


def test_local_sends_nothing(plain_runs):
    run_dir, _ = plain_runs["local"]
    egress = run_dir / "egress"
    assert not egress.exists() or all(p.stat().st_size == 0 for p in egress.iterdir())
    states = list(_states(run_dir).values())
    assert not _same(_group(states[0], "A"), _group(states[1], "A"))


def test_run_directory_contents(plain_runs):
    run_dir, summary = plain_runs["fedsa"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "fedsa" and config["dp"] is False
    assert set(summary["evaluation"]) >= {"per_client", "mean", "weighted_mean"}
    assert "no differential privacy" in json.dumps(summary).lower()
    for cid in summary["evaluation"]["per_client"]:
        adapter = run_dir / "adapters" / cid
        assert (adapter / "adapter_config.json").is_file()
        assert (adapter / "adapter_model.safetensors").is_file()
        assert (adapter / "head.safetensors").is_file()


def test_exported_adapter_loads_with_peft_alone(plain_runs):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from secure_fedsa.model.encoder import default_model_path

    run_dir, _ = plain_runs["fedsa"]
    cid = "client-1"
    state = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]
    path = str(default_model_path())
    base = AutoModel.from_pretrained(
        path, config=AutoConfig.from_pretrained(path, num_hidden_layers=1)
    )
    model = PeftModel.from_pretrained(base, str(run_dir / "adapters" / cid))
    loaded = dict(model.named_parameters())
    for name, value in state.items():
        if tensor_group(name) in ("A", "B"):
            peft_name = name.removeprefix("encoder.")
            assert torch.equal(loaded[peft_name], value), name
    head = load_file(str(run_dir / "adapters" / cid / "head.safetensors"))
    assert torch.equal(head["classifier.weight"], state["head.classifier.weight"])


def test_same_seed_same_result(plain_runs, tmp_path):
    again = run_federation(_plain("fedsa", SHORT), tmp_path / "again")
    assert again["evaluation"] == plain_runs["fedsa"][1]["evaluation"]
