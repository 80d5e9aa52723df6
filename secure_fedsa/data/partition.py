"""Splitting one dataset across clients, and each client's share into train and test.

Every partitioner returns ``list[np.ndarray]``: one sorted int64 array of example indices per
client, each example in exactly one client, no client empty. All randomness comes from the
``numpy.random.Generator`` passed in, so a seed fixes the result.

- ``iid``: a uniform random split into near-equal shares.
- ``dirichlet``: per class, client shares drawn from Dirichlet(alpha) (Hsu et al. 2019, the
  non-IID setting of FedAvg and FedSA-LoRA experiments); small alpha, strong label skew.
- ``natural``: whole groups (movie, topic, source file) go to clients, largest group first to
  the client with the fewest examples so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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


def partition(
    dataset: TextDataset, *, method: str, num_clients: int, seed: int, alpha: float = 0.5
) -> Parts:
    """Split ``dataset`` into ``num_clients`` index arrays with a method from PARTITIONERS."""
    partitioner = PARTITIONERS.get(method)
    if partitioner is None:
        raise DataError(
            f"unknown partition method '{method}'; choose one of {', '.join(sorted(PARTITIONERS))}"
        )
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
    rng = np.random.default_rng(seed)
    keys = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)[idx]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    quota = n_test * counts / n
    take = np.floor(quota).astype(np.int64)
    extra = n_test - int(take.sum())
    by_remainder = np.lexsort((rng.random(len(counts)), -(quota - take)))
    take[by_remainder[:extra]] += 1
    inverse = inverse.reshape(-1)
    test_positions = np.concatenate(
        [
            rng.choice(np.flatnonzero(inverse == c), size=int(t), replace=False)
            for c, t in enumerate(take)
        ]
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test_positions] = True
    return np.sort(idx[~is_test]), np.sort(idx[is_test])


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
