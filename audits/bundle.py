"""The auditor bundle: exactly the files an audit reads, nothing secret, and a manifest.

``secure-fedsa audit RUN_DIR --bundle OUT`` copies what :func:`audits.evidence.load_run` reads
(config.json, setup.json, metrics.jsonl, summary.json, clients/<id>/privacy_ledger.json,
egress/*.jsonl, keys/server.keys) plus the public roster (keys/roster.json), and writes
``MANIFEST.json`` (every file with its SHA-256 and size) and ``SHA256SUMS`` (the same, for
``sha256sum -c``). It is a whitelist: client.keys (the CKKS secret key), identities/ (private
signing keys), state.pt, adapters/ and data are never copied. Before anything is written, every
file is scanned for the field names of secret keys and for the secret values of the run's own
key files; a hit stops the bundle with nothing written. ``secure-fedsa audit OUT`` then audits
the bundle exactly as it would the run directory, and checks each file against the manifest.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audits.evidence import (
    BUNDLE_FORMAT,
    BUNDLE_MANIFEST,
    CANARY_FILE,
    LEDGER_FILE,
    server_keys_location,
)
from secure_fedsa.errors import ConfigError

BUNDLE_VERSION = 1
SUMS_FILE = "SHA256SUMS"
RUN_FILES = ("config.json", "setup.json", "metrics.jsonl", "summary.json")
# JSON fields that only secret key files have (client.keys, identities/*.key)
SECRET_FIELDS = ("secret_key", "private_key")
SECRET_PREFIX = 32  # characters of a known secret value searched for in every file
LEFT_OUT = (
    "keys/client.keys: the CKKS secret key every client holds",
    "keys/identities/: each party's private signing key",
    "clients/<id>/state.pt: each client's training state",
    "adapters/: the trained models",
    "the training data, which the run directory never holds",
)


def bundle_plan(run_dir: Path) -> list[tuple[str, Path]]:
    """(name in the bundle, file to copy) for every file the audit reads; nothing else."""
    config = _config(run_dir)
    plan = [(name, run_dir / name) for name in RUN_FILES]
    clients = run_dir / "clients"
    if clients.is_dir():
        # canaries.json exists only in a run made with --canaries: its bits and the client's
        # released values on the canary coordinates are for the auditor (docs/audit.md)
        plan += [
            (f"clients/{d.name}/{name}", d / name)
            for d in sorted(clients.iterdir())
            if d.is_dir() and not d.is_symlink()
            for name in (LEDGER_FILE, CANARY_FILE)
        ]
    egress = run_dir / "egress"
    if egress.is_dir():
        plan += [(f"egress/{p.name}", p) for p in sorted(egress.glob("*.jsonl"))]
    server_keys = server_keys_location(run_dir, config)
    plan.append(("keys/server.keys", server_keys))
    plan.append(("keys/roster.json", server_keys.with_name("roster.json")))  # public
    return [(name, path) for name, path in plan if path.is_file() and not path.is_symlink()]


def known_secrets(run_dir: Path) -> list[str]:
    """The run's secret key values (client.keys' secret key, each identity's private key)."""
    config = _config(run_dir)
    key_dirs = {run_dir / "keys", server_keys_location(run_dir, config).parent}
    secrets = []
    for directory in key_dirs:
        files = [(directory / "client.keys", "secret_key")]
        files += [(p, "private_key") for p in sorted(directory.glob("identities/*.key"))]
        for path, field in files:
            value = _json(path).get(field)
            if isinstance(value, str) and len(value) >= 16:
                secrets.append(value)
    return secrets


def secret_problems(name: str, data: bytes, secrets: list[str]) -> list[str]:
    """Why ``data`` must not leave the operator (pure; empty when it holds no known secret)."""
    problems = [f"{name} has a {f} field" for f in SECRET_FIELDS if f'"{f}"'.encode() in data]
    if any(secret[:SECRET_PREFIX].encode() in data for secret in secrets):
        problems.append(f"{name} contains one of the run's secret key values")
    return problems


def write_bundle(run_dir: Path, out: Path) -> dict[str, Any]:
    """Write the bundle of ``run_dir`` into ``out`` (new or empty); returns its manifest.

    Raises :class:`ConfigError` (nothing written) when ``out`` holds files or a file to copy
    holds a secret."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{str(out)!r} exists and is not an empty directory: choose a new one")
    secrets = known_secrets(run_dir)
    contents, problems = {}, []
    for name, path in bundle_plan(run_dir):
        try:
            contents[name] = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc}") from exc
        problems += secret_problems(name, contents[name], secrets)
    if problems:
        raise ConfigError(
            "refusing to write the bundle, it would carry a secret: " + "; ".join(problems)
        )
    if not contents:
        raise ConfigError(f"{str(run_dir)!r} holds none of the files an audit reads")
    files = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for name, data in sorted(contents.items())
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run_dir.resolve().name,
        "files": files,
        "left_out": list(LEFT_OUT),
    }
    try:
        for name, data in contents.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        (out / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        sums = "".join(f"{entry['sha256']}  {name}\n" for name, entry in files.items())
        (out / SUMS_FILE).write_text(sums)
    except OSError as exc:
        raise ConfigError(f"cannot write the bundle to {str(out)!r}: {exc}") from exc
    return manifest


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _config(run_dir: Path) -> dict[str, Any]:
    return _json(run_dir / "config.json")
