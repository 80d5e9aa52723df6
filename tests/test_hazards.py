"""Each DP hazard fires when it should and stays quiet when it should not.

The pure checks are tested on their own; then each mechanism hazard is planted in the real engine
(real model, real Opacus, both clipping modes) and must stop the round before any parameter
changes: a check that could never fire would be worse than none.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.hazards import check_dp_setup, check_mechanism
from secure_fedsa.privacy.randomness import OSRandom
from secure_fedsa.site import training as engine
from secure_fedsa.site.training import DPSettings, PoissonSampler, train_dp

pytestmark = pytest.mark.unit

NAMES = ["layer.0.lora_A.weight", "layer.0.lora_B.weight", "head.weight", "head.bias"]

# A plan with no hazard at all.
SAFE = {
    "dataset_size": 3200,
    "batch_size": 128,
    "sample_rate": 0.04,
    "delta": 1e-5,
    "noise_multiplier": 1.0,
}
# A mechanism with no hazard at all.
BUILT = {
    "dataset_size": 3200,
    "accountant_rate": 0.04,
    "sampler_rate": 0.04,
    "poisson": True,
    "optimizer_expected_batch": 128,
    "trainable_names": NAMES,
    "covered_names": NAMES,
}


def codes(**overrides) -> dict[str, str]:
    return {h.code: h.severity for h in check_dp_setup(**{**SAFE, **overrides})}


def mechanism_codes(**overrides) -> dict[str, str]:
    return {h.code: h.severity for h in check_mechanism(**{**BUILT, **overrides})}


def test_a_safe_setup_has_no_hazard():
    assert check_dp_setup(**SAFE) == []
    assert check_mechanism(**BUILT) == []
    assert check_mechanism(**{**BUILT, "covered_names": None}) == []  # before the first pass


@pytest.mark.parametrize(
    "overrides, code, severity",
    [
        ({"delta": 1 / 3200}, "delta-too-large", "error"),
        ({"delta": 1e-3}, "delta-too-large", "error"),
        ({"sample_rate": 0.0406}, "sample-rate-mismatch", "error"),
        ({"sample_rate": 1 / 25}, None, None),  # q = 1/ceil(n/B) = 0.04 exactly here
        ({"dataset_size": 999, "sample_rate": 128 / 999, "delta": 1e-4}, "small-dataset", "warn"),
        ({"batch_size": 31, "sample_rate": 31 / 3200}, "small-batch", "warn"),
        ({"noise_multiplier": 3.1}, "high-noise", "warn"),
        ({"noise_multiplier": 3.0}, None, None),
    ],
)
def test_each_plan_rule_fires_alone(overrides, code, severity):
    found = codes(**overrides)
    assert found == ({} if code is None else {code: severity})


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"poisson": False}, "not-poisson"),
        ({"sampler_rate": 0.08}, "sample-rate-mismatch"),
        ({"optimizer_expected_batch": 512}, "grad-accumulation"),
        ({"optimizer_expected_batch": 129}, None),  # rounding of q·n, not accumulation
        ({"covered_names": NAMES[:1]}, "uncovered-parameters"),
        ({"covered_names": [*NAMES, "extra"]}, None),
    ],
)
def test_each_mechanism_rule_fires_alone(overrides, code):
    assert mechanism_codes(**overrides) == ({} if code is None else {code: "error"})


def test_no_secure_rng_warning_any_more():
    # noise comes from the OS CSPRNG in every run: the old "insecure-rng" hazard is gone
    assert "insecure-rng" not in codes() and "insecure-rng" not in mechanism_codes()


def test_delta_error_says_what_to_use():
    (hazard,) = check_dp_setup(**{**SAFE, "delta": 1e-3})
    assert "1/n = 1/3200" in hazard.message and "--delta 1e-05" in hazard.message


def test_batch_at_least_dataset_uses_rate_one():
    found = codes(batch_size=5000, sample_rate=1.0)
    assert "sample-rate-mismatch" not in found


def test_messages_name_the_numbers_and_the_reason():
    hazards = check_dp_setup(
        dataset_size=279, batch_size=8, sample_rate=8 / 279, delta=1e-5, noise_multiplier=3.1
    )
    by_code = {h.code: h for h in hazards}
    assert "279" in by_code["small-dataset"].message
    assert "8.0" in by_code["small-batch"].message
    assert "3.1" in by_code["high-noise"].message
    (uncovered,) = check_mechanism(**{**BUILT, "covered_names": NAMES[:1]})
    assert "lora_B" in uncovered.message and "voids the guarantee" in uncovered.message


@pytest.mark.parametrize(
    "overrides",
    [
        {"dataset_size": 0},
        {"batch_size": 0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"delta": 0},
        {"noise_multiplier": -1.0},
    ],
)
def test_nonsense_input_raises(overrides):
    with pytest.raises(PrivacyError, match="invalid DP setup"):
        check_dp_setup(**{**SAFE, **overrides})


# --------------------------------------------------------------------------- planted in the engine
def _data(tokenizer, n=16):
    enc = tokenizer(
        ["a fine film", "dull and long"] * (n // 2),
        padding="max_length",
        max_length=8,
        truncation=True,
        return_tensors="pt",
    )
    labels = torch.tensor([1, 0] * (n // 2))
    return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"], labels)


def _train(model, data, mode, **kwargs):
    return train_dp(
        model,
        data,
        steps=2,
        dp=DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=0.5),
        physical_batch_size=4,
        lr=0.1,
        randomness=OSRandom(),
        mode=mode,
        **kwargs,
    )


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _unchanged(model, before):
    return all(torch.equal(p, before[n]) for n, p in model.named_parameters())


class FixedSizeSampler:
    """Shuffled fixed-size batches: what plain training does, and not what DP-SGD assumes."""

    poisson = False

    def __init__(self, n: int, rate: float) -> None:
        self.n, self.rate = n, rate

    def draw(self) -> torch.Tensor:
        return torch.randperm(self.n)[: round(self.rate * self.n)]


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_a_trainable_parameter_outside_dp_stops_the_round(tiny_model, tokenizer, mode):
    tiny_model.side = nn.Linear(3, 3)  # trainable, never reached by a per-sample gradient
    before = _snapshot(tiny_model)
    with pytest.raises(PrivacyError, match="uncovered-parameters.*side.weight"):
        _train(tiny_model, _data(tokenizer), mode)
    assert _unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_per_sample_gradients_silently_skipped_stop_the_round(
    tiny_model, tokenizer, mode, monkeypatch
):
    """As if an Opacus/peft combination skipped a LoRA layer (an open Opacus issue)."""
    real = engine._with_rows

    def drops_lora_b(model, attribute, rows):
        return [n for n in real(model, attribute, rows) if "lora_B" not in n]

    monkeypatch.setattr(engine, "_with_rows", drops_lora_b)
    before = _snapshot(tiny_model)
    with pytest.raises(PrivacyError, match="uncovered-parameters.*lora_B"):
        _train(tiny_model, _data(tokenizer), mode)
    assert _unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_a_sampler_that_is_not_poisson_stops_the_round(tiny_model, tokenizer, mode):
    data = _data(tokenizer)
    before = _snapshot(tiny_model)
    with pytest.raises(PrivacyError, match="not-poisson"):
        _train(tiny_model, data, mode, sampler=FixedSizeSampler(len(data), 0.5))
    assert _unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_a_sampler_at_another_rate_stops_the_round(tiny_model, tokenizer, mode):
    data = _data(tokenizer)
    before = _snapshot(tiny_model)
    with pytest.raises(PrivacyError, match="sample-rate-mismatch"):
        _train(tiny_model, data, mode, sampler=PoissonSampler(len(data), 0.25, OSRandom()))
    assert _unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_an_optimizer_averaging_several_batches_stops_the_round(
    tiny_model, tokenizer, mode, monkeypatch
):
    real = engine._noise_settings

    def accumulating(dp, expected_batch):  # as Opacus' virtual steps over 4 Poisson batches
        return real(dp, 4 * expected_batch)

    monkeypatch.setattr(engine, "_noise_settings", accumulating)
    before = _snapshot(tiny_model)
    with pytest.raises(PrivacyError, match="grad-accumulation"):
        _train(tiny_model, _data(tokenizer), mode)
    assert _unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_the_unplanted_engine_trains(tiny_model, tokenizer, mode):
    before = _snapshot(tiny_model)
    ran = _train(tiny_model, _data(tokenizer), mode)
    assert ran.stats.steps == 2 and not _unchanged(tiny_model, before)
    assert ran.event.steps == 2 and ran.event.sample_rate == 0.5  # what the ledger is charged
