"""DP-SGD on the real LoRA model equals a per-example reference loop (σ=0), with and without
clipping. This catches per-sample-gradient bugs between Opacus and peft."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.randomness import OSRandom
from secure_fedsa.site.training import DPSettings, train_dp, train_plain

pytestmark = pytest.mark.unit


def _batch(tokenizer, n=6):
    texts = [
        "a wonderful, moving film",
        "dull and far too long",
        "the cast is superb",
        "i walked out halfway",
        "funny, sharp and kind",
        "a mess from start to finish",
    ][:n]
    enc = tokenizer(
        texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
    )
    labels = torch.tensor([1, 0, 1, 0, 1, 0][:n])
    return TensorDataset(enc["input_ids"], enc["attention_mask"], labels)


def _randomise_b(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in model.group_names("B"):
            dict(model.named_parameters())[name].copy_(
                0.05 * torch.randn(dict(model.named_parameters())[name].shape, generator=gen)
            )


def _reference_update(model, data, clip):
    """-(1/n) Σ_i clip(g_i): per-example gradients by a plain loop, joint norm over all params."""
    ref = copy.deepcopy(model)
    params = [p for p in ref.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    ids, mask, labels = data.tensors
    for i in range(len(labels)):
        ref.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            ref(ids[i : i + 1], mask[i : i + 1]), labels[i : i + 1]
        )
        loss.backward()
        grads = [p.grad.detach().clone() for p in params]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for t, g in zip(total, grads, strict=False):
            t += g * factor
    return [-(t / len(labels)) for t in total]


def check_zero_noise_step(model, data, clip, mode, *, module=None, train_data=None):
    """One σ = 0 DP-SGD step (q = 1, lr 1, SGD) of ``module`` on ``train_data`` (default: the
    model on ``data``) moves every trainable tensor of ``model`` by the per-example reference
    update of ``model`` on ``data``."""
    _randomise_b(model)
    model.train()
    expected = _reference_update(model, data, clip)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    train_dp(
        model if module is None else module,
        data if train_data is None else train_data,
        steps=1,
        # q = 1: Poisson sampling includes every example, so the batch is known
        dp=DPSettings(noise_multiplier=0.0, clip=clip, sample_rate=1.0),
        physical_batch_size=4,  # two physical pieces: checks the accumulation path too
        lr=1.0,
        randomness=OSRandom(),
        optimizer="sgd",
        mode=mode,
    )
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    for b, a, e in zip(before, after, expected, strict=True):
        torch.testing.assert_close(a - b, e, rtol=1e-4, atol=1e-7)
    # the clip actually bit in the clipped case: A, B and head all moved
    assert all(float((a - b).abs().max()) > 0 for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("clip", [1e6, 1e-3])
def test_zero_noise_dp_step_equals_per_example_reference(tiny_model, tokenizer, clip, mode):
    check_zero_noise_step(tiny_model, _batch(tokenizer), clip, mode)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("clip", [1e6, 1e-3])
@pytest.mark.parametrize("adapter", ["rslora", "vera"])
def test_every_adapter_matches_the_per_example_reference(tokenizer, adapter, clip, mode):
    """rsLoRA (peft LoRA layers, another scaling) and VeRA (our grad sampler for peft's VeRA
    layer: λ_d and λ_b) give exactly the per-example clipped gradients, A side, B side and head."""
    from secure_fedsa.model.encoder import ModelSpec, build_model

    model = build_model(ModelSpec(num_layers=1, adapter=adapter, vera_r=32), num_labels=2, seed=0)
    check_zero_noise_step(model, _batch(tokenizer), clip, mode)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("clip", [1e6, 1e-3])
def test_an_adapter_on_the_top_layer_only_matches_the_per_example_reference(tokenizer, clip, mode):
    """``--adapter-layers``: the lowest adapted layer's input needs no gradient (nothing below it
    trains); the per-sample gradients are still exact."""
    from secure_fedsa.model.encoder import ModelSpec, build_model

    model = build_model(ModelSpec(num_layers=2, adapter_layers=1), num_labels=2, seed=0)
    check_zero_noise_step(model, _batch(tokenizer), clip, mode)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_opacus_hooks_are_removed_after_a_round(tiny_model, tokenizer, mode):
    data = _batch(tokenizer)
    train_dp(
        tiny_model,
        data,
        steps=2,
        dp=DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=0.5),
        physical_batch_size=8,
        lr=1e-3,
        randomness=OSRandom(),
        mode=mode,
    )
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in tiny_model.modules())
    assert hooks == 0
    assert all(getattr(p, "grad_sample", None) is None for p in tiny_model.parameters())


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_empty_poisson_batch_still_takes_a_noisy_step(tiny_model, tokenizer, mode):
    data = _batch(tokenizer, n=2)
    before = [p.detach().clone() for p in tiny_model.parameters() if p.requires_grad]
    # q tiny: every batch is empty with overwhelming probability; the step is pure noise
    stats = train_dp(
        tiny_model,
        data,
        steps=3,
        dp=DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=1e-9),
        physical_batch_size=8,
        lr=1e-2,
        randomness=OSRandom(),
        optimizer="sgd",
        mode=mode,
    ).stats
    assert stats.examples == 0 and stats.steps == 3
    after = [p.detach() for p in tiny_model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=False))


def test_frozen_groups_do_not_move(tiny_model, tokenizer):
    from secure_fedsa.model.sharing import get_policy

    tiny_model.set_trainable(get_policy("ffa").trained)
    a_before = {n: p.detach().clone() for n, p in tiny_model.named_parameters() if ".lora_A." in n}
    train_plain(
        tiny_model,
        _batch(tokenizer),
        steps=2,
        batch_size=4,
        physical_batch_size=2,
        lr=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    for n, p in tiny_model.named_parameters():
        if n in a_before:
            assert torch.equal(p, a_before[n])


def test_bad_dp_settings_are_refused():
    with pytest.raises(PrivacyError):
        DPSettings(noise_multiplier=-1.0, clip=1.0, sample_rate=0.1)
    with pytest.raises(PrivacyError):
        DPSettings(noise_multiplier=1.0, clip=0.0, sample_rate=0.1)
    with pytest.raises(PrivacyError):
        DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=1.5)
