"""Compare DP recipes of the default job over seeds (docs/results.md, "A DP recipe ...").

Each recipe is one or more committed sweeps of FedSA-LoRA on the default job (a later sweep adds
seeds to an earlier one). "No DP" is the default settings without DP (the clip is not used
there). Differences are paired by seed (same partition and initial model; DP noise is fresh in
every run), with 95 % Student-t intervals from secure_fedsa.app.sweep.stats, the exact two-sided
sign-flip p of the per-seed differences, and that p adjusted by Holm over its family: the
table's differences are one family, the lines under the table another. **significant** means a
Holm-adjusted sign-flip p below 0.05 (with n seeds no sign-flip p is below 2/2^n: 0.0625 for 5,
0.25 for 3).

    python benchmarks/recipe_comparison.py
"""

from __future__ import annotations

from pathlib import Path

from secure_fedsa.app.sweep.results import read_rows
from secure_fedsa.app.sweep.stats import (
    PairedDifference,
    holm_adjusted,
    paired_difference,
    seed_stats,
)

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# name: (sweep directories, what the recipe changes from 5 × 6 × 128, lr 5e-3)
RECIPES = {
    "former default": (("dp-recipe-before",), "clip 1"),
    "default (clip 5)": (("dp-recipe-clip5", "dp-recipe-clip5-seeds34"), "clip 5"),
    "lr 1e-2 under DP": (
        ("dp-recipe-lr1e-2", "dp-recipe-lr1e-2-seeds34", "dp-recipe-lr1e-2-nodp"),
        "clip 5, lr 1e-2",
    ),
    "larger batch": (("dp-recipe-after",), "5 × 3 × 256, clip 5, lr 1e-2"),
    "rsLoRA": (("dp-recipe-rslora",), "clip 5, `--adapter rslora`"),
    "twice the rounds": (
        ("dp-recipe-10rounds", "dp-recipe-10rounds-nodp"),
        "10 × 6 × 128, clip 5",
    ),
    "AdamW state kept": (
        ("dp-recipe-kept", "dp-recipe-kept-nodp"),
        "clip 5, `--optimizer-state kept`",
    ),
    "lr 1e-2, linear decay": (
        ("dp-recipe-linear", "dp-recipe-linear-nodp"),
        "clip 5, lr 1e-2, `--lr-schedule linear`",
    ),
    "twice the batch": (
        ("dp-recipe-batch256", "dp-recipe-batch256-nodp"),
        "5 × 6 × 256, clip 5",
    ),
    "top 2 layers, 4 × the batch": (
        (
            "dp-recipe-top2-b512",
            "dp-recipe-top2-b512-nodp",
            "dp-recipe-default-seeds-odd",  # seeds 5-16: the default as it is now,
            "dp-recipe-default-seeds-even",  # after the recipe was chosen
        ),
        "5 × 6 × 512, clip 5, `--adapter-layers 2`",
    ),
}
NO_DP = ("dp-recipe-before", "dp-recipe-nodp-seeds34")  # default settings, DP off
DEFAULT, FORMER = "default (clip 5)", "former default"


def accuracies(
    directories: tuple[str, ...], epsilon: str, column: str = "accuracy_mean"
) -> dict[int, float]:
    """Mean accuracy over clients per seed (or another column of results.csv), from the
    recipe's sweeps (later ones add seeds)."""
    values: dict[int, float] = {}
    for directory in directories:
        for row in read_rows(ROOT / directory / "results.csv"):  # empty when not run
            if row["epsilon_target"] == epsilon:
                values[int(row["seed"])] = float(row[column])
    return values


def cell(values: dict[int, float]) -> str:
    if not values:
        return "not run"
    stats = seed_stats(list(values.values()))
    if stats.half_width is None:
        return f"{stats.mean:.3f} (1 seed)"
    return f"{stats.mean:.3f} ± {stats.half_width:.3f} (n={stats.n})"


def paired(values: dict[int, float], reference: dict[int, float]) -> PairedDifference | None:
    """The paired difference over shared seeds (None when there is none)."""
    if not values or not set(values) & set(reference):
        return None
    return paired_difference(values, reference)


def difference(diff: PairedDifference | None) -> str:
    """Mean ± interval (n), sign-flip p and Holm p of a Holm-adjusted difference."""
    if diff is None:
        return "—"
    if not diff.testable:
        return f"{diff.mean:+.3f} (1 seed)"
    mark = " **significant**" if diff.significant else ""
    return (
        f"{diff.mean:+.3f} ± {diff.half_width:.3f} (n={diff.n}; p {diff.sign_flip_p:.4g}, "
        f"Holm {diff.holm_p:.4g}){mark}"
    )


