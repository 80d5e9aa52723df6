"""Pure arithmetic of a sweep: statistics over seeds and the time left."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SeedStats:
    """Accuracy of one (method, epsilon) over its seeds."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed
    low: float
    high: float


def seed_stats(values: Sequence[float]) -> SeedStats:
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return SeedStats(n=n, mean=mean, std=std, low=min(values), high=max(values))


def group_over_seeds(
    rows: Iterable[dict[str, Any]], value: str = "accuracy_mean"
) -> dict[tuple[str, float], SeedStats]:
    """``{(method, epsilon_target): stats of value over seeds}`` from parsed result rows."""
    groups: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        number = row[value]
        if isinstance(number, float) and math.isnan(number):
            continue
        groups.setdefault((row["method"], row["epsilon_target"]), []).append(number)
    return {key: seed_stats(values) for key, values in groups.items()}


def eta_seconds(finished_seconds: Sequence[float], remaining: int) -> float | None:
    """Time left: mean time of the finished cells times the cells left (None before any)."""
    if remaining <= 0:
        return 0.0
    if not finished_seconds:
        return None
    return sum(finished_seconds) / len(finished_seconds) * remaining


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
