"""The paper's variants end to end: rsLoRA and VeRA adapters, and a shared task head, each in a
small federation with DP, CKKS and masking on (the real encoder cut to one layer)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.model.encoder import tensor_group
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

CONFIG = {**TINY_DP, "rounds": 1, "num_clients": 3, "max_examples": 1000}


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _state(run_dir, cid):
    return torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]


@pytest.fixture(scope="module")
def shared_head_run(tmp_path_factory):
    """FedIT with rsLoRA and the head aggregated: the paper's baseline protocol."""
    run_dir = tmp_path_factory.mktemp("shared-head") / "run"
    run_federation(RunConfig(**CONFIG, method="fedit", head="shared", adapter="rslora"), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def vera_run(tmp_path_factory):
    """FedSA-VeRA: λ_d shared, λ_b and head local."""
    run_dir = tmp_path_factory.mktemp("vera") / "run"
    run_federation(RunConfig(**CONFIG, method="fedsa", adapter="vera", vera_r=64), run_dir)
    return run_dir


def test_a_shared_head_leaves_encrypted_and_every_client_loads_the_same(shared_head_run):
    setup = json.loads((shared_head_run / "setup.json").read_text())
    groups = {tensor_group(m["name"]) for m in setup["manifest"]}
    assert groups == {"A", "B", "head"}
    for cid in ("client-0", "client-1", "client-2"):
        for record in _lines(shared_head_run / "egress" / f"{cid}.jsonl"):
            if record["kind"] == "update":
                assert record["form"] == "ciphertext"
                assert any(t.startswith("head.") for t in record["tensors"])
    heads = [
        {k: v for k, v in _state(shared_head_run, c).items() if k.startswith("head.")}
        for c in ("client-0", "client-1", "client-2")
    ]
    for name in heads[0]:  # the aggregate replaced each client's own head
        torch.testing.assert_close(heads[0][name], heads[1][name], rtol=0, atol=1e-6)
        torch.testing.assert_close(heads[0][name], heads[2][name], rtol=0, atol=1e-6)
    rounds = _lines(shared_head_run / "metrics.jsonl")
    assert [r["aggregate"]["status"] for r in rounds] == ["applied"]
    config = json.loads((shared_head_run / "config.json").read_text())
    assert config["head"] == "shared" and config["adapter"] == "rslora"


def test_the_audit_accepts_a_configured_shared_head_and_nothing_more(shared_head_run, tmp_path):
    import shutil

    from audits.runner import audit_run

    report = audit_run(shared_head_run)
    egress = next(c for c in report["checks"] if c["name"] == "egress")
    assert egress["result"] == "pass", egress
    # the same files under a config that keeps the head local: the head's departure is a failure
    copy = tmp_path / "run"
    shutil.copytree(shared_head_run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "head": "local"}))
    egress = next(c for c in audit_run(copy)["checks"] if c["name"] == "egress")
    assert egress["result"] == "fail"
    assert any("head" in line for line in egress["findings"]), egress


def test_fedsa_vera_shares_lambda_d_only_and_saves_a_peft_adapter(vera_run):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModel

    from secure_fedsa.model.encoder import resolve_model_path

    setup = json.loads((vera_run / "setup.json").read_text())
    names = [m["name"] for m in setup["manifest"]]
    assert names and all(".vera_lambda_d" in n for n in names)
    rounds = _lines(vera_run / "metrics.jsonl")
    assert [r["aggregate"]["status"] for r in rounds] == ["applied"]
    states = [_state(vera_run, c) for c in ("client-0", "client-1", "client-2")]
    for name in names:  # the aggregated side is identical on every client
        torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=1e-6)
    local = [n for n in states[0] if ".vera_lambda_b" in n]
    assert local and any(
        not torch.allclose(states[0][n], states[1][n]) for n in local
    )  # λ_b stays each client's own
    summary = json.loads((vera_run / "summary.json").read_text())
    assert all(0 < p["epsilon"] <= 8.0 for p in summary["privacy"].values())
    # the exported adapter is an ordinary peft VeRA adapter carrying the client's λ vectors
    adapter = vera_run / "adapters" / "client-1"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "VERA"
    directory = resolve_model_path(None)
    base = AutoModel.from_pretrained(
        str(directory), config=AutoConfig.from_pretrained(str(directory), num_hidden_layers=1)
    )
    loaded = PeftModel.from_pretrained(base, str(adapter)).state_dict()
    for name, value in states[1].items():
        if ".vera_lambda_" in name:
            key = name.removeprefix("encoder.").replace("_default", ".default")
            torch.testing.assert_close(loaded[key], value)


def test_bad_adapter_and_head_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown adapter"):
        RunConfig(adapter="dora")
    with pytest.raises(ConfigError, match="local shares nothing"):
        RunConfig(method="local", head="shared")
    with pytest.raises(ConfigError, match="unknown head"):
        RunConfig(head="global")
