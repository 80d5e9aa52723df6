"""The experiment scripts behind docs/results.md ("A DP recipe for the default job") do what the
document says: the head and the adapter train at the stated rates, and the public head is the
prompts' zero-shot classifier."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from secure_fedsa.model.encoder import ModelSpec, build_model

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return (
        importlib.import_module("adapter_lr_experiment"),
        importlib.import_module("public_head_experiment"),
    )


def test_scales_are_read_before_the_run_options(scripts):
    lr_script, _ = scripts
    assert lr_script._scales(["1", "0.2", "--seed", "0"]) == ([1.0, 0.2], ["--seed", "0"])
    assert lr_script._scales(["0", "--seed", "0"]) == ([0.0], ["--seed", "0"])
    assert lr_script._scales(["1", "0.2", "3"]) == ([1.0, 0.2], ["3"])


def test_head_and_adapter_get_their_own_learning_rates(scripts, tiny_model):
    lr_script, _ = scripts
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    optimizer = lr_script.grouped_adamw(0.5, 0.2)(params, 0.01)
    head_ids = {id(p) for p in tiny_model.head.parameters()}
    groups = [(group["lr"], {id(p) for p in group["params"]}) for group in optimizer.param_groups]
    assert groups == [
        (pytest.approx(0.002), head_ids),
        (pytest.approx(0.005), {id(p) for p in params} - head_ids),
    ]
    assert len(head_ids) == 2 and len(params) > 2


def test_public_head_is_the_prompts_zero_shot_classifier(scripts):
    _, head_script = scripts
    spec = ModelSpec(num_layers=1)
    plain = build_model(spec, num_labels=2, seed=0)
    public = head_script.public_head_builder(build_model)(spec, num_labels=2, seed=0)
    weight = public.head.classifier.weight.detach()
    assert torch.allclose(weight.norm(dim=1), torch.full((2,), head_script.SCALE))
    assert torch.equal(public.head.classifier.bias.detach(), torch.zeros(2))
    assert torch.allclose(weight / head_script.SCALE, head_script.prompt_embeddings(plain, spec))
    # the adapter is untouched: only the head differs from a plain build with the same seed
    for (name, a), (_, b) in zip(plain.named_parameters(), public.named_parameters(), strict=True):
        assert torch.equal(a, b) or name.startswith("head."), name
    with pytest.raises(SystemExit, match="prompts for 2 labels"):
        head_script.public_head_builder(build_model)(spec, num_labels=3, seed=0)
