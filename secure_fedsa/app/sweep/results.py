"""``results.csv``: one row per finished cell, rewritten whole and atomically after each cell.

Rewriting the whole file atomically (:mod:`secure_fedsa.atomic`) means an interrupt or a full
disk leaves either the old table or the new one, never half a row or a temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from secure_fedsa.app.sweep.spec import Cell, format_epsilon
from secure_fedsa.atomic import atomic_write

RESULTS_FILE = "results.csv"

COLUMNS = (
    "cell",
    "method",
    "epsilon_target",
    "epsilon_spent_max",
    "epsilon_spent_mean",
    "delta",
    "noise_multiplier_min",
    "noise_multiplier_max",
    "noise_multipliers",
    "seed",
    "accuracy_mean",
    "accuracy_weighted",
    "accuracy_per_client",
    "majority_mean",
    "accuracy_validation_mean",
    "accuracy_validation_per_client",
    "dp",
    "encryption",
    "rounds_completed",
    "wall_seconds",
)

FLOAT_COLUMNS = (
    "epsilon_target",
    "epsilon_spent_max",
    "epsilon_spent_mean",
    "delta",
    "noise_multiplier_min",
    "noise_multiplier_max",
    "accuracy_mean",
    "accuracy_weighted",
    "majority_mean",
    "accuracy_validation_mean",
    "wall_seconds",
)


def row_from_summary(cell: Cell, summary: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The CSV row of one finished cell, from the federation's summary (its ``evaluation``,
    completed from the clients' own directories: a sweep is its operator's experiment)."""
    accuracy = summary["evaluation"] if "evaluation" in summary else summary["accuracy"]
    privacy = summary.get("privacy")
    per_client = privacy if isinstance(privacy, dict) else {}
    spent = [p["epsilon"] for p in per_client.values() if p.get("epsilon") is not None]
    sigmas = {cid: p.get("noise_multiplier") for cid, p in per_client.items()}
    known_sigmas = [s for s in sigmas.values() if s is not None]
    deltas = [p["delta"] for p in per_client.values() if p.get("delta") is not None]
    majority = list((accuracy.get("majority_class") or {}).values())
    validation = accuracy.get("validation_per_client") or {}
    return {
        "cell": cell.name,
        "method": cell.method,
        "epsilon_target": format_epsilon(cell.epsilon),
        "epsilon_spent_max": _number(max(spent) if spent else None),
        "epsilon_spent_mean": _number(sum(spent) / len(spent) if spent else None),
        "delta": _number(deltas[0] if deltas else None),
        "noise_multiplier_min": _number(min(known_sigmas) if known_sigmas else None),
        "noise_multiplier_max": _number(max(known_sigmas) if known_sigmas else None),
        "noise_multipliers": json.dumps(sigmas, sort_keys=True) if sigmas else "",
        "seed": cell.seed,
        "accuracy_mean": _number(accuracy["mean"]),
        "accuracy_weighted": _number(accuracy["weighted_mean"]),
        "accuracy_per_client": json.dumps(accuracy["per_client"], sort_keys=True),
        # the reference: always predicting each client's most frequent test label
        "majority_mean": _number(sum(majority) / len(majority) if majority else None),
        # on each client's validation split (carved out of its training records), if any
        "accuracy_validation_mean": _number(accuracy.get("validation_mean")),
        "accuracy_validation_per_client": json.dumps(validation, sort_keys=True)
        if validation
        else "",
        "dp": "on" if summary.get("differential_privacy") else "off",
        "encryption": "on" if summary.get("encryption") else "off",
        "rounds_completed": summary.get("rounds_completed", ""),
        "wall_seconds": f"{wall_seconds:.1f}",
    }


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return repr(float(value))


def parse_row(raw: dict[str, str]) -> dict[str, Any]:
    """A CSV row with numbers as floats (``inf`` for no DP; NaN where a value is absent). A
    file written before a column existed reads it as empty (NaN, or ``{}`` per client)."""
    row: dict[str, Any] = dict(raw)
    for name in FLOAT_COLUMNS:
        text = raw.get(name, "")
        row[name] = float(text) if text not in ("", None) else math.nan
    row["seed"] = int(raw["seed"])
    row["accuracy_per_client"] = json.loads(raw.get("accuracy_per_client") or "{}")
    row["accuracy_validation_per_client"] = json.loads(
        raw.get("accuracy_validation_per_client") or "{}"
    )
    return row


def render_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The raw rows of a results file (empty when it does not exist)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the results file with ``rows`` in one atomic step."""
    atomic_write(path, render_csv(rows))


def upsert(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    """``rows`` with ``row`` added, replacing an earlier row of the same cell."""
    return [r for r in rows if r["cell"] != row["cell"]] + [row]
