"""With ``optimizer_state="kept"`` each client's AdamW state carries over between rounds, and
with either setting each round's change of the shared values stays within the fresh-optimizer bound
the clients' aggregate check relies on (docs/crypto.md)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_engine import _batch
from tiny_runs import TINY_DP, interrupt_then_resume

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.privacy.randomness import OSRandom
from secure_fedsa.site.aggregate_check import clamp_round_change
from secure_fedsa.site.training import DPSettings, OptimizerCarry, train_dp, train_plain

pytestmark = pytest.mark.integration

FINITE = st.floats(-1e6, 1e6, allow_nan=False, width=64)


# -- the clamp (a pure function) ------------------------------------------------------------
@given(
    st.integers(0, 40).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=FINITE), arrays(np.float64, n, elements=FINITE)
        )
    ),
    st.floats(0, 1e3, allow_nan=False),
)
def test_clamp_limits_every_change_and_keeps_the_rest_exactly(pair, bound):
    start, trained = pair
    out, count = clamp_round_change(start, trained, bound)
    change = np.abs(trained - start)
    assert count == int(np.count_nonzero(change > bound))
    assert np.all(np.abs(out - start) <= bound * (1 + 1e-12) + 1e-9 * np.abs(start))
    inside = change <= bound
    assert np.array_equal(out[inside], trained[inside])  # not recomputed: bit for bit
    # a clamped value moved in its own direction (or not at all with bound 0)
    over = ~inside
    assert np.all((out[over] - start[over]) * np.sign(trained[over] - start[over]) >= 0)


def test_clamp_refuses_bad_input():
    with pytest.raises(ValueError):
        clamp_round_change(np.zeros(2), np.zeros(3), 1.0)
    with pytest.raises(ValueError):
        clamp_round_change(np.zeros(2), np.zeros(2), -1.0)


# -- the engine carries AdamW's state -----------------------------------------------------
def _plain(model, data, steps, carry, on_step=None):
    return train_plain(
        model,
        data,
        steps=steps,
        batch_size=len(data),  # the whole set every step: the batches do not depend on shuffling
        physical_batch_size=len(data),
        lr=1e-2,
        generator=torch.Generator().manual_seed(0),
        carry=carry,
        on_step=on_step,
    )


def _trainable(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def test_two_carried_rounds_equal_one_long_round_and_fresh_ones_do_not(tiny_model, tokenizer):
    data = _batch(tokenizer)
    start = copy.deepcopy(tiny_model)
    straight = copy.deepcopy(start)
    _plain(straight, data, 6, None)
    carried, carry = copy.deepcopy(start), OptimizerCarry()
    _plain(carried, data, 3, carry)
    assert int(next(iter(carry.saved["state"].values()))["step"]) == 3
    _plain(carried, data, 3, carry)
    assert int(next(iter(carry.saved["state"].values()))["step"]) == 6
    fresh = copy.deepcopy(start)
    _plain(fresh, data, 3, None)
    _plain(fresh, data, 3, None)
    for s, c in zip(_trainable(straight), _trainable(carried), strict=True):
        torch.testing.assert_close(c, s, rtol=1e-3, atol=1e-4)  # summation order only
    gaps = [
        float((f - s).abs().max())
        for s, f in zip(_trainable(straight), _trainable(fresh), strict=True)
    ]
    assert max(gaps) > 1e-3  # a fresh optimizer restarts Adam's bias correction: not the same


def test_dp_rounds_carry_the_state_too(tiny_model, tokenizer):
    data = _batch(tokenizer)
    start = copy.deepcopy(tiny_model)

    def dp(model, steps, carry):
        train_dp(
            model,
            data,
            steps=steps,
            dp=DPSettings(noise_multiplier=0.0, clip=1e6, sample_rate=1.0),  # every example
            physical_batch_size=4,
            lr=1e-2,
            randomness=OSRandom(),
            carry=carry,
        )

    straight, carried, carry = copy.deepcopy(start), copy.deepcopy(start), OptimizerCarry()
    dp(straight, 4, None)
    dp(carried, 2, carry)
    dp(carried, 2, carry)
    for s, c in zip(_trainable(straight), _trainable(carried), strict=True):
        torch.testing.assert_close(c, s, rtol=1e-4, atol=1e-6)


def test_a_round_that_fails_leaves_the_carried_state_as_it_was(tiny_model, tokenizer):
    data = _batch(tokenizer)
    carry = OptimizerCarry()
    _plain(tiny_model, data, 2, carry)
    saved = copy.deepcopy(carry.saved)

    def crash() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _plain(tiny_model, data, 3, carry, on_step=crash)  # one step taken, then interrupted
    assert carry.saved.keys() == saved.keys()
    for key, moments in saved["state"].items():
        for name, value in moments.items():
            assert torch.equal(carry.saved["state"][key][name], value), name


# -- configuration -------------------------------------------------------------------------
def test_fresh_is_the_default_and_older_configurations_read_as_fresh():
    assert RunConfig().optimizer_state == "fresh"
    older = RunConfig(optimizer_state="kept").to_dict()
    del older["optimizer_state"]  # written before the field existed: those runs were fresh
    assert RunConfig.from_dict(older).optimizer_state == "fresh"
    with pytest.raises(ConfigError, match="optimizer state"):
        RunConfig(optimizer_state="warm")


# -- a federation: the state survives an interruption, the clamp holds ----------------------
def _run(tmp_path, **overrides):
    config = RunConfig(
        **{**TINY_DP, "encryption": False, "masking": False, "optimizer_state": "kept", **overrides}
    )
    run_dir = tmp_path / "run"
    interrupt_then_resume(config, run_dir)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    states = {
        cid: torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)
        for cid in ("client-0", "client-1")
    }
    return metrics, states


def test_the_carried_state_survives_an_interrupted_run(tmp_path):
    metrics, states = _run(tmp_path)
    steps = TINY_DP["rounds"] * TINY_DP["local_steps"]
    for payload in states.values():
        moments = payload["optimizer"]["state"]
        assert {int(m["step"]) for m in moments.values()} == {steps}  # not restarted at resume
    # recorded per client and round: how many shared values the round bound limited
    assert all(isinstance(c["clamped"], int) for m in metrics for c in m["clients"].values())


def test_fresh_keeps_no_optimizer_state(tmp_path):
    _, states = _run(tmp_path, optimizer_state="fresh")
    assert all(payload["optimizer"] is None for payload in states.values())


def test_every_round_change_stays_within_the_bound_the_aggregate_check_uses(tmp_path, monkeypatch):
    """With a bound far below what training moves, every client clamps, and the aggregates still
    pass every client's check: without the clamp they would be rejected."""
    from secure_fedsa.site import client as client_module

    bound = 1e-4
    monkeypatch.setattr(client_module, "round_change_bound", lambda **_: bound)
    metrics, states = _run(tmp_path)
    for record in metrics:
        assert record["aggregate"]["status"] == "applied", record["aggregate"]
        assert all(c["clamped"] > 0 for c in record["clients"].values())
    initial = states["client-0"]["start_shared"].numpy()  # round 2's start: round 1's aggregate
    for payload in states.values():
        names = [n for n in payload["state"] if ".lora_A." in n]
        assert names
        shared = np.concatenate([payload["trained"][n].double().reshape(-1).numpy() for n in names])
        assert np.all(np.abs(shared - initial) <= bound + 1e-6)