def main() -> None:
    no_dp = accuracies(NO_DP, "inf")
    default = accuracies(RECIPES[DEFAULT][0], "8")
    former = accuracies(RECIPES[FORMER][0], "8")
    table: dict[tuple[str, str], PairedDifference | None] = {}
    for name, (directories, _) in RECIPES.items():
        private = accuracies(directories, "8")
        table[(name, "no DP")] = paired(private, no_dp)
        table[(name, "default")] = None if name == DEFAULT else paired(private, default)
        table[(name, "former")] = None if name == FORMER else paired(private, former)
    table = holm_adjusted({k: d for k, d in table.items() if d is not None})
    print(f"No DP, default settings: {cell(no_dp)}")
    print()
    print(
        "Paired differences: mean ± 95 % Student-t interval (n seeds; p = exact two-sided "
        "sign-flip p, Holm = that p after Holm over the table's "
        f"{sum(d.testable for d in table.values())} tested differences); **significant** = "
        "Holm-adjusted sign-flip p < 0.05."
    )
    print()
    print(
        "| recipe | changes | no DP (same settings) | ε = 8 | ε = 8 − no DP (paired) | "
        "− default at ε = 8 (paired) | − former default at ε = 8 (paired) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (directories, settings) in RECIPES.items():
        plain, private = accuracies(directories, "inf"), accuracies(directories, "8")
        clip_only = settings.startswith("clip") and "," not in settings
        fallback = "as no DP above (the clip is not used without DP)" if clip_only else "not run"
        plain_text = cell(plain) if plain else fallback
        print(
            f"| {name} | {settings} | {plain_text} | {cell(private)} | "
            f"{difference(table.get((name, 'no DP')))} | "
            f"{difference(table.get((name, 'default')))} | "
            f"{difference(table.get((name, 'former')))} |"
        )
    lr_plain = accuracies(("dp-recipe-lr1e-2-nodp",), "inf")
    lines: dict[str, PairedDifference | None] = {"lr 1e-2 plain": paired(lr_plain, no_dp)}
    runs = {}
    for key in ("twice the rounds", "lr 1e-2, linear decay", "twice the batch"):
        runs[key] = (accuracies(RECIPES[key][0], "inf"), accuracies(RECIPES[key][0], "8"))
    runs["AdamW state kept"] = (
        accuracies(RECIPES["AdamW state kept"][0], "inf"),
        accuracies(RECIPES["AdamW state kept"][0], "8"),
    )
    top = RECIPES["top 2 layers, 4 × the batch"][0]
    runs["top 2"] = (accuracies(top, "inf"), accuracies(top, "8"))
    for key, (plain, private) in runs.items():
        lines[f"{key} plain"] = paired(plain, no_dp)
        lines[f"{key} private"] = paired(private, plain)
    lines = holm_adjusted({k: d for k, d in lines.items() if d is not None})
    print()
    print(
        f"The lines below: the same statistics, Holm over their {len(lines)} differences "
        "(one family)."
    )

    def both(key: str, plain_words: str) -> str:
        return (
            f"{difference(lines.get(key + ' plain'))} against {plain_words}; at ε = 8 against "
            f"its own no-DP runs: {difference(lines.get(key + ' private'))}"
        )

    print(
        f"lr 1e-2 without DP: {cell(lr_plain)}, {difference(lines.get('lr 1e-2 plain'))} "
        "against lr 5e-3"
    )
    print(f"Twice the rounds, without DP: {both('twice the rounds', '5 rounds')}")
    print(f"lr 1e-2 with linear decay, without DP: {both('lr 1e-2, linear decay', 'the default')}")
    print(f"Twice the batch, without DP: {both('twice the batch', 'batch 128')}")
    print(f"AdamW state kept, without DP: {both('AdamW state kept', 'a fresh optimizer')}")
    print(f"Top 2 layers, 4 × the batch, without DP: {both('top 2', 'all layers at batch 128')}")

    print()
    top_plain, top_private = runs["top 2"]
    target(top_private, top_plain, accuracies(top, "inf", "majority_mean"))


TARGET = -0.03  # issue 16, part 4: ε = 8 within 3 points of no DP on the default job


def target(private: dict[int, float], plain: dict[int, float], majority: dict[int, float]) -> None:
    """The gap of the default job to its own runs without DP: on the recipe's confirmation
    seeds (1-4), on the later ones (5 and up), which nothing was tuned on, on both, and on the
    seeds whose partition leaves something to learn (without DP the mean accuracy is more than
    a point above the majority-class rate: where it is not, there is no gap to lose)."""
    learns = [s for s in plain if plain[s] - majority.get(s, 1.0) > 0.01]
    groups = {
        "seeds 1-4 (the confirmation)": range(1, 5),
        "seeds 5 and up (after the recipe was fixed)": range(5, 1000),
        "seeds 1 and up (all but the tuning seed 0)": range(1, 1000),
        "seeds 1 and up where no DP beats the majority rate by a point": [
            s for s in learns if s >= 1
        ],
    }
    for name, seeds in groups.items():
        chosen = {s: v for s, v in private.items() if s in seeds and s in plain}
        if len(chosen) < 2:
            print(f"Gap, {name}: fewer than 2 seeds")
            continue
        diff = paired_difference(chosen, plain)
        low, high = diff.mean - diff.half_width, diff.mean + diff.half_width
        met = "met" if low > TARGET else ("missed" if high < TARGET else "not settled")
        print(
            f"Gap, {name}: {diff.mean * 100:+.1f} ± {diff.half_width * 100:.1f} points "
            f"(n={diff.n}, 95 % interval {low * 100:+.1f} to {high * 100:+.1f}); "
            f"the 3-point target with 95 % confidence: {met}"
        )


if __name__ == "__main__":
    main()
