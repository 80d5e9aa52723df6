"""Partitioners, the partition() entry point, per-client train/test splits and label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.data import (
    PARTITIONERS,
    TextDataset,
    dirichlet,
    iid,
    label_skew,
    natural,
    partition,
    split_clients,
    train_test_split,
)
from secure_fedsa.errors import DataError

FAST = settings(max_examples=40, deadline=None)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@st.composite
def labels_and_clients(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    labels = draw(st.lists(st.integers(0, 4), min_size=1, max_size=150))
    return np.array(labels), draw(st.integers(1, min(12, len(labels))))


@FAST
@given(case=labels_and_clients(), seed=st.integers(0, 2**32 - 1))
def test_iid_covers_each_example_once(case: tuple[np.ndarray, int], seed: int) -> None:
    labels, k = case
    parts = iid(labels, k, np.random.default_rng(seed))
    assert len(parts) == k
    assert_exact_cover(parts, len(labels))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert same(parts, iid(labels, k, np.random.default_rng(seed)))


@FAST
@given(
    case=labels_and_clients(),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.01, 100.0),
)
def test_dirichlet_covers_each_example_once(
    case: tuple[np.ndarray, int], seed: int, alpha: float
) -> None:
    labels, k = case
    parts = dirichlet(labels, k, np.random.default_rng(seed), alpha)
    assert len(parts) == k
    assert_exact_cover(parts, len(labels))
    assert min(map(len, parts)) >= 1
    assert same(parts, dirichlet(labels, k, np.random.default_rng(seed), alpha))


@st.composite
def groups_and_clients(draw: st.DrawFn) -> tuple[list[str], int]:
    groups = draw(st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=150))
    return groups, draw(st.integers(1, len(set(groups))))


@FAST
@given(case=groups_and_clients(), seed=st.integers(0, 2**32 - 1))
def test_natural_keeps_groups_whole(case: tuple[list[str], int], seed: int) -> None:
    groups, k = case
    parts = natural(groups, k, np.random.default_rng(seed))
    assert len(parts) == k
    assert_exact_cover(parts, len(groups))
    assert min(map(len, parts)) >= 1
    owners: dict[str, set[int]] = {}
    for client, part in enumerate(parts):
        for i in part:
            owners.setdefault(groups[i], set()).add(client)
    assert all(len(clients) == 1 for clients in owners.values())
    # greedy largest-first balancing: sizes differ by at most the largest group
    largest = max(groups.count(g) for g in set(groups))
    assert max(map(len, parts)) - min(map(len, parts)) <= largest
    assert same(parts, natural(groups, k, np.random.default_rng(seed)))


def test_natural_one_group_per_client_when_counts_match() -> None:
    groups = ["m"] * 50 + ["n"] * 3 + ["o"] * 20
    parts = natural(groups, 3, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [3, 20, 50]
    with pytest.raises(DataError, match="3 groups, fewer than the 4 clients"):
        natural(groups, 4, np.random.default_rng(0))


def test_natural_balances_by_largest_group_first() -> None:
    groups = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 3 + ["e"] * 3
    parts = natural(groups, 2, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [8, 10]
    # taken in any other order, the big group would land on top of small ones
    groups = list("abcdef") + ["z"] * 6
    for seed in range(10):
        parts = natural(groups, 2, np.random.default_rng(seed))
        assert [len(p) for p in parts] == [6, 6]


def test_dirichlet_fills_empty_clients() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    parts = dirichlet(labels, 6, np.random.default_rng(3), alpha=0.01)
    assert [len(p) for p in parts] == [1] * 6


def test_dirichlet_skew_grows_as_alpha_falls() -> None:
    labels = np.random.default_rng(0).integers(0, 4, size=2000)

    def mean_skew(alpha: float) -> float:
        return float(
            np.mean(
                [
                    label_skew(labels, dirichlet(labels, 10, np.random.default_rng(s), alpha))
                    for s in range(5)
                ]
            )
        )

    high, mid, low = mean_skew(100.0), mean_skew(1.0), mean_skew(0.1)
    assert high < mid < low
    assert high < 0.1 and low > 0.4


def test_label_skew_values() -> None:
    labels = np.array([0, 0, 1, 1])
    assert label_skew(labels, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(0.5)
    assert label_skew(labels, [np.array([0, 2]), np.array([1, 3])]) == pytest.approx(0.0)
    assert label_skew(labels, [np.array([0, 1, 2, 3]), np.array([], dtype=np.int64)]) == 0.0
    assert label_skew(labels, []) == 0.0


# --------------------------------------------------------------------------- partition()


def dataset(n: int, groups: bool = True) -> TextDataset:
    labels = np.arange(n) % 3
    names = tuple(f"g{i % 4}" for i in range(n)) if groups else None
    return TextDataset("toy", tuple(f"t{i}" for i in range(n)), labels, ("a", "b", "c"), names)


@pytest.mark.parametrize("method", sorted(PARTITIONERS))
def test_partition_is_deterministic(method: str) -> None:
    ds = dataset(120)
    parts = partition(ds, method=method, num_clients=4, seed=7)
    assert_exact_cover(parts, len(ds))
    assert same(parts, partition(ds, method=method, num_clients=4, seed=7))


def test_partition_seed_matters() -> None:
    ds = dataset(120)
    a = partition(ds, method="iid", num_clients=4, seed=1)
    assert not same(a, partition(ds, method="iid", num_clients=4, seed=2))


def test_partition_passes_alpha() -> None:
    ds = dataset(3000, groups=False)
    flat = partition(ds, method="dirichlet", num_clients=5, seed=0, alpha=1000.0)
    skewed = partition(ds, method="dirichlet", num_clients=5, seed=0, alpha=0.05)
    assert label_skew(ds.labels, flat) < label_skew(ds.labels, skewed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "shards"}, "method 'shards'; choose one of dirichlet, iid, natural"),
        ({"method": "iid", "num_clients": 11}, "10 examples cannot give each of 11 clients one"),
        ({"method": "iid", "num_clients": 0}, "must be at least 1"),
        ({"method": "dirichlet", "alpha": 0.0}, "alpha must be a positive number"),
        ({"method": "dirichlet", "alpha": float("nan")}, "alpha must be a positive number"),
        ({"method": "natural", "num_clients": 5}, "4 groups, fewer than the 5 clients"),
    ],
)
def test_partition_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"num_clients": 2, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=message):
        partition(dataset(10), **args)  # type: ignore[arg-type]


def test_natural_needs_groups() -> None:
    message = "'natural' needs a group column, and dataset 'toy' has none"
    with pytest.raises(DataError, match=message):
        partition(dataset(10, groups=False), method="natural", num_clients=2, seed=0)


# --------------------------------------------------------------------------- train/test


@FAST
@given(
    n=st.integers(2, 200),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 1000),
)
def test_train_test_split_partitions_the_client(
    n: int, fraction: float, seed: int, offset: int
) -> None:
    indices = np.arange(n) * 3 + offset
    labels = np.random.default_rng(seed).integers(0, 3, size=3 * n + offset)
    n_test = int(np.floor(fraction * n + 0.5))
    if n_test in (0, n):
        with pytest.raises(DataError):
            train_test_split(indices, test_fraction=fraction, seed=seed, labels=labels)
        return
    train, test = train_test_split(indices, test_fraction=fraction, seed=seed, labels=labels)
    assert len(test) == n_test
    assert not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), indices)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = train_test_split(indices, test_fraction=fraction, seed=seed, labels=labels)
    assert np.array_equal(again[1], test)


def test_train_test_split_is_stratified() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    train, test = train_test_split(np.arange(100), test_fraction=0.25, seed=0, labels=labels)
    assert np.bincount(labels[test]).tolist() == [20, 5]
    assert np.bincount(labels[train]).tolist() == [60, 15]


def test_train_test_split_errors() -> None:
    with pytest.raises(DataError) as info:
        train_test_split(np.arange(3), test_fraction=0.1, seed=0, client=2)
    assert str(info.value) == (
        "client 2 has 3 examples: no test split; use fewer clients or a larger --test-fraction"
    )
    with pytest.raises(DataError, match="client 0 has 1 examples: no training examples left"):
        train_test_split(np.arange(1), test_fraction=0.9, seed=0, client=0)
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(DataError, match="strictly between 0 and 1"):
            train_test_split(np.arange(10), test_fraction=bad, seed=0)


def test_split_clients() -> None:
    ds = dataset(300)
    parts = partition(ds, method="dirichlet", num_clients=3, seed=0, alpha=1.0)
    splits = split_clients(parts, test_fraction=0.2, seed=5, labels=ds.labels)
    assert len(splits) == 3
    for part, (train, test) in zip(parts, splits, strict=True):
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), part)
    again = split_clients(parts, test_fraction=0.2, seed=5, labels=ds.labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))
    tiny = [np.arange(0, 50), np.arange(50, 53)]
    with pytest.raises(DataError, match="client 1 has 3 examples: no test split"):
        split_clients(tiny, test_fraction=0.1, seed=0)
