"""Labelled text for federated runs: datasets (bundled or the user's files) and client splits."""

from secure_fedsa.data.datasets import (
    BUNDLED,
    TWEET_TOPICS,
    TextDataset,
    load_client_files,
    load_dataset,
    load_file,
    restrict_labels,
    tweet_topic,
)
from secure_fedsa.data.partition import (
    PARTITIONERS,
    Partitioner,
    dirichlet,
    iid,
    label_skew,
    natural,
    partition,
    split_clients,
    train_test_split,
)

__all__ = [
    "BUNDLED",
    "PARTITIONERS",
    "TWEET_TOPICS",
    "Partitioner",
    "TextDataset",
    "dirichlet",
    "iid",
    "label_skew",
    "load_client_files",
    "load_dataset",
    "load_file",
    "natural",
    "partition",
    "restrict_labels",
    "split_clients",
    "train_test_split",
    "tweet_topic",
]
