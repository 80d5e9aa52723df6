"""Everything an audit reads from a run directory, loaded defensively.

Nothing here raises on a bad run directory: a missing, unreadable or malformed file becomes an
entry in :attr:`RunEvidence.problems` (file -> what is wrong) and its value is ``None``, so each
check can say exactly what it could not verify. The layout mirrors the run directory that
``secure-fedsa run`` writes (config.json, setup.json, metrics.jsonl, summary.json,
clients/<id>/privacy_ledger.json, egress/<id>.jsonl, keys/server.keys); an auditor bundle
(:mod:`audits.bundle`) has the same layout plus its manifest.

Every file is hashed as it is read (:attr:`RunEvidence.files`: relative path -> SHA-256 and
size), so a report can be tied to the exact bytes it was made from. When the directory is a
bundle, every file its manifest lists is compared with the manifest's SHA-256
(:attr:`RunEvidence.bundle`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the configuration formats this audit understands (3 added adapter_layers; absent in 2, where
# every encoder layer was adapted)
CONFIG_VERSIONS = (2, 3, 4)
LEDGER_FORMAT = "secure_fedsa.privacy_ledger"
LEDGER_VERSION = 3
LEDGER_FILE = "privacy_ledger.json"
CANARY_FILE = "canaries.json"
MAX_FILE_BYTES = 64 << 20
BUNDLE_MANIFEST = "MANIFEST.json"  # written by audits.bundle; lists every file with its SHA-256
BUNDLE_FORMAT = "secure_fedsa.audit_bundle"


@dataclass
class RunEvidence:
    root: Path
    config: dict[str, Any] | None = None
    setup: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] | None = None
    ledgers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    egress: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    # each client's canaries.json, read only for a run made with --canaries (private to the
    # client: the operator hands it to the auditor; audits/check_run_canary.py)
    canaries: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    server_keys: dict[str, Any] | None = None
    server_keys_path: str | None = None
    problems: dict[str, str] = field(default_factory=dict)
    # every file read: name (relative to the run directory) -> {"sha256": hex, "bytes": size}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # an auditor bundle's manifest, checked against the files (None for a plain run directory)
    bundle: dict[str, Any] | None = None

    # -- derived views ------------------------------------------------------------------------
    def cfg(self, key: str, default: Any = None) -> Any:
        return default if self.config is None else self.config.get(key, default)

    @property
    def client_ids(self) -> list[str]:
        """Every client any file mentions (setup, ledgers, egress, metrics), sorted."""
        ids: set[str] = set(self.ledgers) | set(self.egress)
        if self.setup and isinstance(self.setup.get("clients"), dict):
            ids |= set(self.setup["clients"])
        for record in self.metrics or []:
            if isinstance(record.get("clients"), dict):
                ids |= set(record["clients"])
        return sorted(ids)

    def trained_rounds(self, client_id: str) -> dict[int, dict[str, Any]] | None:
        """Round -> that client's metrics entry, for rounds metrics.jsonl says it trained."""
        if self.metrics is None:
            return None
        rounds: dict[int, dict[str, Any]] = {}
        for record in self.metrics:
            entry = (record.get("clients") or {}).get(client_id)
            if isinstance(entry, dict) and entry.get("status") == "trained":
                rounds[int(record.get("round", 0))] = entry
        return rounds

    def train_size(self, client_id: str) -> int | None:
        try:
            value = self.setup["clients"][client_id]["train"]  # type: ignore[index]
        except (TypeError, KeyError):
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def protections_off(self) -> list[str]:
        """'no differential privacy' / 'no encryption' for each protection config.json turns off."""
        off = []
        if self.cfg("dp") is not True:
            off.append("no differential privacy")
        if self.cfg("encryption") is not True:
            off.append("no encryption")
        return off


