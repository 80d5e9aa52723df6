"""``--adapter-layers N``: the adapter goes on the top N encoder layers only, and nothing else
about the run changes (sharing, DP, encryption). Old configurations, written before the option
existed, keep every layer adapted."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_runs import TINY_DP

from secure_fedsa.app.cli import build_parser, config_from_args, resumed_config
from secure_fedsa.config import CONFIG_VERSION, RunConfig
from secure_fedsa.errors import ConfigError, ModelError
from secure_fedsa.model.encoder import ModelSpec, adapted_layers, build_model, tensor_group
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration


def _layer(name: str) -> int:
    return int(name.split(".layer.")[1].split(".")[0])


@pytest.mark.parametrize(
    "count, total, expected",
    [
        (None, 6, None),
        (2, 6, [4, 5]),
        (1, 6, [5]),
        (5, 6, [1, 2, 3, 4, 5]),
        (6, 6, None),
        (9, 2, None),
    ],
)
def test_the_top_layers_are_chosen(count, total, expected):
    assert adapted_layers(ModelSpec(adapter_layers=count), total) == expected


def test_a_non_positive_count_is_refused_by_the_model_as_well():
    with pytest.raises(ModelError, match="positive"):
        adapted_layers(ModelSpec(adapter_layers=0), 6)


@pytest.mark.parametrize("adapter", ["lora", "vera"])
def test_only_the_top_layers_get_trainable_adapter_tensors(adapter):
    model = build_model(
        ModelSpec(num_layers=2, adapter_layers=1, adapter=adapter, vera_r=16),
        num_labels=2,
        seed=0,
    )
    adapter_names = [n for n, _ in model.named_parameters() if tensor_group(n) in ("A", "B")]
    assert adapter_names and {_layer(n) for n in adapter_names} == {1}
    assert {tensor_group(n) for n in adapter_names} == {"A", "B"}
    full = build_model(ModelSpec(num_layers=2, adapter=adapter, vera_r=16), num_labels=2, seed=0)
    full_names = [n for n, _ in full.named_parameters() if tensor_group(n) in ("A", "B")]
    assert {_layer(n) for n in full_names} == {0, 1}
    assert len(full_names) == 2 * len(adapter_names)


def test_no_gradient_reaches_the_layers_below():
    """The point of adapting the top only: backpropagation stops at the lowest adapted layer."""
    model = build_model(ModelSpec(num_layers=2, adapter_layers=1), num_labels=2, seed=0)
    model.set_trainable(frozenset({"A", "B", "head"}))
    seen = []
    layer0 = model.encoder.base_model.model.encoder.layer[0]
    layer0.register_full_backward_hook(lambda *args: seen.append("layer 0"))
    ids = torch.randint(1000, 2000, (3, 8))
    loss = model(ids, torch.ones_like(ids)).sum()
    loss.backward()
    assert seen == []
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_version_2_configuration_reads_as_every_layer_adapted():
    data = RunConfig(adapter_layers=3).to_dict()
    assert data["version"] == CONFIG_VERSION == 4
    newer = ("adapter_layers", "release_evaluation", "accountant")
    old = {k: v for k, v in data.items() if k not in newer} | {"version": 2}
    assert RunConfig.from_dict(old).adapter_layers is None
    # read as the version 3 it became, still accounted add/remove-one: readable, never trained
    assert RunConfig.from_dict(old).version == 3
    assert RunConfig.from_dict(old).neighbouring_relation == "add/remove-one"
    with pytest.raises(ConfigError, match="version 2"):
        RunConfig.from_dict({**old, "adapter_layers": 2})
    assert RunConfig.from_dict(json.loads(json.dumps(data))).adapter_layers == 3


@given(value=st.one_of(st.integers(-3, 8), st.booleans(), st.floats(0, 4), st.text(max_size=3)))
@settings(max_examples=60, deadline=None)
def test_validation_accepts_exactly_positive_integers(value):
    valid = isinstance(value, int) and not isinstance(value, bool) and value > 0
    try:
        config = RunConfig(adapter_layers=value)
    except ConfigError as exc:
        assert not valid
        assert "adapter-layers" in str(exc)
    else:
        assert valid and config.adapter_layers == value


def test_the_command_line_takes_a_count_or_all_and_resume_refuses_a_change():
    parser = build_parser()
    args = parser.parse_args(["run", "--adapter-layers", "all"])
    assert config_from_args(args).adapter_layers is None
    args = parser.parse_args(["run", "--adapter-layers", "2"])
    assert config_from_args(args).adapter_layers == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--adapter-layers", "0"])
    stored = RunConfig(adapter_layers=None)
    resume = parser.parse_args(["run", "--adapter-layers", "2"])
    with pytest.raises(ConfigError, match="--adapter-layers 2 conflicts"):
        resumed_config(stored, resume)
    same = parser.parse_args(["run", "--adapter-layers", "all"])
    assert resumed_config(stored, same) == stored


@pytest.mark.e2e  # a whole federation no attacker story needs: on demand and in CI
def test_a_federation_shares_only_the_adapted_layers_a(tmp_path):
    config = RunConfig(**{**TINY_DP, "num_layers": 2, "rounds": 1}, adapter_layers=1)
    run_federation(config, tmp_path / "run")
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    shared = [m["name"] for m in setup["manifest"]]
    assert shared and all(tensor_group(n) == "A" and _layer(n) == 1 for n in shared)
    for cid in ("client-0", "client-1"):
        lines = (tmp_path / "run" / "egress" / f"{cid}.jsonl").read_text().splitlines()
        updates = [json.loads(x) for x in lines if json.loads(x)["kind"] == "update"]
        assert updates and all(u["form"] == "ciphertext" for u in updates)
        assert all(set(u["tensors"]) == set(shared) for u in updates)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert all(p["epsilon"] <= 8.0 for p in summary["privacy"].values())


def test_the_configuration_says_how_many_layers_carry_the_adapter():
    """Issue 35: the top 2 of a 1-layer encoder are recorded as 1, on the command line as in the
    library and in a configuration read back; an explicit count above the layers is refused."""
    from secure_fedsa.app.cli import fit_layers
    from secure_fedsa.app.sweep.report import render_summary
    from secure_fedsa.app.sweep.spec import SweepSpec

    parser = build_parser()
    args = parser.parse_args(["run", "--num-layers", "1"])
    config = fit_layers(config_from_args(args), args)
    assert config.adapter_layers == 1 and RunConfig(num_layers=1).adapter_layers == 1
    old = {**RunConfig().to_dict(), "num_layers": 1, "adapter_layers": 2}  # as written before
    assert RunConfig.from_dict(old) == config
    assert RunConfig(num_layers=3).adapter_layers == 2  # below: as given
    with pytest.raises(ConfigError, match="--adapter-layers 2 is more than the 1 encoder layer "):
        config_from_args(parser.parse_args(["run", "--num-layers", "1", "--adapter-layers", "2"]))
    deep = parser.parse_args(["run", "--adapter-layers", "7"])
    with pytest.raises(ConfigError, match="more than the 6 encoder layers the model has"):
        fit_layers(config_from_args(deep), deep)
    whole = parser.parse_args(["run", "--adapter-layers", "6"])
    assert fit_layers(config_from_args(whole), whole).adapter_layers == 6
    text = render_summary(SweepSpec(RunConfig(num_layers=1), ("fedsa",), (8.0,), (0,)), [])
    assert "model layers: 1, adapter on the top 1 layer," in text and "top 2" not in text


def test_more_layers_than_the_encoder_has_is_refused_before_anything_is_built():
    from secure_fedsa.model.encoder import check_fits, encoder_layers

    assert encoder_layers(ModelSpec()) == 6 and encoder_layers(ModelSpec(num_layers=2)) == 2
    with pytest.raises(ModelError, match="--num-layers 100 is more than the 6 layers"):
        check_fits(ModelSpec(num_layers=100), max_length=16)
