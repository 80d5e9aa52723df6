"""The committed sweep results and docs/results.md say the same thing, and both come from data.

Every committed ``benchmarks/results/*/summary.md`` must be what the sweep code writes from that
directory's ``sweep.json`` and ``results.csv`` (nobody edits a number by hand), and every table
docs/results.md copies from a summary must match it (``benchmarks/sync_results_doc.py``).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from secure_fedsa.app.sweep.runner import read_spec, write_outputs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.parent for p in (ROOT / "benchmarks" / "results").glob("*/sweep.json"))


def _sync_module():
    path = ROOT / "benchmarks" / "sync_results_doc.py"
    spec = importlib.util.spec_from_file_location("sync_results_doc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_committed_sweeps():
    assert SWEEPS, "benchmarks/results/ holds no sweep: the tests below would check nothing"


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.name)
def test_committed_summary_is_what_the_data_gives(sweep, tmp_path):
    copy = tmp_path / sweep.name
    copy.mkdir()
    for name in ("sweep.json", "results.csv"):
        shutil.copy(sweep / name, copy / name)
    write_outputs(read_spec(copy), copy)
    assert (copy / "summary.md").read_text() == (sweep / "summary.md").read_text(), (
        f"{sweep.name}/summary.md is not what its results.csv gives: run "
        f"secure-fedsa sweep --plot-only benchmarks/results/{sweep.name}"
    )


def test_docs_tables_match_the_committed_summaries():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sync_results_doc.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_docs_check_catches_a_changed_number():
    sync = _sync_module()
    doc = (ROOT / "docs" / "results.md").read_text()
    assert sync.synced(doc) == doc
    block = sync.BLOCK.search(doc)
    assert block is not None
    body = block["body"]
    cell = next(line for line in body.splitlines() if line.startswith("| FedSA-LoRA |"))
    tampered = doc.replace(cell, cell.replace("0.", "0.9", 1), 1)
    assert tampered != doc
    assert sync.synced(tampered) == doc  # the copy is restored from the summary
