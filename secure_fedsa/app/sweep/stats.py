"""Pure arithmetic of a sweep: statistics over seeds, paired differences, and the time left.

Seeds are the replicates: each seed fixes the data split, the partition and the initialisation,
so two methods run with the same seed see the same clients. A cell's 95 % confidence interval is
Student's t over its seeds, ``mean ± t(0.975, n−1) · s / √n``. A difference (a method against the
reference FedSA, or a federated cell against the site alone) is taken seed by seed (a paired
design, which removes the partition's effect): it gets the same t interval over the per-seed
differences, the exact sign-flip p and the exact Wilcoxon p (:mod:`significance`). Whether it is
**significant** is decided within its table: the sign-flip p adjusted by Holm over the table's
comparisons (:func:`holm_adjusted`) must be below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from secure_fedsa.app.sweep.significance import ALPHA, holm, sign_flip_p, wilcoxon_p

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
    """Mean over paired seeds of a per-seed difference, its paired-t 95 % interval, the exact
    sign-flip and Wilcoxon p-values, and (once adjusted within its table) the Holm p."""

    n: int
    mean: float
    half_width: float | None  # None for one seed
    sign_flip_p: float = 1.0
    wilcoxon_p: float = 1.0
    holm_p: float | None = None  # set by holm_adjusted; None for one seed

    @property
    def testable(self) -> bool:
        return self.n >= 2

    @property
    def interval_excludes_zero(self) -> bool:
        """The paired-t 95 % interval excludes 0 (shown, but not what "significant" means)."""
        return self.half_width is not None and abs(self.mean) > self.half_width

    @property
    def significant(self) -> bool:
        """Holm-adjusted sign-flip p below 0.05 within the difference's table."""
        if not self.testable:
            return False
        if self.holm_p is None:
            raise ValueError(
                "significance is decided within a table: adjust the table's differences with "
                "holm_adjusted() first"
            )
        return self.holm_p < ALPHA


def difference_stats(differences: Sequence[float]) -> PairedDifference:
    """Interval and tests of per-seed differences (one value per seed; not yet Holm-adjusted)."""
    values = [float(d) for d in differences]
    stats = seed_stats(values)
    return PairedDifference(
        n=stats.n,
        mean=stats.mean,
        half_width=stats.half_width,
        sign_flip_p=sign_flip_p(values),
        wilcoxon_p=wilcoxon_p(values),
    )


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> PairedDifference:
    """The difference ``values − reference`` over the seeds both have (keys are seeds)."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ValueError("no seed in common")
    return difference_stats([values[s] - reference[s] for s in seeds])


Key = TypeVar("Key", bound=Hashable)


def holm_adjusted(family: Mapping[Key, PairedDifference]) -> dict[Key, PairedDifference]:
    """The family (one table) with each testable difference's sign-flip p Holm-adjusted over
    the testable differences of the family (those with at least two seeds)."""
    keys = [key for key, diff in family.items() if diff.testable]
    adjusted = holm([family[key].sign_flip_p for key in keys])
    out = {key: replace(diff, holm_p=None) for key, diff in family.items()}
    for key, p in zip(keys, adjusted, strict=True):
        out[key] = replace(family[key], holm_p=p)
    return out


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
    """Paired differences of every other method to ``reference``, per budget, Holm-adjusted
    over all of them (one table)."""
    seeds = by_seed(rows, value)
    out = {}
    for (method, epsilon), values in seeds.items():
        base = seeds.get((reference, epsilon))
        if method == reference or base is None or not set(values) & set(base):
            continue
        out[(method, epsilon)] = paired_difference(values, base)
    return holm_adjusted(out)


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
