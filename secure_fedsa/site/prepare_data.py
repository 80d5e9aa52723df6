"""From a configuration to each client's tokenized train, validation and test data, checked first.

Everything here runs before a run directory is created: a bad data file, an impossible split or a
missing model stops the run with a one-line error and nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from secure_fedsa.config import RunConfig
from secure_fedsa.data import (
    BUNDLED,
    ClientSplit,
    TextDataset,
    label_skew,
    load_client_files,
    load_file,
    partition,
    restrict_labels,
    split_dataset,
)
from secure_fedsa.errors import DataError
from secure_fedsa.model.encoder import ModelSpec, check_fits, load_tokenizer
from secure_fedsa.site.client import ClientData


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


def _method_and_subset(
    config: RunConfig, dataset: TextDataset
) -> tuple[str, np.ndarray, TextDataset]:
    """The partition method (files and ``--client-column`` give a natural split), and the
    ``--max-examples`` subset: its indices into ``dataset`` and the subset itself."""
    keep = _subsample(dataset, config.max_examples, config.seed)
    sub = dataset.subset(keep) if len(keep) < len(dataset) else dataset
    natural = bool(config.data_files) or config.client_column is not None
    if natural and config.data_files and len(config.data_files) != config.num_clients:
        raise DataError(
            f"{len(config.data_files)} data files but --num-clients {config.num_clients}: "
            "give one file per client"
        )
    return ("natural" if natural else config.partition), keep, sub


def client_indices(config: RunConfig, dataset: TextDataset) -> list[np.ndarray]:
    """Example indices per client (train and test together) for the default split, without
    ``--test-examples`` or ``--client-sizes lognormal``; :func:`client_splits` covers all."""
    method, keep, sub = _method_and_subset(config, dataset)
    parts = partition(
        sub, method=method, num_clients=config.num_clients, seed=config.seed, alpha=config.alpha
    )
    return [keep[p] for p in parts]


def client_splits(config: RunConfig, dataset: TextDataset) -> list[ClientSplit]:
    """Each client's train, validation and test indices into ``dataset``, as the config asks."""
    method, keep, sub = _method_and_subset(config, dataset)
    splits = split_dataset(
        sub,
        method=method,
        num_clients=config.num_clients,
        seed=config.seed,
        alpha=config.alpha,
        test_fraction=config.test_fraction,
        validation_fraction=config.validation_fraction,
        client_sizes=config.client_sizes,
        size_sigma=config.size_sigma,
        min_train_examples=config.min_train_examples,
        max_train_examples=config.max_train_examples,
        test_examples=config.test_examples,
    )
    return [
        ClientSplit(train=keep[s.train], validation=keep[s.validation], test=keep[s.test])
        for s in splits
    ]


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    encoded = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return encoded["input_ids"], encoded["attention_mask"]


def tensors(
    tokenizer,  # noqa: ANN001
    dataset: TextDataset,
    indices: np.ndarray,
    max_length: int,
) -> TensorDataset:
    """The examples at ``indices``, tokenized: (input ids, attention mask, label)."""
    if len(indices) == 0:  # tokenizers refuse an empty batch
        empty = torch.zeros(0, max_length, dtype=torch.long)
        return TensorDataset(empty, empty.clone(), torch.zeros(0, dtype=torch.long))
    ids, mask = tokenize(tokenizer, [dataset.texts[i] for i in indices], max_length)
    labels = torch.as_tensor(dataset.labels[indices], dtype=torch.long)
    return TensorDataset(ids, mask, labels)


def prepare(config: RunConfig) -> Prepared:
    """Load, partition, split and tokenize; every check happens here, before any training."""
    check_fits(model_spec(config), config.max_length)
    dataset = load_source(config)
    splits = client_splits(config, dataset)
    tokenizer = load_tokenizer(model_spec(config))
    clients: dict[str, ClientData] = {}
    counts: dict[str, list[int]] = {}
    num_labels = len(dataset.label_names)
    for number, split in enumerate(splits):
        client_id = f"client-{number}"
        clients[client_id] = ClientData(
            train=tensors(tokenizer, dataset, split.train, config.max_length),
            test=tensors(tokenizer, dataset, split.test, config.max_length),
            validation=tensors(tokenizer, dataset, split.validation, config.max_length),
        )
        held = dataset.labels[split.records]
        counts[client_id] = np.bincount(held, minlength=num_labels).tolist()
    return Prepared(
        dataset_name=config.dataset if not config.data_files else "files",
        label_names=tuple(dataset.label_names),
        clients=clients,
        label_counts=counts,
        label_skew=label_skew(dataset.labels, [s.records for s in splits]),
    )
