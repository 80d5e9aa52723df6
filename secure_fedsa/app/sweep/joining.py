"""The gain from joining: what a site gains by joining the federation rather than training alone.

**Alone** is local-only training without DP on the same client split and seed: in a sweep, the
cell with method ``local`` at ``ε = inf`` (the sweep adds it for every seed, :mod:`spec`). For
every other cell (method, ε) and seed, a client's gain is its accuracy in that cell minus its
accuracy alone, same client id, same seed. The **median client's gain** of a seed is the median
over clients of those gains. Over seeds it gets a paired-t interval, the exact sign-flip and
Wilcoxon p-values and a Holm correction over the table (:mod:`stats`); so does each client's
gain, in a table of its own. A seed whose alone cell is missing (or shares no client id with the
cell) is left out of the pairing; :attr:`JoiningGain.seeds_run` counts the seeds the cell has.

Everything here reads parsed ``results.csv`` rows (``method``, ``epsilon_target``, ``seed``,
``accuracy_per_client``), never a run's own files.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secure_fedsa.app.sweep.spec import ALONE_LABEL, ALONE_METHOD
from secure_fedsa.app.sweep.stats import PairedDifference, difference_stats, holm_adjusted

__all__ = ["ALONE_LABEL", "ALONE_METHOD", "JoiningGain", "gain_from_joining", "per_client_gains"]

CellKey = tuple[str, float]  # (method, target epsilon)


def is_alone(method: str, epsilon: float) -> bool:
    """Whether (method, epsilon) is the alone cell: local-only training without DP."""
    return method == ALONE_METHOD and math.isinf(epsilon) and epsilon > 0


def _per_client(row: Mapping[str, Any]) -> dict[str, float]:
    """A row's ``accuracy_per_client`` as ``{client: accuracy}`` (empty when not recorded)."""
    values = row.get("accuracy_per_client") or {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"cell {row.get('cell', '?')}: accuracy_per_client must be a mapping client -> "
            f"accuracy (parse the row with results.parse_row), got {type(values).__name__}"
        )
    out = {}
    for client, accuracy in values.items():
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise ValueError(
                f"cell {row.get('cell', '?')}: accuracy of {client} is not a number: {accuracy!r}"
            )
        if math.isfinite(accuracy):
            out[str(client)] = float(accuracy)
    return out


def _cells(rows: Iterable[Mapping[str, Any]]) -> dict[CellKey, dict[int, dict[str, float]]]:
    """``{(method, epsilon): {seed: {client: accuracy}}}``; rows without per-client accuracy
    are left out."""
    out: dict[CellKey, dict[int, dict[str, float]]] = {}
    for row in rows:
        per_client = _per_client(row)
        if per_client:
            key = (str(row["method"]), float(row["epsilon_target"]))
            out.setdefault(key, {})[int(row["seed"])] = per_client
    return out


def per_client_gains(
    rows: Iterable[Mapping[str, Any]],
) -> dict[CellKey, dict[int, dict[str, float]]]:
    """``{(method, epsilon): {seed: {client: gain}}}`` for every cell other than alone, over the
    seeds that have an alone cell; a client counts when both cells of its seed report it."""
    cells = _cells(rows)
    alone = next((seeds for key, seeds in cells.items() if is_alone(*key)), {})
    out: dict[CellKey, dict[int, dict[str, float]]] = {}
    for key, seeds in cells.items():
        if is_alone(*key):
            continue
        paired: dict[int, dict[str, float]] = {}
        for seed, accuracy in seeds.items():
            base = alone.get(seed, {})
            ids = sorted(set(accuracy) & set(base), key=client_order)
            gains = {c: accuracy[c] - base[c] for c in ids}
            if gains:
                paired[seed] = gains
        out[key] = paired
    return out


def client_order(client: str) -> tuple[Any, ...]:
    """Natural order of client ids: ``client-2`` before ``client-10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", client))


@dataclass(frozen=True)
class JoiningGain:
    """Gain from joining of one cell (method, ε) over its paired seeds."""

    seeds_run: int  # seeds the cell has a row for (with per-client accuracy)
    median_client: PairedDifference | None  # None when no seed could be paired
    per_client: dict[str, PairedDifference]

    @property
    def seeds_paired(self) -> int:
        return self.median_client.n if self.median_client else 0


def gain_from_joining(rows: Iterable[Mapping[str, Any]]) -> dict[CellKey, JoiningGain]:
    """Gain from joining of every cell other than alone. The median-client gains of all cells
    form one Holm family (one table); the per-client gains of all cells and clients another."""
    rows = list(rows)
    cells = _cells(rows)
    gains = per_client_gains(rows)
    median: dict[CellKey, PairedDifference] = {}
    clients: dict[tuple[CellKey, str], PairedDifference] = {}
    for key, seeds in gains.items():
        order = sorted(seeds)
        if order:
            median[key] = difference_stats([statistics.median(seeds[s].values()) for s in order])
        ids = sorted({c for s in order for c in seeds[s]}, key=client_order)
        for client in ids:
            values = [seeds[s][client] for s in order if client in seeds[s]]
            clients[(key, client)] = difference_stats(values)
    median = holm_adjusted(median)
    clients = holm_adjusted(clients)
    return {
        key: JoiningGain(
            seeds_run=len(cells[key]),
            median_client=median.get(key),
            per_client={c: d for (k, c), d in clients.items() if k == key},
        )
        for key in gains
    }


def alone_accuracy(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """``{seed: accuracy_mean}`` of the alone cells."""
    out = {}
    for row in rows:
        if is_alone(str(row["method"]), float(row["epsilon_target"])):
            value = row.get("accuracy_mean")
            if isinstance(value, int | float) and math.isfinite(value):
                out[int(row["seed"])] = float(value)
    return out
