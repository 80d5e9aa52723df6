"""Splitting one dataset across clients, and each client's share into train and test.

Every partitioner returns ``list[np.ndarray]``: one sorted int64 array of example indices per
client, each example in exactly one client, no client empty. All randomness comes from the
``numpy.random.Generator`` passed in, so a seed fixes the result.

- ``iid``: a uniform random split into near-equal shares.
- ``dirichlet``: per class, client shares drawn from Dirichlet(alpha) (Hsu et al. 2019, the
  non-IID setting of FedAvg and FedSA-LoRA experiments); small alpha, strong label skew.
- ``natural``: whole groups (movie, topic, source file) go to clients, largest group first to
  the client with the fewest examples so far.

:func:`split_dataset` is the whole recipe a run uses: partition, then each client's train / test
split, optionally with a quantity skew (:func:`sized_partition`: log-normal numbers of training
records within bounds, each client's label mix still drawn as ``iid`` or ``dirichlet`` asks), a
fixed-size test split per client drawn from a held-out pool (:func:`draw_tests`), and a
validation split carved out of each client's training records (:func:`carve_validation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from secure_fedsa.data.datasets import TextDataset
from secure_fedsa.errors import DataError

Parts = list[np.ndarray]

# Fresh Dirichlet draws tried before empty clients are filled by moving single examples.
_DIRICHLET_DRAWS = 10


def _check_clients(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise DataError(f"the number of clients must be at least 1, got {num_clients}")
    if num_examples < num_clients:
        raise DataError(
            f"{num_examples} examples cannot give each of {num_clients} clients one; "
            "use fewer clients or more data"
        )


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha > 0):
        raise DataError(f"the Dirichlet alpha must be a positive number, got {alpha}")


def _sorted_parts(parts: Sequence[np.ndarray]) -> Parts:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(labels: Sequence[int] | np.ndarray, num_clients: int, rng: np.random.Generator) -> Parts:
    """Shuffle all examples and cut them into ``num_clients`` shares differing by at most one."""
    n = len(labels)
    _check_clients(n, num_clients)
    return _sorted_parts(np.array_split(rng.permutation(n), num_clients))


def _dirichlet_draw(
    by_class: Sequence[np.ndarray], num_clients: int, rng: np.random.Generator, alpha: float
) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for members in by_class:
        shuffled = rng.permutation(members)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(shuffled)).astype(np.int64)
        for client, piece in enumerate(np.split(shuffled, cuts)):
            pieces[client].append(piece)
    return [np.concatenate(p) for p in pieces]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty client one example from the largest client (lowest index on ties)."""
    parts = list(parts)
    for client in range(len(parts)):
        if len(parts[client]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[client] = parts[donor][-1:]
            parts[donor] = parts[donor][:-1]
    return parts


def dirichlet(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float = 0.5,
) -> Parts:
    """Per class, split its examples across clients in Dirichlet(alpha) proportions.

    A draw that leaves a client empty is redrawn (up to a few times, as the reference
    implementations do); if every draw does, each empty client takes one example from the
    largest client. That always works once there are at least as many examples as clients.
    """
    labels = np.asarray(labels).reshape(-1)
    _check_clients(len(labels), num_clients)
    _check_alpha(alpha)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts = _dirichlet_draw(by_class, num_clients, rng, alpha)
    for _ in range(_DIRICHLET_DRAWS - 1):
        if all(len(p) for p in parts):
            break
        parts = _dirichlet_draw(by_class, num_clients, rng, alpha)
    return _sorted_parts(_fill_empty(parts))


def natural(
    groups: Sequence[str] | np.ndarray, num_clients: int, rng: np.random.Generator
) -> Parts:
    """Assign whole groups to clients, never splitting one, balancing client sizes greedily.

    Groups are taken largest first (ties in random order) and each goes to the client with
    the fewest examples so far (lowest index on ties). With exactly as many groups as clients,
    each client gets one group.
    """
    keys = np.asarray(groups).reshape(-1)
    _check_clients(len(keys), num_clients)
    names, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    if len(names) < num_clients:
        raise DataError(
            f"the data has {len(names)} groups, fewer than the {num_clients} clients asked for; "
            "use at most that many clients or another partition method"
        )
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    loads = np.zeros(num_clients, dtype=np.int64)
    owner = np.empty(len(names), dtype=np.int64)
    for group in order:
        client = int(np.argmin(loads))
        owner[group] = client
        loads[client] += counts[group]
    client_of = owner[inverse.reshape(-1)]
    return [np.flatnonzero(client_of == c).astype(np.int64) for c in range(num_clients)]


@dataclass(frozen=True)
class Partitioner:
    """A registered method: which per-example keys it reads, and how it splits them.

    ``keys(dataset)`` gives the labels or groups (None when the dataset lacks them);
    ``split(keys, num_clients, rng, alpha)`` returns the parts; ``needs`` names the keys in
    error messages.
    """

    keys: Callable[[TextDataset], Sequence[str] | np.ndarray | None]
    split: Callable[[Sequence[str] | np.ndarray, int, np.random.Generator, float], Parts]
    needs: str


PARTITIONERS: dict[str, Partitioner] = {
    "iid": Partitioner(lambda ds: ds.labels, lambda k, n, rng, a: iid(k, n, rng), "labels"),
    "dirichlet": Partitioner(lambda ds: ds.labels, dirichlet, "labels"),
    "natural": Partitioner(
        lambda ds: ds.groups, lambda k, n, rng, a: natural(k, n, rng), "a group column"
    ),
}


def _partitioner(method: str) -> Partitioner:
    partitioner = PARTITIONERS.get(method)
    if partitioner is None:
        raise DataError(
            f"unknown partition method '{method}'; choose one of {', '.join(sorted(PARTITIONERS))}"
        )
    return partitioner


def partition(
    dataset: TextDataset, *, method: str, num_clients: int, seed: int, alpha: float = 0.5
) -> Parts:
    """Split ``dataset`` into ``num_clients`` index arrays with a method from PARTITIONERS."""
    partitioner = _partitioner(method)
    _check_alpha(alpha)
    _check_clients(len(dataset), num_clients)
    keys = partitioner.keys(dataset)
    if keys is None:
        raise DataError(
            f"partition method '{method}' needs {partitioner.needs}, and dataset "
            f"'{dataset.name}' has none; give a group column or one file per client"
        )
    return partitioner.split(keys, num_clients, np.random.default_rng(seed), alpha)


def train_test_split(
    indices: Sequence[int] | np.ndarray,
    *,
    test_fraction: float,
    seed: int,
    labels: Sequence[int] | np.ndarray | None = None,
    client: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's ``indices`` into sorted (train, test) index arrays.

    The test share is ``round(test_fraction * n)`` examples. Given the dataset's ``labels``
    (indexed by the values in ``indices``), the split is stratified: each class contributes to
    the test share in proportion to its size (largest remainders, ties at random). ``client``
    only names the client in error messages.
    """
    if not (math.isfinite(test_fraction) and 0 < test_fraction < 1):
        raise DataError(f"the test fraction must lie strictly between 0 and 1, got {test_fraction}")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(idx)
    n_test = math.floor(test_fraction * n + 0.5)
    who = "the client" if client is None else f"client {client}"
    if n_test == 0:
        raise DataError(
            f"{who} has {n} examples: no test split; use fewer clients or a larger --test-fraction"
        )
    if n_test == n:
        raise DataError(
            f"{who} has {n} examples: no training examples left; "
            "use fewer clients or a smaller --test-fraction"
        )
    keys = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)[idx]
    is_test = _stratified_mask(keys, n_test, np.random.default_rng(seed))
    return np.sort(idx[~is_test]), np.sort(idx[is_test])


def _stratified_mask(keys: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A mask choosing ``size`` of the positions of ``keys``, each class in proportion to its
    count (largest remainders, ties at random), uniformly at random within a class."""
    n = len(keys)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    quota = size * counts / n
    take = np.floor(quota).astype(np.int64)
    extra = size - int(take.sum())
    by_remainder = np.lexsort((rng.random(len(counts)), -(quota - take)))
    take[by_remainder[:extra]] += 1
    inverse = inverse.reshape(-1)
    positions = np.concatenate(
        [
            rng.choice(np.flatnonzero(inverse == c), size=int(t), replace=False)
            for c, t in enumerate(take)
        ]
    )
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def split_clients(
    parts: Sequence[np.ndarray],
    *,
    test_fraction: float,
    seed: int,
    labels: Sequence[int] | np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`train_test_split` for every client, each with its own seed derived from ``seed``."""
    return [
        train_test_split(
            part,
            test_fraction=test_fraction,
            seed=int(np.random.SeedSequence([seed, client]).generate_state(1)[0]),
            labels=labels,
            client=client,
        )
        for client, part in enumerate(parts)
    ]


def label_skew(labels: Sequence[int] | np.ndarray, parts: Sequence[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the overall one.

    0 means every client sees the overall label distribution; 1 is the most skewed possible.
    The overall distribution is taken over the examples in ``parts``; empty parts are skipped.
    """
    labels = np.asarray(labels).reshape(-1)
    parts = [np.asarray(p, dtype=np.int64) for p in parts if len(p)]
    if not parts:
        return 0.0
    every = labels[np.concatenate(parts)]
    classes = np.unique(every)
    overall = np.bincount(np.searchsorted(classes, every), minlength=len(classes)) / len(every)
    distances = [
        0.5
        * np.abs(
            np.bincount(np.searchsorted(classes, labels[p]), minlength=len(classes)) / len(p)
            - overall
        ).sum()
        for p in parts
    ]
    return float(np.mean(distances))


# --------------------------------------------------------------------------- quantity skew

# How each client's number of training records is chosen (RunConfig.client_sizes).
# partition: as the partition method gives them (the default); lognormal: sized_partition.
CLIENT_SIZES = ("partition", "lognormal")
# Bisection steps when shrinking the log-normal median until every class has enough records.
_SCALE_STEPS = 60
# Below a median this many sigmas under the smallest size, every client gets the smallest size.
_TAIL = 8.0


def _derived_seed(seed: int, client: int, purpose: int) -> int:
    """A seed for one use derived from the run's seed: purpose 1 a client's validation split, 2
    its test draw, 3 the test pool, 4 the partition of the rest (3 and 4 with client 0). The
    purpose is never 0: SeedSequence ignores trailing zeros, so ``(seed, client)``, which
    :func:`split_clients` uses, stays distinct."""
    return int(np.random.SeedSequence([seed, client, purpose]).generate_state(1)[0])


def _apportion(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row ``k``: non-negative integers summing to ``totals[k]`` in proportion to ``weights[k]``
    (largest remainders; on ties the lower column first)."""
    weights = np.asarray(weights, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.int64)
    quota = totals[:, None] * weights / weights.sum(axis=1, keepdims=True)
    counts = np.floor(quota).astype(np.int64)
    extra = totals - counts.sum(axis=1)
    order = np.argsort(-(quota - counts), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :].repeat(len(order), 0), 1)
    return counts + (rank < extra[:, None])


def _class_name(label: int, label_names: Sequence[str] | None) -> str:
    return f"'{label_names[label]}'" if label_names is not None else f"label {label}"


def sized_partition(
    labels: Sequence[int] | np.ndarray,
    pool: Sequence[int] | np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    mix: str = "dirichlet",
    alpha: float = 0.5,
    sigma: float = 1.0,
    low: int = 50,
    high: int = 1000,
    label_names: Sequence[str] | None = None,
) -> Parts:
    """Give clients log-normal numbers of training records from ``pool``, each its own label mix.

    Client ``k`` gets ``n_k`` records, drawn from a log-normal with median ``m`` and log-scale
    ``sigma`` truncated to ``[low, high]`` (by inverse CDF from one uniform draw per client, so a
    client's size grows with ``m``; no sizes pile up at a bound). Its label mix ``q_k`` is the
    pool's label distribution ``p`` (``mix="iid"``) or a draw from Dirichlet(``alpha * C * p``)
    over the pool's ``C`` classes (``"dirichlet"``: for balanced classes Dirichlet(``alpha``) per
    client; its mean is ``p``, so the clients ask for each class in about the proportion the pool
    holds it). The counts of each class follow ``n_k * q_k`` (largest remainders).

    The median ``m`` is the geometric middle of the bounds, ``sqrt(low * high)``, lowered
    (bisection) until the pool holds enough records of every class; records no client receives
    are unused. If even ``n_k = low`` for every client asks for more of a class than the pool
    has, the label mixes are redrawn a few times, then it is an error. Returns one sorted index
    array (values from ``pool``) per client.
    """
    labels = np.asarray(labels).reshape(-1)
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    if num_clients < 1:
        raise DataError(f"the number of clients must be at least 1, got {num_clients}")
    if mix not in ("iid", "dirichlet"):
        raise DataError(
            f"client sizes can be skewed with the iid or dirichlet label mix, not {mix!r}"
        )
    _check_alpha(alpha)
    _check_sizes(sigma, low, high)
    if num_clients * low > len(pool):
        raise DataError(
            f"{num_clients} clients with at least {low} training records each need "
            f"{num_clients * low} records, but {len(pool)} are available; use fewer clients or "
            "a lower --min-train-examples"
        )
    classes, supply = np.unique(labels[pool], return_counts=True)
    prior = supply / supply.sum()
    quantiles = rng.random(num_clients)

    def draw_mixes() -> np.ndarray:
        if mix == "iid":
            return np.tile(prior, (num_clients, 1))
        mixes = rng.dirichlet(alpha * len(classes) * prior, size=num_clients)
        broken = ~np.all(np.isfinite(mixes), axis=1) | ~(mixes.sum(axis=1) > 0)
        mixes[broken] = prior
        return mixes

    def demand(median: float, mixes: np.ndarray) -> np.ndarray:
        sizes = _truncated_lognormal(quantiles, median, sigma, low, high)
        return _apportion(sizes, mixes)

    def fits(counts: np.ndarray) -> bool:
        return bool(np.all(counts.sum(axis=0) <= supply))

    mixes = draw_mixes()
    for _ in range(_DIRICHLET_DRAWS - 1):
        if mix == "iid" or fits(demand(0.0, mixes)):
            break
        mixes = draw_mixes()
    smallest = demand(0.0, mixes)
    if not fits(smallest):
        short = int(np.argmax(smallest.sum(axis=0) - supply))
        name = _class_name(int(classes[short]), label_names)
        raise DataError(
            f"{num_clients} clients with at least {low} training records each ask for "
            f"{int(smallest[:, short].sum())} records of {name}"
            f" (label mixes drawn with alpha {alpha:g}), but {int(supply[short])} are available; "
            "use fewer clients, a lower --min-train-examples or a larger --alpha"
        )
    median = math.sqrt(low * high)
    if not fits(demand(median, mixes)):
        lo, hi = 0.0, median  # at 0 every client has ``low`` records
        for _ in range(_SCALE_STEPS):
            middle = (lo + hi) / 2
            lo, hi = (middle, hi) if fits(demand(middle, mixes)) else (lo, middle)
        median = lo
    counts = demand(median, mixes)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for column, label in enumerate(classes):
        members = rng.permutation(pool[labels[pool] == label])
        ends = np.cumsum(counts[:, column])
        for client, (end, count) in enumerate(zip(ends, counts[:, column], strict=True)):
            parts[client].append(members[end - count : end])
    return _sorted_parts([np.concatenate(p) for p in parts])


def _truncated_lognormal(
    quantiles: np.ndarray, median: float, sigma: float, low: int, high: int
) -> np.ndarray:
    """Integer sizes at ``quantiles`` of LogNormal(log ``median``, ``sigma``) truncated to
    ``[low, high]``; all ``low`` when ``median`` is far below ``low`` (or 0)."""
    if low == high or median <= low * math.exp(-_TAIL * sigma):
        return np.full(len(quantiles), low, dtype=np.int64)
    a, b = math.log(low / median) / sigma, math.log(high / median) / sigma
    if a > 0:  # the upper tail: survival functions keep their precision there
        z = -ndtri(ndtr(-a) - quantiles * (ndtr(-a) - ndtr(-b)))
    else:
        z = ndtri(ndtr(a) + quantiles * (ndtr(b) - ndtr(a)))
    sizes = np.floor(median * np.exp(sigma * z) + 0.5)
    return np.clip(np.nan_to_num(sizes, nan=low), low, high).astype(np.int64)


def _check_sizes(sigma: float, low: int, high: int) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise DataError(f"the log-normal sigma must be a positive number, got {sigma}")
    if not (isinstance(low, int | np.integer) and low >= 1):
        raise DataError(f"the fewest training records per client must be at least 1, got {low}")
    if not (isinstance(high, int | np.integer) and high >= low):
        raise DataError(
            f"the most training records per client ({high}) is below the fewest ({low}); "
            "raise --max-train-examples or lower --min-train-examples"
        )


def draw_tests(
    labels: Sequence[int] | np.ndarray,
    pool: Sequence[int] | np.ndarray,
    parts: Sequence[np.ndarray],
    *,
    size: int,
    seed: int,
    label_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Each client's test split: ``size`` records of ``pool`` with the label mix of its part.

    The class counts follow the client's own counts (largest remainders); within a class the
    records are drawn at random, without repeats within a client. Different clients draw from
    the same pool, so their test splits may share records; no record of the pool is in any part.
    """
    labels = np.asarray(labels).reshape(-1)
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    num_labels = int(labels.max()) + 1 if len(labels) else 0
    members = [pool[labels[pool] == c] for c in range(num_labels)]
    tests = []
    for client, part in enumerate(parts):
        own = np.bincount(labels[np.asarray(part, dtype=np.int64)], minlength=num_labels)
        if own.sum() == 0:
            raise DataError(f"client {client} has no training records to take a label mix from")
        want = _apportion(np.array([size]), own[None, :])[0]
        for c in np.flatnonzero(want > np.array([len(m) for m in members])):
            raise DataError(
                f"client {client}'s test split needs {int(want[c])} records of "
                f"{_class_name(int(c), label_names)} but the test pool holds {len(members[c])}; "
                "use fewer --test-examples or a larger --test-fraction"
            )
        rng = np.random.default_rng(_derived_seed(seed, client, 2))
        picked = [rng.choice(members[c], size=int(t), replace=False) for c, t in enumerate(want)]
        tests.append(np.sort(np.concatenate(picked).astype(np.int64)))
    return tests


def carve_validation(
    indices: Sequence[int] | np.ndarray,
    *,
    fraction: float,
    seed: int,
    labels: Sequence[int] | np.ndarray | None = None,
    client: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's training ``indices`` into sorted (train, validation) index arrays.

    The validation share is ``round(fraction * n)`` records, stratified by ``labels`` like
    :func:`train_test_split`; ``fraction=0`` gives an empty validation split.
    """
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise DataError(f"the validation fraction must lie in [0, 1), got {fraction}")
    idx = np.sort(np.asarray(indices, dtype=np.int64).reshape(-1))
    if fraction == 0:
        return idx, np.empty(0, dtype=np.int64)
    n = len(idx)
    n_val = math.floor(fraction * n + 0.5)
    who = "the client" if client is None else f"client {client}"
    if n_val == 0:
        raise DataError(
            f"{who} has {n} training examples: no validation split; use a larger "
            "--validation-fraction or more training records per client"
        )
    if n_val == n:
        raise DataError(
            f"{who} has {n} training examples: none left to train on after the validation "
            "split; use a smaller --validation-fraction"
        )
    keys = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)[idx]
    is_val = _stratified_mask(keys, n_val, np.random.default_rng(seed))
    return idx[~is_val], idx[is_val]


@dataclass(frozen=True)
class ClientSplit:
    """One client's sorted example indices; train, validation and test are disjoint.

    ``validation`` was carved out of the client's training records; nobody trains on it.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def records(self) -> np.ndarray:
        """Every record the client holds (train, validation and test), sorted."""
        return np.sort(np.concatenate([self.train, self.validation, self.test]))


def split_dataset(
    dataset: TextDataset,
    *,
    method: str,
    num_clients: int,
    seed: int,
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    client_sizes: str = "partition",
    size_sigma: float = 1.0,
    min_train_examples: int = 50,
    max_train_examples: int = 1000,
    test_examples: int | None = None,
) -> list[ClientSplit]:
    """Every client's train, validation and test indices: the split a run uses.

    - ``test_examples=None`` (the default): :func:`partition`, then :func:`split_clients`
      (``test_fraction`` of each client's records is its test split), exactly as before.
    - ``test_examples=T``: ``test_fraction`` of the dataset (stratified) is held out as a test
      pool no client trains on; the rest is partitioned (``method`` iid or dirichlet, or
      :func:`sized_partition` with ``client_sizes="lognormal"``), and each client's test split
      is ``T`` records of the pool with its own label mix (:func:`draw_tests`).

    Then ``validation_fraction`` of each client's training records becomes its validation split
    (:func:`carve_validation`). Log-normal sizes need ``test_examples`` and refuse ``natural``
    (a natural client is its group, with the group's size). Everything is checked before
    anything is drawn; the result is fixed by ``seed``.
    """
    partitioner = _partitioner(method)
    _check_alpha(alpha)
    _check_clients(len(dataset), num_clients)
    if not (math.isfinite(test_fraction) and 0 < test_fraction < 1):
        raise DataError(f"the test fraction must lie strictly between 0 and 1, got {test_fraction}")
    if not (math.isfinite(validation_fraction) and 0 <= validation_fraction < 1):
        raise DataError(f"the validation fraction must lie in [0, 1), got {validation_fraction}")
    if client_sizes not in CLIENT_SIZES:
        raise DataError(
            f"unknown client sizes '{client_sizes}'; choose one of {', '.join(CLIENT_SIZES)}"
        )
    sized = client_sizes == "lognormal"
    if sized:
        _check_sizes(size_sigma, min_train_examples, max_train_examples)
        if test_examples is None:
            raise DataError(
                "log-normal client sizes need a fixed test split per client: give --test-examples "
                "(e.g. 200); a fraction of a 50-record client is too small to measure"
            )
    if test_examples is not None:
        if not (isinstance(test_examples, int | np.integer) and test_examples >= 1):
            raise DataError(f"the test examples per client must be at least 1, got {test_examples}")
        if method == "natural":
            raise DataError(
                "--test-examples draws each client's test split by label mix from a shared pool, "
                "which does not fit natural clients (their groups differ in more than labels); "
                "use --test-fraction with --partition natural"
            )
    labels = dataset.labels
    if test_examples is None:
        parts = partition(dataset, method=method, num_clients=num_clients, seed=seed, alpha=alpha)
        pairs = split_clients(parts, test_fraction=test_fraction, seed=seed, labels=labels)
    else:
        n = len(dataset)
        n_pool = math.floor(test_fraction * n + 0.5)
        if n_pool == 0 or n_pool == n:
            raise DataError(
                f"--test-fraction {test_fraction:g} of {n} examples leaves no "
                f"{'test pool' if n_pool == 0 else 'training records'}; change --test-fraction"
            )
        if test_examples > n_pool:
            raise DataError(
                f"--test-examples {test_examples} exceeds the test pool of {n_pool} records "
                f"(--test-fraction {test_fraction:g} of {n}); use fewer test examples or a "
                "larger --test-fraction"
            )
        if sized and num_clients * min_train_examples > n - n_pool:
            raise DataError(
                f"{num_clients} clients with at least {min_train_examples} training records "
                f"each need {num_clients * min_train_examples} records, but {n - n_pool} are left "
                f"for training ({n} less a test pool of {n_pool}); use fewer clients, a lower "
                "--min-train-examples or a smaller --test-fraction"
            )
        _check_clients(n - n_pool, num_clients)
        rest, pool = train_test_split(
            np.arange(n), test_fraction=test_fraction, seed=_derived_seed(seed, 0, 3), labels=labels
        )
        rng = np.random.default_rng(_derived_seed(seed, 0, 4))
        if sized:
            parts = sized_partition(
                labels,
                rest,
                num_clients,
                rng,
                mix=method,
                alpha=alpha,
                sigma=size_sigma,
                low=min_train_examples,
                high=max_train_examples,
                label_names=dataset.label_names,
            )
        else:
            pieces = partitioner.split(labels[rest], num_clients, rng, alpha)
            parts = [rest[p] for p in pieces]
        tests = draw_tests(
            labels, pool, parts, size=test_examples, seed=seed, label_names=dataset.label_names
        )
        pairs = list(zip(parts, tests, strict=True))
    splits = []
    for client, (train, test) in enumerate(pairs):
        train, validation = carve_validation(
            train,
            fraction=validation_fraction,
            seed=_derived_seed(seed, client, 1),
            labels=labels,
            client=client,
        )
        splits.append(ClientSplit(train=train, validation=validation, test=test))
    return splits
