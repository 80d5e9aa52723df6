"""The encoder's frozen bottom, computed at most once per record instead of in every step.

With the adapter on the top N encoder layers (``--adapter-layers``, 2 by default), the
embeddings and every layer below the lowest adapted one hold frozen pretrained weights, and
dropout is off (model.py), so they map a record to the same hidden states in every step of every
round. :class:`FrozenPrefix` computes a record's hidden states the first time a batch draws it
(:class:`HiddenRows`), keeps them (once per distinct record, however many of the model's
datasets hold it: :class:`RowStore`; the in-process federation gives all its clients one
FrozenPrefix, so the records of a shared test pool are kept once, not once per client), and
trains and evaluates :class:`EncoderTop` (the adapted layers and the head) on them: the same
function of the same parameters, so the same per-sample gradients, the same clipping, the same
noise and the same accounting; only the repeated frozen forward pass is gone.

Privacy: the cached hidden states are a deterministic function of one record and public
weights. They stay in this process's memory with the clients' other data, are never written
and never sent; DP-SGD samples, clips and noises exactly as without the cache (Poisson sampling
draws the same records, whose cached rows enter the step).

Safety: the cache is used only when every trainable tensor of the model lies in
:class:`EncoderTop` (:func:`frozen_depth` and :meth:`FrozenPrefix.check_trainable`), and each
cached dataset is checked once against the whole model on its first records
(:func:`_agrees`); a model or a transformers version where the two disagree runs uncached, with a
warning. A dataset whose cache could grow beyond :data:`CACHE_LIMIT_BYTES` is not cached either.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from secure_fedsa.errors import ModelError
from secure_fedsa.model.encoder import LoraClassifier, tensor_group

# Largest cache of one dataset (train or test split of one client): hidden states are
# records × tokens × width float32 values (10 000 records × 40 tokens × 384 = 0.6 GB).
CACHE_LIMIT_BYTES = 4 * 2**30
# Records per forward pass while the cache is built, and how many are checked against the model.
_BUILD_BATCH = 256
_CHECK_RECORDS = 8
_CHECK_TOLERANCE = 1e-4


def _bert(model: LoraClassifier) -> nn.Module:
    """The transformers BertModel (or alike) under the peft wrapper."""
    return model.encoder.get_base_model()


def _width(model: LoraClassifier) -> int:
    """Values per token in the encoder's hidden states."""
    return int(_bert(model).config.hidden_size)


def _layers(model: LoraClassifier) -> nn.ModuleList | None:
    encoder = getattr(_bert(model), "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def frozen_depth(model: LoraClassifier) -> int:
    """How many encoder layers lie below every adapter tensor and every trainable parameter
    (0: nothing to cache, e.g. every layer adapted or an encoder of unknown layout)."""
    layers = _layers(model)
    base = _bert(model)
    embeddings = getattr(base, "embeddings", None)
    if layers is None or embeddings is None:
        return 0

    def touched(module: nn.Module) -> bool:
        return any(
            p.requires_grad or tensor_group(name) is not None
            for name, p in module.named_parameters()
        )

    if touched(embeddings):
        return 0
    for index, layer in enumerate(layers):
        if touched(layer):
            return index
    return 0  # nothing adapted in the encoder: not a configuration this package builds


def _attention_mask(base: nn.Module, hidden: torch.Tensor, mask: torch.Tensor):  # noqa: ANN202
    """The mask the encoder's layers take, built as the encoder itself builds it."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4.x
        return base.get_extended_attention_mask(mask, mask.shape)
    return create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask)


def _run_layers(
    base: nn.Module, layers: list[nn.Module], hidden: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    extended = _attention_mask(base, hidden, mask)
    for layer in layers:
        out = layer(hidden, extended)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
    return hidden


class EncoderTop(nn.Module):
    """The encoder's layers from ``depth`` up and the head: ``forward(hidden, attention_mask)``
    on the hidden states that enter layer ``depth``. Holds the model's own layer and head
    objects, so loading a client's adapter state into the model loads it here too."""

    def __init__(self, model: LoraClassifier, depth: int) -> None:
        super().__init__()
        layers = _layers(model)
        if layers is None or not 0 < depth < len(layers):
            raise ModelError(f"cannot start the encoder at layer {depth}")
        self.layers = nn.ModuleList(list(layers)[depth:])
        self.head = model.head
        object.__setattr__(self, "_base", _bert(model))  # not a child: its bottom is not ours

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = _run_layers(self._base, list(self.layers), hidden, attention_mask)
        return self.head(hidden, attention_mask)


class RowStore:
    """Hidden states entering the top layers, one per distinct record (its token ids and
    attention mask), shared by every dataset one :class:`FrozenPrefix` serves. They are a
    deterministic function of the record and the frozen weights, so a record that several
    datasets hold (the clients' test splits drawn from one pool, a duplicated text) is computed
    and kept once, however many clients hold it."""

    def __init__(self) -> None:
        self.rows: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return sum(row.element_size() * row.nelement() for row in self.rows.values())


class HiddenRows:
    """The hidden states entering layer ``depth`` of a dataset's records, each computed the
    first time a batch asks for it and kept (in ``store``, shared with the other datasets of the
    same model): indexing (``rows[index]``, with an index tensor, a slice or an int) returns a
    tensor. A record is never computed twice, and never when no batch draws it, so the cache
    costs no more than the frozen passes it replaces."""

    def __init__(
        self,
        model: LoraClassifier,
        depth: int,
        ids: torch.Tensor,
        mask: torch.Tensor,
        store: RowStore | None = None,
    ) -> None:
        self.model, self.depth, self.ids, self.mask = model, depth, ids, mask
        self.store = store if store is not None else RowStore()
        self.width = _width(model)
        self.done = torch.zeros(len(ids), dtype=torch.bool)
        self._keys: list[bytes | None] = [None] * len(ids)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.ids), self.ids.shape[1], self.width))

    def __len__(self) -> int:
        return len(self.ids)

    def _key(self, row: int) -> bytes:
        key = self._keys[row]
        if key is None:
            key = self.ids[row].numpy().tobytes() + self.mask[row].numpy().tobytes()
            self._keys[row] = key
        return key

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        rows = torch.arange(len(self.ids))[index]
        asked = rows.reshape(-1)
        missing = asked[~self.done[asked]].unique()
        if len(missing):
            todo: dict[bytes, int] = {}  # records no dataset of this model has computed yet
            for row in missing.tolist():
                key = self._key(row)
                if key not in self.store.rows:
                    todo.setdefault(key, row)
            if todo:
                at = torch.tensor(list(todo.values()), dtype=torch.long)
                hidden = encode_bottom(self.model, self.depth, self.ids[at], self.mask[at])
                self.store.rows.update(zip(todo, hidden, strict=True))
            self.done[missing] = True
        flat = asked.tolist()
        if not flat:
            return torch.empty((*rows.shape, self.ids.shape[1], self.width))
        out = torch.stack([self.store.rows[self._key(row)] for row in flat])
        return out.reshape(*rows.shape, self.ids.shape[1], self.width)


