"""The honest baseline, "alone": each client training on its own, without DP, on the same split.

A site that does not join a federation releases nothing, so it needs no noise: the fair question
for it is whether joining beats training **alone without DP**, on the same records, the same
test split, the same model and the same number of steps. This module runs that baseline for a
configuration (method ``local``, DP, encryption and masking off, everything else unchanged),
once per data split and training budget: the result is cached by a hash of every option that
decides it, in the user's cache directory (``$XDG_CACHE_HOME/secure-fedsa/alone``).

The alone accuracies are statistics of each client's test records, like the federation's own
accuracies: they are written into each client's own ``evaluation.json`` (``alone_accuracy``,
``gain_from_joining``) and into the run's shared summary only when the run releases its
evaluation (``release_evaluation``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secure_fedsa.atomic import write_json_atomic
from secure_fedsa.config import RunConfig
from secure_fedsa.site.private_stats import read_evaluation, write_evaluation

ALONE = "alone (local, no DP)"
CACHE_VERSION = 1
# options that cannot change what training alone gives
IRRELEVANT = (
    "method",
    "head",
    "dp",
    "epsilon",
    "delta",
    "noise_multiplier",
    "clip",
    "accountant",
    "clipping",
    "encryption",
    "masking",
    "masking_threshold",
    "keys_dir",
    "max_clients",
    "release_evaluation",
)


def alone_config(config: RunConfig) -> RunConfig:
    """``config`` with every client training alone: method local, no DP, no encryption, every
    round (a site alone is never left out of a round, whatever ``clients_per_round`` says). With
    ``finish_steps`` a lone client trains every tensor that many more steps at the end: the same
    number of steps as a finished client of the federation."""
    return config.replace(
        clients_per_round=None,
        method="local",
        head="local",
        dp=False,
        epsilon=None,
        noise_multiplier=None,
        encryption=False,
        masking=False,
        masking_threshold=None,
        keys_dir=None,
        release_evaluation=False,
    )


def cache_key(config: RunConfig) -> str:
    """A hash of everything that decides the alone baseline of ``config`` (pure)."""
    decisive = {k: v for k, v in alone_config(config).to_dict().items() if k not in IRRELEVANT}
    text = json.dumps({"cache": CACHE_VERSION, **decisive}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "secure-fedsa" / "alone"


def alone_accuracy(
    config: RunConfig,
    *,
    cache_dir: Path | None = None,
    message: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Each client's accuracy training alone without DP: ``{"per_client": {id: acc},
    "validation_per_client": {id: acc or None}, "cached": bool}``; computed once per split and
    budget, then read from the cache."""
    from secure_fedsa.transports.federation import load_summary, run_federation

    cache = (cache_dir or default_cache_dir()) / f"{cache_key(config)}.json"
    if cache.is_file():
        found = json.loads(cache.read_text(encoding="utf-8"))
        return {**found, "cached": True}
    message(f"training each client {ALONE} for the baseline (once; cached in {cache.parent})")
    with tempfile.TemporaryDirectory(prefix="secure-fedsa-alone-") as tmp:
        run_federation(alone_config(config), Path(tmp) / "run")
        evaluation = load_summary(Path(tmp) / "run")["evaluation"]
    result = {
        "per_client": evaluation["per_client"],
        "validation_per_client": evaluation.get("validation_per_client"),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, result)
    return {**result, "cached": False}


def attach_alone(run_dir: Path, alone: dict[str, Any], *, released: bool) -> dict[str, float]:
    """Write each client's alone accuracy and gain from joining into its own evaluation.json,
    and into summary.json when the run released its evaluation. Returns the gains."""
    gains = {}
    for cid, accuracy in alone["per_client"].items():
        directory = run_dir / "clients" / cid
        evaluation = read_evaluation(directory)
        if evaluation is None:
            continue
        gains[cid] = evaluation["accuracy"] - accuracy
        write_evaluation(
            directory,
            {**evaluation, "alone_accuracy": accuracy, "gain_from_joining": gains[cid]},
        )
    if released:
        path = run_dir / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["evaluation"].update(alone_per_client=alone["per_client"], gain_from_joining=gains)
        write_json_atomic(path, summary)
    return gains
