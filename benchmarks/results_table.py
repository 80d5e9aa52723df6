"""Markdown tables from finished run directories (used for docs/results.md).

python benchmarks/results_table.py runs/method-comparison
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from secure_fedsa.transports.federation import load_summary


def row(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    # the operator holds every client's directory: accuracy comes from their evaluation.json
    # unless the run released it (summary.json no longer carries it otherwise)
    summary = load_summary(run)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    privacy = summary["privacy"]
    eps = max(p["epsilon"] for p in privacy.values()) if isinstance(privacy, dict) else None
    acc = summary["evaluation"]
    return {
        "run": run.name,
        "method": config["method"],
        "target": config["epsilon"] if config["dp"] else "no DP",
        "spent": "-" if eps is None else f"{eps:.2f}",
        "mean": acc["mean"],
        "weighted": acc["weighted_mean"],
        "clients": " / ".join(f"{v:.3f}" for v in acc["per_client"].values()),
        # per-round accuracy is in metrics.jsonl only when the run released its evaluation
        "curve": " ".join(
            f"{m['mean_accuracy']:.2f}" for m in metrics if m.get("mean_accuracy") is not None
        )
        or "not released",
        "minutes": summary["seconds"] / 60,
    }


def main(root: str) -> None:
    runs = sorted(p.parent for p in Path(root).glob("*/summary.json"))
    print(
        "| run | method | ε target | ε spent (max over clients) | mean acc | weighted acc "
        "| per client | per-round mean acc (test sample) | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = row(run)
        print(
            f"| {r['run']} | {r['method']} | {r['target']} | {r['spent']} | {r['mean']:.4f} "
            f"| {r['weighted']:.4f} | {r['clients']} | {r['curve']} | {r['minutes']:.1f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/method-comparison")