class CachedData(Dataset):
    """A client's records as (hidden states entering the top layers, mask, label): the
    ``tensors`` of a TensorDataset, with batched loading (``__getitems__``) for DataLoader."""

    def __init__(self, rows: HiddenRows, mask: torch.Tensor, labels: torch.Tensor) -> None:
        self.tensors = (rows, mask, labels)

    def __len__(self) -> int:
        return len(self.tensors[2])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        columns = [t[index] for t in self.tensors]
        return list(zip(*columns, strict=True))


class FrozenPrefix:
    """One client's view of the shared model: the module to train and evaluate, and its data.

    ``module(dataset)`` and ``data(dataset)`` give :class:`EncoderTop` and the dataset as
    :class:`CachedData` (rows computed on first use, once per record) when the model has a
    frozen bottom, and the whole model with the dataset as it is otherwise.
    """

    def __init__(
        self, model: LoraClassifier, *, limit_bytes: int | None = None, enabled: bool = True
    ) -> None:
        self.model = model
        self.depth = frozen_depth(model) if enabled else 0
        self.top = EncoderTop(model, self.depth) if self.depth else None
        self.limit_bytes = CACHE_LIMIT_BYTES if limit_bytes is None else limit_bytes
        # every record's hidden states, once, whichever of this model's datasets holds it
        self.store = RowStore()
        # Keyed by the dataset object itself, and gone with it: an id could be reused.
        self._cache: weakref.WeakKeyDictionary[Dataset, CachedData | None] = (
            weakref.WeakKeyDictionary()
        )

    def _cached(self, dataset: TensorDataset) -> CachedData | None:
        if dataset not in self._cache:
            self._cache[dataset] = self._build(dataset)
        return self._cache[dataset]

    def module(self, dataset: TensorDataset) -> nn.Module:
        return self.top if self._cached(dataset) is not None else self.model  # type: ignore[return-value]

    def data(self, dataset: TensorDataset) -> TensorDataset | CachedData:
        cached = self._cached(dataset)
        return dataset if cached is None else cached

    def check_trainable(self, module: nn.Module) -> None:
        """Refuse to train ``module`` unless it holds every trainable tensor of the model (a
        trainable tensor below the cache would be neither trained nor covered by DP)."""
        if module is self.model:
            return
        inside = {id(p) for p in module.parameters()}
        outside = [
            n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in inside
        ]
        if outside:
            raise ModelError(
                f"trainable tensors below the cached encoder layers: {outside[:3]}; "
                "this is a bug, please report it"
            )

    def _build(self, dataset: TensorDataset) -> CachedData | None:
        if self.top is None:
            return None
        ids, mask, labels = dataset.tensors
        if ids.numel() * _width(self.model) * 4 > self.limit_bytes:
            return None
        rows = HiddenRows(self.model, self.depth, ids, mask, self.store)
        if len(labels) and not _agrees(self.model, self.top, ids, mask, rows):
            warnings.warn(
                "the cached frozen encoder layers do not reproduce the model's output with this "
                "transformers version; training without the cache (slower, same results)",
                stacklevel=2,
            )
            self.top = None
            return None
        return CachedData(rows, mask, labels)


def encode_bottom(
    model: LoraClassifier, depth: int, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Hidden states entering layer ``depth`` for every record (no gradients)."""
    base = _bert(model)
    layers = list(_layers(model) or [])[:depth]
    parts = []
    with torch.no_grad():
        for start in range(0, len(ids), _BUILD_BATCH):
            piece_ids, piece_mask = (
                ids[start : start + _BUILD_BATCH],
                mask[start : start + _BUILD_BATCH],
            )
            hidden = base.embeddings(input_ids=piece_ids)
            parts.append(_run_layers(base, layers, hidden, piece_mask))
    if not parts:
        return torch.zeros((0, ids.shape[1], _width(model)))
    return torch.cat(parts)


def _agrees(
    model: nn.Module,
    top: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    rows: HiddenRows,
) -> bool:
    """Whether the cached path gives the whole model's logits on the first records."""
    n = min(_CHECK_RECORDS, len(ids))
    with torch.no_grad():
        whole = model(ids[:n], mask[:n])
        cached = top(rows[:n], mask[:n])
    return bool(torch.allclose(whole, cached, atol=_CHECK_TOLERANCE, rtol=0.0))
