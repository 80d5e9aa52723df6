"""What the audit tests share: the small audited run's size, the checks, and small helpers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audits.command import register

SMALL = dict(
    num_layers=1,
    max_examples=1200,
    num_clients=2,
    partition="iid",
    rounds=2,
    local_steps=2,
    batch_size=64,
    physical_batch_size=64,
    max_length=24,
    eval_examples_per_round=20,
    seed=0,
)
CHECKS = (
    "run-directory",
    "configuration",
    "egress",
    "accounting",
    "ledger-integrity",
    "aggregates",
    "encryption",
    "dp-hazards",
)


def audit(argv: list[str]) -> int:
    """The ``audit`` subcommand alone, parsed and run as the CLI does."""
    parser = argparse.ArgumentParser(prog="secure-fedsa")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return args.handler(args)


def results(report: dict) -> dict[str, str]:
    return {c["name"]: c["result"] for c in report["checks"]}


def findings(report: dict, name: str) -> str:
    return " | ".join(next(c for c in report["checks"] if c["name"] == name)["findings"])


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_lines(path: Path, change) -> None:
    """Edit a JSON-lines file (an egress record, metrics.jsonl) as a list of dicts."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    change(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
