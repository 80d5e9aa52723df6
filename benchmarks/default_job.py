"""The default job (`secure-fedsa run`, what `make run` runs) with an older commit's code and with
this working tree, one after the other in one session, so that their times can be compared.

    python benchmarks/default_job.py OLD_COMMIT [--args '--rounds 5']

Each run is a fresh process on the same machine and data; the older code comes from a temporary
git worktree put first on PYTHONPATH. Prints each run's wall time, the sum of its rounds' seconds
(metrics.jsonl) and, where the code records it, the time per phase (summary.json). Timings on
shared machines vary 2-4x between sessions: compare the two rows of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(code: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "secure_fedsa.app.cli", "run", "--quiet", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run([*command, *extra], cwd=code, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    # accuracy stays in each client's evaluation.json unless the run releases it
    finals = [json.loads(p.read_text()) for p in sorted(out.glob("clients/*/evaluation.json"))]
    evaluation = summary.get("evaluation") or {}
    accuracy = (
        evaluation["mean"]
        if evaluation.get("released")
        else sum(f["accuracy"] for f in finals) / len(finals)
    )
    return {
        "wall_seconds": wall,
        "round_seconds": sum(m.get("seconds", 0.0) for m in metrics),
        "mean_accuracy": accuracy,
        "seconds_by_phase": summary.get("seconds_by_phase"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the commit to compare against (e.g. HEAD~1)")
    parser.add_argument("--args", default="", help="extra options for both runs")
    args = parser.parse_args()
    extra = shlex.split(args.args)
    print(f"load at start: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old_tree), args.old],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            rows = {
                f"{args.old}": run_job(old_tree, Path(tmp) / "run-old", extra),
                "working tree": run_job(ROOT, Path(tmp) / "run-new", extra),
            }
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT)
    print(f"command: python benchmarks/default_job.py {args.old} --args {shlex.quote(args.args)}")
    print("| code | wall s | sum of round s | mean accuracy |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['wall_seconds']:.0f} | {row['round_seconds']:.0f} | "
            f"{row['mean_accuracy']:.4f} |"
        )
    old, new = rows[args.old], rows["working tree"]
    print(f"wall time: {1 - new['wall_seconds'] / old['wall_seconds']:.0%} less")
    print(f"round time: {1 - new['round_seconds'] / old['round_seconds']:.0%} less")
    if new["seconds_by_phase"]:
        print("working tree, seconds by phase:", json.dumps(new["seconds_by_phase"]))


if __name__ == "__main__":
    main()
