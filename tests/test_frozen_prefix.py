"""The frozen-bottom cache (secure_fedsa/model/frozen_prefix.py) changes nothing but the time a step
takes: the same logits, the same per-sample clipped gradients, the same DP step for the same noise,
the same federation; and it is refused where it could change something."""

from __future__ import annotations

import gc

import pytest
import torch
from test_engine import _batch, _randomise_b, check_zero_noise_step
from tiny_runs import TINY_DP
from torch.utils.data import TensorDataset

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ModelError
from secure_fedsa.model import frozen_prefix
from secure_fedsa.model.encoder import ModelSpec, build_model
from secure_fedsa.model.frozen_prefix import EncoderTop, FrozenPrefix, frozen_depth
from secure_fedsa.privacy.randomness import SeededTestRandom
from secure_fedsa.site.training import DPSettings, train_dp, train_plain
from secure_fedsa.transports.federation import Federation

pytestmark = pytest.mark.integration


def _model(adapter="lora", layers=3, top=1):
    spec = ModelSpec(num_layers=layers, adapter=adapter, vera_r=32, adapter_layers=top)
    return build_model(spec, num_labels=2, seed=0)


@pytest.mark.parametrize(
    ("layers", "top", "depth"), [(3, 1, 2), (3, 2, 1), (3, None, 0), (1, 2, 0), (2, 1, 1)]
)
def test_the_depth_is_the_lowest_adapted_layer(layers, top, depth):
    assert frozen_depth(_model(layers=layers, top=top)) == depth


def test_a_trainable_tensor_below_the_adapter_means_no_cache():
    model = _model()
    model.encoder.get_base_model().embeddings.word_embeddings.weight.requires_grad_(True)
    assert frozen_depth(model) == 0
    model = _model()
    next(model.encoder.get_base_model().encoder.layer[0].parameters()).requires_grad_(True)
    assert frozen_depth(model) == 0


@pytest.mark.parametrize("adapter", ["lora", "rslora", "vera"])
def test_the_cached_path_gives_the_models_logits(tokenizer, adapter):
    model = _model(adapter)
    _randomise_b(model)  # B = 0 would hide an adapter the cached path skipped
    data = _batch(tokenizer)
    prefix = FrozenPrefix(model)
    assert prefix.depth == 2 and prefix.module(data) is prefix.top
    rows, mask, labels = prefix.data(data).tensors
    assert rows.shape == (6, 16, 384) and torch.equal(labels, data.tensors[2])
    hidden = rows[torch.arange(6)]
    with torch.no_grad():
        whole = model(*data.tensors[:2])
        cached = prefix.top(hidden, mask)
    torch.testing.assert_close(cached, whole, rtol=0, atol=1e-5)
    # padding matters: the same record with its mask ignored gives other logits
    with torch.no_grad():
        unmasked = prefix.top(hidden, torch.ones_like(mask))
    assert (unmasked - whole).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("clip", [1e6, 1e-3])
@pytest.mark.parametrize("adapter", ["lora", "vera"])
def test_a_zero_noise_dp_step_on_the_cache_equals_the_per_example_reference(
    tokenizer, adapter, clip, mode
):
    model = _model(adapter)
    data = _batch(tokenizer)
    prefix = FrozenPrefix(model)
    top, cached = prefix.module(data), prefix.data(data)
    assert top is prefix.top
    # the reference runs per example through the whole model; the step runs on the cache
    check_zero_noise_step(model, data, clip, mode, module=top, train_data=cached)


def test_the_same_noise_gives_the_same_dp_training_with_and_without_the_cache(tokenizer):
    """Poisson sampling and noise drawn from the same (test-only) source: the same records,
    the same noisy steps, the same AdamW trajectory."""
    data = _batch(tokenizer)
    settings = DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=0.5)
    results = []
    for cached in (False, True):
        model = _model()
        _randomise_b(model)
        prefix = FrozenPrefix(model, enabled=cached)
        module, train = prefix.module(data), prefix.data(data)
        assert (module is model) is not cached
        train_dp(
            module,
            train,
            steps=4,
            dp=settings,
            physical_batch_size=4,
            lr=5e-3,
            randomness=SeededTestRandom(7),
        )
        results.append(model.adapter_state())
    plain, cached = results
    assert plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-6)
    moved = _model().adapter_state()
    assert any(not torch.equal(moved[n], cached[n]) for n in cached)  # training happened


def test_the_same_shuffling_gives_the_same_training_without_dp_with_and_without_the_cache(
    tokenizer,
):
    data = _batch(tokenizer)
    results = []
    for cached in (False, True):
        model = _model()
        _randomise_b(model)
        prefix = FrozenPrefix(model, enabled=cached)
        train_plain(
            prefix.module(data),
            prefix.data(data),
            steps=3,
            batch_size=4,
            physical_batch_size=2,
            lr=5e-3,
            generator=torch.Generator().manual_seed(3),
        )
        results.append(model.adapter_state())
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-4, atol=1e-6)


