"""The worth-joining study's per-client numbers, beside the pre-registered tests
(benchmarks/worth_joining.py): for every arm, how many clients end at or below their own
majority-class rate (pre-registered: "the clients at or below their majority-class rate"), and,
descriptively (not pre-registered), how much the 16 finishing steps add to each client's accuracy.

    python benchmarks/worth_joining_clients.py extract RESULTS_DIR   # from its cells/ (run dirs)
    python benchmarks/worth_joining_clients.py [RESULTS_DIR ...]     # print, from clients.csv

``extract`` reads each finished cell's per-client ``evaluation.json`` (the client's own file: its
final accuracy, its accuracy before finishing, its majority-class rate on its test split) and
writes ``clients.csv`` beside ``results.csv``: small, committed, so that the tables recompute
without the run directories (which are not committed).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from secure_fedsa.app.sweep.stats import t_critical

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("cell", "seed", "client", "accuracy", "accuracy_unfinished", "majority_class")
CLIENTS = 10


def extract(directory: Path) -> Path:
    """Write ``directory/clients.csv`` from ``directory/cells/*`` (finished cells only)."""
    rows = []
    for cell in sorted((directory / "cells").iterdir()):
        evaluations = sorted((cell / "clients").glob("*/evaluation.json"))
        if not (cell / "summary.json").exists() or len(evaluations) != CLIENTS:
            continue  # unfinished
        seed = int(cell.name.rsplit("-seed", 1)[1])
        for path in evaluations:
            record = json.loads(path.read_text())
            rows.append({
                "cell": cell.name, "seed": seed, "client": path.parent.name,
                "accuracy": record["accuracy"],
                "accuracy_unfinished": record.get("accuracy_unfinished", record["accuracy"]),
                "majority_class": record["majority_class"],
            })  # fmt: skip
    target = directory / "clients.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return target


def _arm(cell: str) -> str:
    return cell.rsplit("-seed", 1)[0]


def _interval(values: list[float]) -> str:
    half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{100 * statistics.fmean(values):+.1f} ± {100 * half:.1f}"


def report(directories: list[Path]) -> None:
    print("| setting | arm | seeds | clients at or below their majority rate (mean of 10; "
          "range over seeds) | finishing adds (points, mean over clients, 95 % t) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for directory in directories:
        with (directory / "clients.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        below: dict[str, dict[int, int]] = {}
        finishing: dict[str, dict[int, list[float]]] = {}
        for row in rows:
            arm, seed = _arm(row["cell"]), int(row["seed"])
            low = float(row["accuracy"]) <= float(row["majority_class"]) + 1e-12
            below.setdefault(arm, {}).setdefault(seed, 0)
            below[arm][seed] += low
            added = float(row["accuracy"]) - float(row["accuracy_unfinished"])
            finishing.setdefault(arm, {}).setdefault(seed, []).append(added)
        setting = directory.name.removeprefix("worth-joining-")
        for arm in sorted(below):
            counts = list(below[arm].values())
            added = [statistics.fmean(v) for v in finishing[arm].values()]
            print(
                f"| {setting} | {arm} | {len(counts)} | {statistics.fmean(counts):.1f} "
                f"({min(counts)}–{max(counts)}) | {_interval(added)} |"
            )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["extract"]:
        for name in args[1:]:
            print(extract(Path(name)))
    else:
        given = [Path(a) for a in args]
        report(given or sorted((ROOT / "benchmarks" / "results").glob("worth-joining-*")))
