"""docs/usage.md, "Using a client's model": the snippet (examples/use_client_model.py) loads a
client's adapter and head with peft and transformers alone and reproduces the run's reported
accuracy, also for a model cut to fewer layers with --num-layers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from secure_fedsa.config import RunConfig
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "use_client_model.py"


def _example():
    spec = importlib.util.spec_from_file_location("use_client_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_snippet_reproduces_the_reported_accuracy(tmp_path):
    config = RunConfig(
        num_layers=2, max_examples=600, num_clients=2, partition="iid", rounds=2, local_steps=3,
        batch_size=32, physical_batch_size=32, max_length=24, eval_examples_per_round=10,
        dp=False, epsilon=None, encryption=False,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    summary = run_federation(config, run_dir)
    example = _example()
    for cid in ("client-0", "client-1"):
        predict = example.load_client_model(run_dir, cid)
        texts, truth = example.client_test_split(run_dir, cid)
        assert len(texts) == summary["evaluation"]["test_examples"][cid]
        predicted = predict(texts)
        accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
        assert accuracy == summary["evaluation"]["per_client"][cid]
    adapter_config = json.loads((run_dir / "adapters/client-0/adapter_config.json").read_text())
    # a name that loads on another machine, never this machine's directory
    assert adapter_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    card = (run_dir / "adapters/client-0/README.md").read_text()
    assert "> ⚠ **NO DIFFERENTIAL PRIVACY.**" in card and "> ⚠ **NO ENCRYPTION**" in card


def test_the_example_prints_one_clean_line_for_a_model_cut_to_one_layer(tmp_path):
    """A --num-layers 1 run: the checkpoint's 5 unused layers are skipped without transformers'
    table of UNEXPECTED keys, and the accuracy equals the one the client recorded."""
    import os
    import re
    import subprocess
    import sys

    config = RunConfig(
        num_layers=1, max_examples=400, num_clients=2, partition="iid", rounds=1, local_steps=1,
        batch_size=32, physical_batch_size=32, max_length=16, eval_examples_per_round=10,
        dp=False, epsilon=None, encryption=False,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    run_federation(config, run_dir)
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1])}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(run_dir), "client-0"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no load report, no progress bar
    found = re.fullmatch(r"client-0: accuracy (\S+) here, (\S+) recorded by the run\n", proc.stdout)
    assert found and found.group(1) == found.group(2), proc.stdout
