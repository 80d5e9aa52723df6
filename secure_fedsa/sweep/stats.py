"""Pure arithmetic of a sweep: statistics over seeds, paired differences, and the time left.

Seeds are the replicates: each seed fixes the data split, the partition and the initialisation,
so two methods run with the same seed see the same clients. A cell's 95 % confidence interval is
Student's t over its seeds, ``mean ± t(0.975, n−1) · s / √n``; the difference of a method to the
reference (FedSA) is taken seed by seed (a paired design, which removes the partition's effect)
and gets the same interval over the per-seed differences. A difference is significant (at 5 %,
two-sided, uncorrected for the number of comparisons) when its interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile ``t((1 + confidence) / 2, df)``."""
    from scipy.stats import t

    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return float(t.ppf((1 + confidence) / 2, df))


@dataclass(frozen=True)
class SeedStats:
    """Accuracy of one (method, epsilon) over its seeds."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed
    low: float
    high: float
    half_width: float | None = None  # of the 95 % confidence interval; None for one seed

    @property
    def ci(self) -> tuple[float, float] | None:
        if self.half_width is None:
            return None
        return self.mean - self.half_width, self.mean + self.half_width


def seed_stats(values: Sequence[float]) -> SeedStats:
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = t_critical(n - 1) * std / math.sqrt(n) if n > 1 else None
    return SeedStats(n=n, mean=mean, std=std, low=min(values), high=max(values), half_width=half)


@dataclass(frozen=True)
class PairedDifference:
    """Mean over shared seeds of (method − reference), with its 95 % interval."""

    n: int
    mean: float
    half_width: float | None

    @property
    def significant(self) -> bool:
        return self.half_width is not None and abs(self.mean) > self.half_width


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> PairedDifference:
    """The difference over the seeds both have (keys are seeds)."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ValueError("no seed in common")
    stats = seed_stats([values[s] - reference[s] for s in seeds])
    return PairedDifference(n=stats.n, mean=stats.mean, half_width=stats.half_width)


def by_seed(
    rows: Iterable[dict[str, Any]], value: str = "accuracy_mean"
) -> dict[tuple[str, float], dict[int, float]]:
    """``{(method, epsilon_target): {seed: value}}`` (absent values left out)."""
    out: dict[tuple[str, float], dict[int, float]] = {}
    for row in rows:
        number = row[value]
        if isinstance(number, float) and math.isnan(number):
            continue
        out.setdefault((row["method"], row["epsilon_target"]), {})[int(row["seed"])] = number
    return out


def differences_to(
    rows: Iterable[dict[str, Any]], reference: str, value: str = "accuracy_mean"
) -> dict[tuple[str, float], PairedDifference]:
    """Paired differences of every other method to ``reference``, per budget."""
    seeds = by_seed(rows, value)
    out = {}
    for (method, epsilon), values in seeds.items():
        base = seeds.get((reference, epsilon))
        if method == reference or base is None or not set(values) & set(base):
            continue
        out[(method, epsilon)] = paired_difference(values, base)
    return out


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
