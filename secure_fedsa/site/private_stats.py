"""Statistics of a client's records that are not differentially private, and where they live.

Everything a run writes is one of three kinds (docs/threat-model.md, "What every file holds"):

- a **DP release**, accounted in the client's ledger: the shared tensors it uploads, the
  aggregate, its trained A, B and head, and anything computed from those alone;
- **public configuration**: the configuration, sizes (n is public: the sampling rate and the
  aggregation weights give it away), the privacy plan and ε, key fingerprints, byte counts;
- a **private statistic**: computed from the client's records without DP noise. The training
  loss (un-noised per-example losses), the number of examples the Poisson batches drew (the DP
  analysis assumes the batch sizes stay hidden), the seconds local training took (they follow
  the batch sizes), the accuracy and majority-class rate on the client's test split, and its
  label counts.

Private statistics are written here, into the client's own directory, and nowhere else: not into
metrics.jsonl, summary.json or setup.json, never to the server, never into the auditor's bundle.
The only way out is explicit: ``release_evaluation`` writes the evaluation (accuracy, majority
rate) into the shared files too, and every output then says so as a protection turned off.

Files (in ``clients/<id>/`` of an in-process run, or a Flower site's state directory)::

    rounds.jsonl       one line per round: loss, examples, train seconds, accuracy on the
                       per-round test sample
    evaluation.json    final accuracy on the whole test split, majority-class rate, test size,
                       label counts of the client's data
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from secure_fedsa.atomic import write_json_atomic

ROUNDS_FILE = "rounds.jsonl"
EVALUATION_FILE = "evaluation.json"
# every file of a client's directory that holds private statistics
PRIVATE_FILES = (ROUNDS_FILE, EVALUATION_FILE)


def append_round(directory: Path, record: dict[str, Any]) -> None:
    """Append one round's private statistics to the client's ``rounds.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ROUNDS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_rounds(directory: Path) -> list[dict[str, Any]]:
    """The client's per-round private statistics (empty when none were written)."""
    path = directory / ROUNDS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_evaluation(directory: Path, evaluation: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / EVALUATION_FILE, evaluation)


def read_evaluation(directory: Path) -> dict[str, Any] | None:
    """The client's final evaluation, or None before the run finished."""
    path = directory / EVALUATION_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
