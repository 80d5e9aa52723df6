"""The sharing policy decides exactly which tensors leave a client; flatten/unflatten invert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.errors import ConfigError, ModelError
from secure_fedsa.model.encoder import tensor_group
from secure_fedsa.model.sharing import POLICIES, Manifest, flatten, get_policy, unflatten

pytestmark = pytest.mark.unit

EXPECTED_SHARED = {"fedsa": {"A"}, "fedit": {"A", "B"}, "ffa": {"B"}, "local": set()}


@pytest.mark.parametrize("method", sorted(EXPECTED_SHARED))
def test_exactly_the_right_tensors_leave_a_client(tiny_model, method):
    policy = get_policy(method)
    names = list(tiny_model.adapter_state())
    shared = policy.shared_names(names)
    assert {tensor_group(n) for n in shared} == EXPECTED_SHARED[method]
    # the head is never shared; every tensor of a shared group is shared
    assert not any(n.startswith("head.") for n in shared)
    for group in EXPECTED_SHARED[method]:
        assert set(tiny_model.group_names(group)) <= set(shared)
    # one layer, LoRA on query and value: two A and two B matrices
    assert len(shared) == 2 * len(EXPECTED_SHARED[method])


@pytest.fixture(scope="module")
def adapter_names():
    """Every adapter/head tensor name of a one-layer model per adapter."""
    from secure_fedsa.model.encoder import ModelSpec, build_model

    return {
        adapter: list(
            build_model(
                ModelSpec(num_layers=1, adapter=adapter, vera_r=16), num_labels=2, seed=0
            ).adapter_state()
        )
        for adapter in ("lora", "rslora", "vera")
    }


@pytest.mark.parametrize("adapter", ["lora", "rslora", "vera"])
@pytest.mark.parametrize("head", ["local", "shared"])
@pytest.mark.parametrize("method", sorted(EXPECTED_SHARED))
def test_exactly_the_right_tensors_leave_per_method_head_and_adapter(
    adapter_names, adapter, head, method
):
    names = adapter_names[adapter]
    if method == "local" and head == "shared":
        with pytest.raises(ConfigError, match="local shares nothing"):
            get_policy(method, head)
        return
    shared = get_policy(method, head).shared_names(names)
    expected = EXPECTED_SHARED[method] | ({"head"} if head == "shared" else set())
    assert {tensor_group(n) for n in shared} == expected
    # exactly the names of those groups, nothing else, in model order
    assert shared == [n for n in names if tensor_group(n) in expected]
    a_side = {"lora": ".lora_A.", "rslora": ".lora_A.", "vera": ".vera_lambda_d"}[adapter]
    b_side = {"lora": ".lora_B.", "rslora": ".lora_B.", "vera": ".vera_lambda_b"}[adapter]
    assert any(a_side in n for n in shared) == ("A" in expected)
    assert any(b_side in n for n in shared) == ("B" in expected)
    assert any(n.startswith("head.") for n in shared) == (head == "shared")
    assert not any("vera_A" in n or "vera_B" in n for n in shared)  # projections never move


def test_ffa_freezes_a_and_trains_b_and_head(tiny_model):
    tiny_model.set_trainable(get_policy("ffa").trained)
    groups = {tensor_group(n) for n in tiny_model.trainable_names()}
    assert groups == {"B", "head"}
    tiny_model.set_trainable(get_policy("fedsa").trained)
    assert {tensor_group(n) for n in tiny_model.trainable_names()} == {"A", "B", "head"}


def test_the_pretrained_weights_are_never_trainable(tiny_model):
    for method in POLICIES:
        tiny_model.set_trainable(get_policy(method).trained)
        assert all(tensor_group(n) is not None for n in tiny_model.trainable_names())


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="choose one of"):
        get_policy("fedprox")


shapes = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=0, max_size=5)


@given(shapes=shapes, seed=st.integers(0, 2**16))
@settings(max_examples=50, deadline=None)
def test_flatten_unflatten_round_trip(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {f"t{i}": torch.randn(s, generator=gen) for i, s in enumerate(shapes)}
    manifest = Manifest.from_state(state, list(state))
    vector = flatten(state, manifest)
    assert vector.shape == (manifest.size,)
    back = unflatten(vector, manifest)
    assert list(back) == list(state)
    for name in state:
        assert torch.equal(back[name], state[name])


def test_manifest_digest_binds_names_shapes_and_order():
    a = Manifest((("x", (2, 3)), ("y", (4,))))
    assert a.digest == Manifest((("x", (2, 3)), ("y", (4,)))).digest
    assert a.digest != Manifest((("y", (4,)), ("x", (2, 3)))).digest
    assert a.digest != Manifest((("x", (3, 2)), ("y", (4,)))).digest


def test_unflatten_refuses_wrong_length():
    manifest = Manifest((("x", (2, 3)),))
    with pytest.raises(ModelError, match="needs 6"):
        unflatten(np.zeros(5), manifest)


def test_flatten_refuses_missing_or_reshaped_tensor():
    manifest = Manifest((("x", (2, 3)),))
    with pytest.raises(ModelError, match="missing"):
        flatten({}, manifest)
    with pytest.raises(ModelError, match="shape"):
        flatten({"x": torch.zeros(3, 2)}, manifest)