def _read_bytes(path: Path, files: dict[str, dict[str, Any]], name: str) -> bytes:
    """The file's bytes; records its SHA-256 under ``name`` (what the report lists)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    data = path.read_bytes()
    files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return data


def _read_text(path: Path, files: dict[str, dict[str, Any]], name: str) -> str:
    return _read_bytes(path, files, name).decode("utf-8")


def _json_object(path: Path, evidence: RunEvidence, name: str) -> dict[str, Any] | None:
    problems = evidence.problems
    if not path.is_file():
        problems[name] = "missing"
        return None
    try:
        value = json.loads(_read_text(path, evidence.files, name))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems[name] = f"unreadable or not JSON ({exc})"
        return None
    if not isinstance(value, dict):
        problems[name] = "not a JSON object"
        return None
    return value


def _json_lines(path: Path, evidence: RunEvidence, name: str) -> list[dict[str, Any]] | None:
    problems = evidence.problems
    if not path.is_file():
        problems[name] = "missing"
        return None
    try:
        lines = _read_text(path, evidence.files, name).splitlines()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems[name] = f"unreadable ({exc})"
        return None
    records, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            bad.append(number)
    if bad:
        problems[name] = f"line(s) {', '.join(map(str, bad[:10]))} are not JSON objects"
    return records


def _check_config_version(evidence: RunEvidence) -> None:
    config = evidence.config
    if config is None:
        return
    version = config.get("version")
    if version not in CONFIG_VERSIONS:
        evidence.problems["config.json"] = (
            f"configuration version {version!r}; this audit reads versions "
            f"{', '.join(map(str, CONFIG_VERSIONS))} (the run was made by another release of "
            "secure_fedsa)"
        )
    elif "secure_fedsa" not in config:
        evidence.problems["config.json"] = "no 'secure_fedsa' release field (an older release?)"


def load_run(root: Path) -> RunEvidence:
    """Read a run directory; never raises for its content (see :attr:`RunEvidence.problems`)."""
    evidence = RunEvidence(root=root)
    evidence.config = _json_object(root / "config.json", evidence, "config.json")
    _check_config_version(evidence)
    evidence.setup = _json_object(root / "setup.json", evidence, "setup.json")
    evidence.summary = _json_object(root / "summary.json", evidence, "summary.json")
    evidence.metrics = _json_lines(root / "metrics.jsonl", evidence, "metrics.jsonl")
    clients_dir, egress_dir = root / "clients", root / "egress"
    names: set[str] = set()
    if clients_dir.is_dir():
        names |= {p.name for p in clients_dir.iterdir() if p.is_dir()}
    if egress_dir.is_dir():
        names |= {p.stem for p in egress_dir.glob("*.jsonl")}
    if isinstance((evidence.setup or {}).get("clients"), dict):
        names |= set(evidence.setup["clients"])  # type: ignore[index]
    for cid in sorted(names):
        ledger_name = f"clients/{cid}/{LEDGER_FILE}"
        evidence.ledgers[cid] = _json_object(clients_dir / cid / LEDGER_FILE, evidence, ledger_name)
        egress_name = f"egress/{cid}.jsonl"
        evidence.egress[cid] = _json_lines(egress_dir / f"{cid}.jsonl", evidence, egress_name)
        if evidence.cfg("canaries"):
            name = f"clients/{cid}/{CANARY_FILE}"
            evidence.canaries[cid] = _json_object(clients_dir / cid / CANARY_FILE, evidence, name)
    keys_path = server_keys_location(root, evidence.config)
    evidence.server_keys_path = (
        str(keys_path.relative_to(root)) if keys_path.is_relative_to(root) else str(keys_path)
    )
    evidence.server_keys = _json_object(keys_path, evidence, "keys/server.keys")
    if evidence.server_keys_path != "keys/server.keys" and "keys/server.keys" in evidence.files:
        # listed where it was read: keys made outside the run (config.json's keys_dir)
        evidence.files[evidence.server_keys_path] = evidence.files.pop("keys/server.keys")
    if (root / BUNDLE_MANIFEST).is_file():
        evidence.bundle = _check_bundle(root, evidence)
    return evidence


def server_keys_location(root: Path, config: dict[str, Any] | None) -> Path:
    """keys/server.keys of the run, or of the ``keys_dir`` config.json names (keys made outside
    the run)."""
    keys_path = root / "keys" / "server.keys"
    keys_dir = (config or {}).get("keys_dir")
    if not keys_path.is_file() and isinstance(keys_dir, str):
        keys_path = Path(keys_dir) / "server.keys"
    return keys_path


def _check_bundle(root: Path, evidence: RunEvidence) -> dict[str, Any]:
    """Compare every file an auditor bundle's manifest lists with the bytes on disk."""
    problems: list[str] = []
    manifest = _json_object(root / BUNDLE_MANIFEST, evidence, BUNDLE_MANIFEST)
    evidence.problems.pop(BUNDLE_MANIFEST, None)  # reported here, not as a run-directory file
    listed = (manifest or {}).get("files")
    if manifest is None or manifest.get("format") != BUNDLE_FORMAT or not isinstance(listed, dict):
        return {"manifest": BUNDLE_MANIFEST, "files": 0, "problems": ["the manifest is unreadable"]}
    for name, entry in sorted(listed.items()):
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        parts = Path(str(name)).parts
        if Path(str(name)).is_absolute() or ".." in parts or not parts:
            problems.append(f"{name}: not a path inside the bundle")
            continue
        if name not in evidence.files:  # listed, but not among the files the checks read
            try:
                _read_bytes(root / name, evidence.files, name)
            except (OSError, ValueError) as exc:
                problems.append(f"{name}: listed in the manifest but unreadable ({exc})")
                continue
        if evidence.files[name]["sha256"] != expected:
            problems.append(
                f"{name}: differs from the manifest (changed after the bundle was made)"
            )
    for name in evidence.files:
        if name not in listed and name != BUNDLE_MANIFEST:
            problems.append(f"{name}: read by the audit but not listed in the manifest")
    return {
        "manifest": BUNDLE_MANIFEST,
        "sha256": evidence.files.get(BUNDLE_MANIFEST, {}).get("sha256"),
        "files": len(listed),
        "problems": problems,
    }