def test_each_record_is_computed_once_and_only_when_drawn(tokenizer, monkeypatch):
    distinct = _batch(tokenizer).tensors  # 6 records
    data = TensorDataset(*(torch.cat([t] * 3) for t in distinct))  # 18: each record 3 times
    computed = []
    encode = frozen_prefix.encode_bottom

    def counting(model, depth, ids, mask):  # noqa: ANN001, ANN202
        computed.append(len(ids))
        return encode(model, depth, ids, mask)

    monkeypatch.setattr(frozen_prefix, "encode_bottom", counting)
    model = _model()
    prefix = FrozenPrefix(model)
    rows = prefix.data(data).tensors[0]
    # the check against the whole model reads the first 8 records: 6 distinct ones
    assert computed == [6]
    batch = rows[torch.tensor([9, 9, 12, 2])]
    assert computed == [6]  # records 9 and 12 are copies of 3 and 0: nothing new
    torch.testing.assert_close(batch[0], batch[1], rtol=0, atol=0)
    assert rows[torch.tensor([], dtype=torch.long)].shape == (0, 16, 384)
    assert int(rows.done.sum()) == 10 and len(prefix.store) == 6
    torch.testing.assert_close(rows[14], batch[3], rtol=0, atol=0)  # a copy of record 2
    torch.testing.assert_close(
        rows[:], encode(model, prefix.depth, *data.tensors[:2]), rtol=0, atol=1e-6
    )
    assert computed == [6]
    # another dataset of the same model (another client's test split from the same pool) that
    # holds some of these records and a new one: only the new one is computed
    other = TensorDataset(*(torch.cat([t[[4, 1]], t[[0]].roll(1, dims=-1)]) for t in distinct))
    theirs = prefix.data(other).tensors[0]
    torch.testing.assert_close(
        theirs[:], encode(model, prefix.depth, *other.tensors[:2]), rtol=0, atol=1e-6
    )
    assert computed == [6, 1] and len(prefix.store) == 7


def test_a_new_dataset_never_gets_an_older_datasets_cache(tokenizer):
    """The cache is keyed by the dataset object and dies with it, so a dataset made after
    another was freed (Python may give it the freed one's id) gets its own rows, never the
    other's records."""
    model = _model()
    prefix = FrozenPrefix(model)
    base = _batch(tokenizer).tensors
    for shift in range(3):
        dataset = TensorDataset(*(torch.roll(t, shift, dims=0) for t in base))
        cached = prefix.data(dataset)
        torch.testing.assert_close(cached.tensors[2], dataset.tensors[2], rtol=0, atol=0)
        torch.testing.assert_close(
            cached.tensors[0][:],
            frozen_prefix.encode_bottom(model, prefix.depth, *dataset.tensors[:2]),
            rtol=0,
            atol=1e-6,
        )
        assert len(prefix._cache) == 1
        del dataset, cached
        gc.collect()
        assert len(prefix._cache) == 0  # nothing left that a reused id could find


def test_a_cache_that_disagrees_with_the_model_is_not_used(tokenizer, monkeypatch):
    """The check on the first records fires on real values: a mask built wrongly (as a
    transformers release that built it differently would) changes the logits, and the client
    falls back to the whole model."""
    model = _model()
    _randomise_b(model)
    data = _batch(tokenizer)
    monkeypatch.setattr(frozen_prefix, "_attention_mask", lambda base, hidden, mask: None)
    prefix = FrozenPrefix(model)
    with pytest.warns(UserWarning, match="do not reproduce"):
        assert prefix.module(data) is model
    assert prefix.data(data) is data and prefix.top is None


def test_a_cache_above_the_limit_is_not_built(tokenizer):
    model = _model()
    data = _batch(tokenizer)
    prefix = FrozenPrefix(model, limit_bytes=6 * 16 * 384 * 4 - 1)
    assert prefix.module(data) is model and prefix.data(data) is data
    prefix = FrozenPrefix(model, limit_bytes=6 * 16 * 384 * 4)
    assert prefix.module(data) is prefix.top


def test_a_trainable_tensor_outside_the_top_is_refused(tokenizer):
    model = _model()
    prefix = FrozenPrefix(model)
    top = prefix.module(_batch(tokenizer))
    prefix.check_trainable(top)
    model.encoder.get_base_model().embeddings.word_embeddings.weight.requires_grad_(True)
    with pytest.raises(ModelError, match="below the cached encoder layers"):
        prefix.check_trainable(top)


def test_the_top_refuses_a_depth_it_cannot_start_at():
    with pytest.raises(ModelError):
        EncoderTop(_model(layers=2), 2)
    with pytest.raises(ModelError):
        EncoderTop(_model(layers=2), 0)


# two whole federations compared: on demand (the cache's unit tests check each forward pass)
@pytest.mark.e2e
def test_a_federation_is_the_same_with_and_without_the_cache(tmp_path, monkeypatch):
    """A DP + CKKS federation with test-only reproducible noise, once cached (the default) and
    once with the cache off: the same accuracies and the same trained state of every client."""
    config = RunConfig(**{**TINY_DP, "num_layers": 2, "rounds": 2}, adapter_layers=1)
    summaries, states = [], []
    for limit in (frozen_prefix.CACHE_LIMIT_BYTES, 0):
        monkeypatch.setattr(frozen_prefix, "CACHE_LIMIT_BYTES", limit)
        federation = Federation(
            config,
            tmp_path / f"run-{limit}",
            dp_randomness=lambda cid: SeededTestRandom(int(cid.removeprefix("client-"))),
        )
        summaries.append(federation.run())
        assert len({id(c.prefix) for c in federation.clients.values()}) == 1  # one, shared
        for client in federation.clients.values():
            assert client.prefix.depth == 1
            assert (client.prefix.module(client.data.train) is client.prefix.top) == (limit > 0)
        states.append({cid: c.state for cid, c in federation.clients.items()})
    cached, plain = summaries
    assert cached["evaluation"]["per_client"] == plain["evaluation"]["per_client"]
    for cid, state in states[1].items():
        for name, value in state.items():
            torch.testing.assert_close(states[0][cid][name], value, rtol=1e-4, atol=1e-6)
