"""Compare DP recipes of the default job over seeds (docs/results.md, "A DP recipe ...").

Each recipe is a committed sweep of FedSA-LoRA on the default job (3 seeds); the reference for
"no DP" is the former default's no-DP cells. Differences are paired by seed (same partition and
initial model), with 95 % Student-t intervals from secure_fedsa.sweep.stats.

    python benchmarks/recipe_comparison.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from secure_fedsa.sweep.stats import paired_difference, seed_stats

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RECIPES = {  # name: (sweep directory, what it changes from the former default)
    "former default (clip 1)": ("dp-recipe-before", "5 × 6 × 128, lr 5e-3, clip 1"),
    "default now (clip 5)": ("dp-recipe-clip5", "clip 5"),
    "DP recipe": ("dp-recipe-after", "5 × 3 × 256, lr 1e-2, clip 5"),
}
REFERENCE = "former default (clip 1)"


def accuracies(directory: str, epsilon: str) -> dict[int, float]:
    path = ROOT / directory / "results.csv"
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            int(row["seed"]): float(row["accuracy_mean"])
            for row in csv.DictReader(handle)
            if row["epsilon_target"] == epsilon
        }


def cell(values: dict[int, float]) -> str:
    if not values:
        return "not run"
    stats = seed_stats(list(values.values()))
    if stats.half_width is None:
        return f"{stats.mean:.3f} (1 seed)"
    return f"{stats.mean:.3f} ± {stats.half_width:.3f} (n={stats.n})"


def difference(values: dict[int, float], reference: dict[int, float]) -> str:
    if not values or not set(values) & set(reference):
        return "—"
    diff = paired_difference(values, reference)
    if diff.half_width is None:
        return f"{diff.mean:+.3f} (1 seed)"
    mark = " **significant**" if diff.significant else ""
    return f"{diff.mean:+.3f} ± {diff.half_width:.3f}{mark}"


def main() -> None:
    no_dp = accuracies(RECIPES[REFERENCE][0], "inf")
    dp_reference = accuracies(RECIPES[REFERENCE][0], "8")
    print(
        "| recipe | settings | no DP (same settings) | ε = 8 | ε = 8 − no DP of the former default "
        "(paired) | ε = 8 − former default at ε = 8 (paired) |"
    )
    print("|---|---|---|---|---|---|")
    for name, (directory, settings) in RECIPES.items():
        plain, private = accuracies(directory, "inf"), accuracies(directory, "8")
        if not plain and name != REFERENCE:
            plain_text = "same as the former default (the clip is not used without DP)"
        else:
            plain_text = cell(plain)
        vs_reference = "—" if name == REFERENCE else difference(private, dp_reference)
        print(
            f"| {name} | {settings} | {plain_text} | {cell(private)} | "
            f"{difference(private, no_dp)} | {vs_reference} |"
        )


if __name__ == "__main__":
    main()
