"""The default job at ε = 8 under replace-one accounting, against the same job without DP and
against ε = 8 as it was accounted before (add/remove; docs/results.md, "The default job under
replace-one accounting").

Replace-one is the neighbouring relation that fits what a run publishes (client sizes are
public); the same budget then buys more noise (σ 1.66 → 2.86 at q = 1 in docs/privacy.md's
table), and this script measures what that costs. Paired by seed (same partition and initial
model; DP noise is fresh in every run), 95 % Student-t intervals, exact two-sided sign-flip p,
Holm over the script's differences.

    OMP_NUM_THREADS=1 secure-fedsa sweep --methods fedsa --epsilons 8 \
      --seeds 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16 --quiet \
      --out benchmarks/results/default-replace-one
    python benchmarks/replace_one_default.py
"""

from __future__ import annotations

from pathlib import Path

from secure_fedsa.app.sweep.results import read_rows
from secure_fedsa.app.sweep.stats import holm_adjusted, paired_difference, seed_stats

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
REPLACE_ONE = ("default-replace-one",)
# the default job (top 2 layers, batch 512, clip 5) as measured under add/remove accounting,
# with its runs without DP: seeds 1-4 and 5-16
ADD_REMOVE = (
    "dp-recipe-top2-b512",
    "dp-recipe-top2-b512-nodp",
    "dp-recipe-default-seeds-odd",
    "dp-recipe-default-seeds-even",
)


def accuracies(
    directories: tuple[str, ...], epsilon: str, column: str = "accuracy_mean"
) -> dict[int, float]:
    """One value per seed from the sweeps' results.csv (later directories add seeds)."""
    values: dict[int, float] = {}
    for directory in directories:
        for row in read_rows(ROOT / directory / "results.csv"):
            if row["epsilon_target"] == epsilon:
                values[int(row["seed"])] = float(row[column])
    return values


def sigma_range(directories: tuple[str, ...]) -> tuple[float, float]:
    """Smallest and largest noise multiplier over the clients of the sweeps' ε = 8 cells."""
    low, high = float("inf"), 0.0
    for directory in directories:
        for row in read_rows(ROOT / directory / "results.csv"):
            if row["epsilon_target"] == "8":
                low = min(low, float(row["noise_multiplier_min"]))
                high = max(high, float(row["noise_multiplier_max"]))
    return low, high


def main() -> None:
    replace_one = accuracies(REPLACE_ONE, "8")
    add_remove = accuracies(ADD_REMOVE, "8")
    no_dp = accuracies(ADD_REMOVE, "inf")
    seeds = sorted(replace_one)
    print(f"seeds with a replace-one cell: {seeds} ({len(seeds)} of 16)")
    for name, values in (
        ("ε = 8, replace-one", replace_one),
        ("ε = 8, add/remove", add_remove),
        ("no DP", no_dp),
    ):
        stats = seed_stats([values[s] for s in seeds if s in values])
        half = f" ± {stats.half_width:.3f}" if stats.half_width is not None else ""
        print(f"{name}: {stats.mean:.3f}{half} (n = {stats.n})")
    for name, directories in (("replace-one", REPLACE_ONE), ("add/remove", ADD_REMOVE)):
        low, high = sigma_range(directories)
        print(f"noise multipliers at ε = 8, {name}: {low:.2f} to {high:.2f}")
    family = holm_adjusted(
        {
            "replace-one − no DP": paired_difference(replace_one, no_dp),
            "replace-one − add/remove": paired_difference(replace_one, add_remove),
        }
    )
    for name, diff in family.items():
        if not diff.testable:
            print(f"{name}: {100 * diff.mean:+.1f} points (1 seed)")
            continue
        low, high = diff.mean - diff.half_width, diff.mean + diff.half_width
        print(
            f"{name}: {100 * diff.mean:+.1f} ± {100 * diff.half_width:.1f} points "
            f"(n = {diff.n}; 95 % interval {100 * low:+.1f} to {100 * high:+.1f}; "
            f"sign-flip p {diff.sign_flip_p:.4g}, Holm {diff.holm_p:.4g})"
        )
    gaps = {s: replace_one[s] - no_dp[s] for s in seeds if s in no_dp}
    print(
        "by seed, replace-one − no DP (points): "
        + ", ".join(f"{s}: {100 * g:+.1f}" for s, g in sorted(gaps.items()))
    )


if __name__ == "__main__":
    main()
