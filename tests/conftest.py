"""Shared fixtures: the real pretrained encoder cut to one layer, real data, small sizes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ledger anchors (privacy/anchor.py) go to a directory of this test session, never to the
# user's own; subprocesses inherit it. Session- and module-scoped runs anchor their ledgers here.
SESSION_ANCHORS = tempfile.mkdtemp(prefix="secure-fedsa-anchors-")
os.environ["SECURE_FEDSA_ANCHORS"] = SESSION_ANCHORS
# the alone baseline's cache (secure_fedsa/app/alone.py), shared by the session's CLI runs
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="secure-fedsa-cache-")


@pytest.fixture(autouse=True)
def own_anchors(tmp_path_factory, monkeypatch):
    """Each test gets its own copy of the session's anchors: a test that copies a shared run and
    trains it further must not make the next test's copy of the same run look rolled back."""
    mine = tmp_path_factory.mktemp("anchors") / "a"
    shutil.copytree(SESSION_ANCHORS, mine)
    monkeypatch.setenv("SECURE_FEDSA_ANCHORS", str(mine))
    return mine


# one thread per xdist worker (make test runs two workers), two in a plain run
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Every test belongs to a tier (pyproject.toml's markers); a plain ``pytest`` (no ``-m``)
    leaves the e2e tests out, unless only e2e tests were collected (``pytest
    tests/test_flower_deployment.py``): then it runs them, so that the default selection never
    collects nothing (pytest's exit code 5)."""
    untiered = []
    for item in items:
        if item.get_closest_marker("slow"):  # the former name of e2e
            item.add_marker(pytest.mark.e2e)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            untiered.append(item.nodeid)
    if untiered:
        raise pytest.UsageError(
            "tests without a tier marker (add pytestmark = pytest.mark.unit, integration or "
            "e2e): " + ", ".join(untiered[:5])
        )
    if config.option.markexpr:
        return  # -m chose
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if len(e2e) == len(items):
        return
    config.hook.pytest_deselected(items=e2e)
    items[:] = [item for item in items if not item.get_closest_marker("e2e")]


@pytest.fixture(scope="session")
def tokenizer():
    from secure_fedsa.model.encoder import ModelSpec, load_tokenizer

    return load_tokenizer(ModelSpec())


@pytest.fixture
def tiny_model():
    """all-MiniLM-L6-v2 with only pretrained layer 0, LoRA r=8 on query/value, 2 labels."""
    from secure_fedsa.model.encoder import ModelSpec, build_model

    return build_model(ModelSpec(num_layers=1), num_labels=2, seed=0)


class SharedRuns:
    """Federations made once per session and configuration: every test that asks for the same
    configuration reads the same run instead of training its own. Read only: a test that edits,
    resumes or extends a run works on a copy (``shutil.copytree``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[str, tuple[Path, dict]] = {}

    def __call__(self, config) -> tuple[Path, dict]:  # noqa: ANN001 - a RunConfig
        """The run directory of ``config`` and its summary, trained the first time it is asked."""
        from secure_fedsa.transports.federation import run_federation

        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in self.runs:
            run_dir = self.root / f"run-{len(self.runs)}"
            # the ledgers anchor in the session's directory, which every test's copy starts from
            mine = os.environ["SECURE_FEDSA_ANCHORS"]
            os.environ["SECURE_FEDSA_ANCHORS"] = SESSION_ANCHORS
            try:
                summary = run_federation(config, run_dir)
            finally:
                os.environ["SECURE_FEDSA_ANCHORS"] = mine
            if Path(mine) != Path(SESSION_ANCHORS):  # this test's copy, taken before the run
                shutil.copytree(SESSION_ANCHORS, mine, dirs_exist_ok=True)
            self.runs[key] = (run_dir, summary)
        return self.runs[key]


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory) -> SharedRuns:
    """``shared_run(config)``: the session's one run of ``config`` (see :class:`SharedRuns`)."""
    return SharedRuns(tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="session")
def audited_run(shared_run):
    """One small DP + CKKS run that the audit tests and the secure-federation tests read (never
    edit: tests that tamper with it work on a copy)."""
    from audit_helpers import SMALL

    from secure_fedsa.config import RunConfig

    return shared_run(RunConfig(epsilon=8.0, **SMALL))[0]
