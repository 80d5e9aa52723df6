"""The worth-joining study's tests, exactly as pre-registered (benchmarks/preregistered/
worth-joining.md): per setting and arm, the median client's gain over alone per seed, its mean and
paired-t interval, the two-sided exact sign-flip and Wilcoxon p with Holm over the table, and the
target test: the one-sided exact sign-flip test of a mean gain above 2 points, Holm-corrected over
the four ε = 8 comparisons.

    python benchmarks/worth_joining.py [RESULTS_DIR ...]

Reads only results.csv files (default: benchmarks/results/worth-joining-*); prints markdown.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from secure_fedsa.app.sweep.joining import per_client_gains
from secure_fedsa.app.sweep.results import parse_row, read_rows
from secure_fedsa.app.sweep.significance import holm, sign_flip_p, sign_flip_p_above, wilcoxon_p
from secure_fedsa.app.sweep.stats import t_critical

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.02  # the target: a gain of at least 2 points
SEEDS = tuple(range(1, 11))
ARMS = (("fedsa", 8.0), ("fedsa+head", 8.0), ("fedsa", math.inf), ("fedsa+head", math.inf))


def _interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:+.1f}"
    half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{100 * mean:+.1f} ± {100 * half:.1f}"


def _median_gains(rows: list[dict], method: str, epsilon: float) -> dict[int, float]:
    """Seed -> the median client's gain over alone (pre-registered seeds only)."""
    by_seed = per_client_gains(rows).get((method, epsilon), {})
    return {
        int(s): statistics.median(gains.values())
        for s, gains in by_seed.items()
        if int(s) in SEEDS and gains
    }


def main(directories: list[Path]) -> None:
    table, targets = [], []
    for directory in directories:
        rows = [parse_row(r) for r in read_rows(directory / "results.csv")]
        setting = directory.name.removeprefix("worth-joining-")
        for method, epsilon in ARMS:
            by_seed = _median_gains(rows, method, epsilon)
            if not by_seed:
                table.append((setting, method, epsilon, None))
                continue
            values = [by_seed[s] for s in sorted(by_seed)]
            entry = {
                "n": len(values),
                "interval": _interval(values),
                "sign_flip": sign_flip_p(values),
                "wilcoxon": wilcoxon_p(values),
                "above": sign_flip_p_above(values, MARGIN),
                "values": values,
            }
            table.append((setting, method, epsilon, entry))
            if epsilon == 8.0:
                targets.append((setting, method, entry))
    done = [e for *_, e in table if e is not None]
    adjusted = iter(holm([e["sign_flip"] for e in done]))
    print("| setting | method | ε | seeds | median client's gain (points, 95 % t) | sign-flip p | "
          "Wilcoxon p | Holm p | significant |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, method, epsilon, entry in table:
        eps = "no DP" if math.isinf(epsilon) else f"{epsilon:g}"
        if entry is None:
            print(f"| {setting} | {method} | {eps} | 0 | not run | | | | |")
            continue
        p = next(adjusted)
        label = "**yes**" if p < 0.05 else "no"
        print(
            f"| {setting} | {method} | {eps} | {entry['n']} | {entry['interval']} | "
            f"{entry['sign_flip']:.4f} | {entry['wilcoxon']:.4f} | {p:.4f} | {label} |"
        )
    print()
    print(f"Target test (one-sided: mean gain > {100 * MARGIN:g} points; Holm over the ε = 8 "
          "comparisons that ran):")  # fmt: skip
    target_p = holm([e["above"] for *_, e in targets])
    for (setting, method, entry), p in zip(targets, target_p, strict=True):
        no_dp = next(
            (e for s, m, eps, e in table if s == setting and m == method and math.isinf(eps)),
            None,
        )
        more = no_dp is not None and statistics.fmean(no_dp["values"]) > statistics.fmean(
            entry["values"]
        )
        met = p < 0.05 and more
        if entry["n"] < len(SEEDS) or len(targets) < 4:
            verdict = f"interim ({entry['n']} of {len(SEEDS)} seeds): not decided yet"
        else:
            verdict = f"target {'MET' if met else 'not met'}"
        print(
            f"- {setting}, {method}: one-sided p = {entry['above']:.4f}, Holm {p:.4f}; "
            f"no DP gains more: {'yes' if more else 'no'}; {verdict}"
        )


if __name__ == "__main__":
    given = [Path(a) for a in sys.argv[1:]]
    main(given or sorted((ROOT / "benchmarks" / "results").glob("worth-joining-*")))
