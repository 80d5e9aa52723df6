"""From a configuration to each client's tokenized train and test data, checked up front.

Everything here runs before a run directory is created: a bad data file, an impossible split or a
missing model stops the run with a one-line error and nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from secure_fedsa.client import ClientData
from secure_fedsa.config import RunConfig
from secure_fedsa.data import (
    BUNDLED,
    TextDataset,
    label_skew,
    load_client_files,
    load_file,
    partition,
    restrict_labels,
    split_clients,
)
from secure_fedsa.errors import DataError
from secure_fedsa.model import ModelSpec, check_fits, load_tokenizer


@dataclass(frozen=True)
class Prepared:
    dataset_name: str
    label_names: tuple[str, ...]
    clients: dict[str, ClientData]
    label_counts: dict[str, list[int]]
    label_skew: float


def model_spec(config: RunConfig) -> ModelSpec:
    return ModelSpec(
        path=config.model,
        num_layers=config.num_layers,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        target_modules=tuple(config.target_modules),
        adapter=config.adapter,
        vera_r=config.vera_r,
        adapter_layers=config.adapter_layers,
    )


def load_source(config: RunConfig) -> TextDataset:
    """The dataset named by the config: one file per client, a bundled name, or a file path."""
    if config.data_files:
        dataset = load_client_files(
            [Path(p) for p in config.data_files],
            text_column=config.text_column,
            label_column=config.label_column,
        )
    elif config.dataset in BUNDLED:
        dataset = BUNDLED[config.dataset]()
    else:
        path = Path(config.dataset)
        if not path.exists():
            raise DataError(
                f"dataset {config.dataset!r} is neither a bundled dataset "
                f"({', '.join(sorted(BUNDLED))}) nor an existing file"
            )
        dataset = load_file(
            path,
            text_column=config.text_column,
            label_column=config.label_column,
            group_column=config.client_column,
        )
    if config.labels:
        dataset = restrict_labels(dataset, config.labels)
    return dataset


def _subsample(dataset: TextDataset, limit: int | None, seed: int) -> np.ndarray:
    indices = np.arange(len(dataset))
    if limit is None or limit >= len(dataset):
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=limit, replace=False))


def client_indices(config: RunConfig, dataset: TextDataset) -> list[np.ndarray]:
    """Example indices per client; files and ``--client-column`` give a natural split."""
    keep = _subsample(dataset, config.max_examples, config.seed)
    sub = dataset.subset(keep) if len(keep) < len(dataset) else dataset
    natural = bool(config.data_files) or config.client_column is not None
    method = "natural" if natural else config.partition
    if natural and config.data_files and len(config.data_files) != config.num_clients:
        raise DataError(
            f"{len(config.data_files)} data files but --num-clients {config.num_clients}: "
            "give one file per client"
        )
    parts = partition(
        sub, method=method, num_clients=config.num_clients, seed=config.seed, alpha=config.alpha
    )
    return [keep[p] for p in parts]


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    encoded = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return encoded["input_ids"], encoded["attention_mask"]


def prepare(config: RunConfig) -> Prepared:
    """Load, partition, split and tokenize; every check happens here, before any training."""
    check_fits(model_spec(config), config.max_length)
    dataset = load_source(config)
    parts = client_indices(config, dataset)
    tokenizer = load_tokenizer(model_spec(config))
    clients: dict[str, ClientData] = {}
    counts: dict[str, list[int]] = {}
    num_labels = len(dataset.label_names)
    splits_by_client = split_clients(
        parts, test_fraction=config.test_fraction, seed=config.seed, labels=dataset.labels
    )
    pairs = zip(parts, splits_by_client, strict=True)
    for number, (indices, (train_idx, test_idx)) in enumerate(pairs):
        client_id = f"client-{number}"
        splits = {}
        for name, idx in (("train", train_idx), ("test", test_idx)):
            texts = [dataset.texts[i] for i in idx]
            ids, mask = tokenize(tokenizer, texts, config.max_length)
            labels = torch.as_tensor(dataset.labels[idx], dtype=torch.long)
            splits[name] = TensorDataset(ids, mask, labels)
        clients[client_id] = ClientData(train=splits["train"], test=splits["test"])
        counts[client_id] = np.bincount(dataset.labels[indices], minlength=num_labels).tolist()
    return Prepared(
        dataset_name=config.dataset if not config.data_files else "files",
        label_names=tuple(dataset.label_names),
        clients=clients,
        label_counts=counts,
        label_skew=label_skew(dataset.labels, parts),
    )
