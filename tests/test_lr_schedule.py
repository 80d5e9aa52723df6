"""Learning-rate schedules over the whole federation (``--lr-schedule``): the factors as pure
functions, the engine applying them step by step, and a federation handing each round its own
factors, also after an interruption."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_engine import _batch
from tiny_runs import TINY_DP, interrupt_then_resume

from secure_fedsa.config import LR_SCHEDULES, RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.privacy.randomness import OSRandom
from secure_fedsa.schedule import round_factors, step_factor
from secure_fedsa.site.training import DPSettings, train_dp, train_plain

pytestmark = pytest.mark.integration

SHAPES = st.tuples(st.integers(1, 30), st.integers(1, 20))  # rounds, local steps


# -- the factors (pure) ----------------------------------------------------------------------
@given(st.sampled_from(LR_SCHEDULES), SHAPES)
def test_factors_lie_in_0_1_never_rise_and_rounds_tile_the_federation(schedule, shape):
    rounds, local = shape
    tiled = [
        f
        for r in range(1, rounds + 1)
        for f in round_factors(schedule, r, rounds=rounds, local_steps=local)
    ]
    total = rounds * local
    assert tiled == [step_factor(schedule, g, total) for g in range(total)]
    assert tiled[0] == 1.0  # every schedule starts at --lr
    assert all(0.0 < f <= 1.0 for f in tiled)  # the aggregate check's bound (lr * sum r_t) holds
    assert all(b <= a for a, b in zip(tiled, tiled[1:], strict=False))


@given(SHAPES)
def test_the_schedules_take_the_values_their_docs_give(shape):
    rounds, local = shape
    total = rounds * local
    for g in range(total):
        assert step_factor("constant", g, total) == 1.0
        assert step_factor("linear", g, total) == pytest.approx(1 - g / total)
    if total >= 2 and total % 2 == 0:
        assert step_factor("cosine", total // 2, total) == pytest.approx(0.5)


def test_bad_schedules_and_steps_are_refused():
    with pytest.raises(ValueError, match="unknown lr schedule"):
        step_factor("step", 0, 10)
    for step, total in ((-1, 10), (10, 10), (0, 0)):
        with pytest.raises(ValueError, match="outside"):
            step_factor("linear", step, total)
    with pytest.raises(ValueError, match="outside a federation"):
        round_factors("linear", 6, rounds=5, local_steps=2)


def test_constant_is_the_default_and_older_configurations_read_as_constant():
    assert RunConfig().lr_schedule == "constant"
    older = RunConfig(lr_schedule="linear").to_dict()
    del older["lr_schedule"]  # written before the field existed: those runs had a constant lr
    assert RunConfig.from_dict(older).lr_schedule == "constant"
    with pytest.raises(ConfigError, match="lr schedule"):
        RunConfig(lr_schedule="exponential")


# -- the engine applies them step by step -----------------------------------------------------
def _sgd_plain(model, data, steps, lr, factors=None):
    train_plain(
        model,
        data,
        steps=steps,
        batch_size=len(data),  # the whole set every step: no dependence on shuffling
        physical_batch_size=len(data),
        lr=lr,
        generator=torch.Generator().manual_seed(0),
        optimizer="sgd",  # stateless: a step of lr * f is exactly a step at lr * f
        lr_factors=factors,
    )


def _sgd_dp(model, data, steps, lr, factors=None):
    train_dp(
        model,
        data,
        steps=steps,
        dp=DPSettings(noise_multiplier=0.0, clip=1e6, sample_rate=1.0),  # every example
        physical_batch_size=len(data),
        lr=lr,
        randomness=OSRandom(),
        optimizer="sgd",
        lr_factors=factors,
    )


def _trainable(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("train", [_sgd_plain, _sgd_dp], ids=["plain", "dp"])
def test_each_step_runs_at_lr_times_its_factor(train, tiny_model, tokenizer):
    data = _batch(tokenizer)
    start = copy.deepcopy(tiny_model)
    scheduled = copy.deepcopy(start)
    train(scheduled, data, 2, 0.05, [1.0, 0.25])
    by_hand = copy.deepcopy(start)
    train(by_hand, data, 1, 0.05)
    train(by_hand, data, 1, 0.05 * 0.25)
    constant = copy.deepcopy(start)
    train(constant, data, 2, 0.05)
    for s, h in zip(_trainable(scheduled), _trainable(by_hand), strict=True):
        torch.testing.assert_close(s, h, rtol=1e-5, atol=1e-7)
    gaps = [
        float((s - c).abs().max())
        for s, c in zip(_trainable(scheduled), _trainable(constant), strict=True)
    ]
    assert max(gaps) > 1e-5  # the factor did something


@pytest.mark.parametrize("train", [_sgd_plain, _sgd_dp], ids=["plain", "dp"])
@pytest.mark.parametrize("factors", [[1.0], [1.0, 0.0], [1.0, 1.5], [1.0, float("nan")]])
def test_wrong_factors_are_refused_before_any_parameter_changes(
    train, factors, tiny_model, tokenizer
):
    data = _batch(tokenizer)
    before = _trainable(tiny_model)
    with pytest.raises(ValueError, match="lr factors"):
        train(tiny_model, data, 2, 0.05, factors)
    for b, a in zip(before, _trainable(tiny_model), strict=True):
        assert torch.equal(b, a)


# a whole federation interrupted and resumed: on demand (the schedule's own tests are unit tests)
@pytest.mark.e2e
# -- a federation hands each round its own factors, also after an interruption ----------------
def test_every_round_trains_with_its_own_factors_across_an_interruption(tmp_path, monkeypatch):
    from secure_fedsa.site import client as client_module

    seen: list[tuple[str, list[float]]] = []
    real = client_module.train_dp

    def spy(model, data, **kwargs):
        seen.append((kwargs["lr"], list(kwargs["lr_factors"])))
        return real(model, data, **kwargs)

    monkeypatch.setattr(client_module, "train_dp", spy)
    config = RunConfig(
        **{**TINY_DP, "encryption": False, "masking": False, "lr_schedule": "linear", "rounds": 3}
    )
    run_dir = tmp_path / "run"
    interrupt_then_resume(config, run_dir)
    expected = [
        round_factors("linear", r, rounds=3, local_steps=config.local_steps) for r in (1, 2, 3)
    ]
    clients = config.num_clients
    assert [f for _, f in seen] == [e for e in expected for _ in range(clients)]
    assert {lr for lr, _ in seen} == {config.lr}
    assert json.loads((run_dir / "config.json").read_text())["lr_schedule"] == "linear"
    # factors <= 1: every round stays inside the bound the aggregate check assumes at --lr
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["aggregate"]["status"] for m in metrics] == ["applied"] * 3
    assert all(c["clamped"] == 0 for m in metrics for c in m["clients"].values())
