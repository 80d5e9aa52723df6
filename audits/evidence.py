"""Everything an audit reads from a run directory, loaded defensively.

Nothing here raises on a bad run directory: a missing, unreadable or malformed file becomes an
entry in :attr:`RunEvidence.problems` (file -> what is wrong) and its value is ``None``, so each
check can say exactly what it could not verify. The layout mirrors the run directory that
``secure-fedsa run`` writes (config.json, setup.json, metrics.jsonl, summary.json,
clients/<id>/privacy_ledger.json, egress/<id>.jsonl, keys/server.keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_VERSION = 2  # the configuration format this audit understands
LEDGER_FORMAT = "secure_fedsa.privacy_ledger"
LEDGER_VERSION = 2
LEDGER_FILE = "privacy_ledger.json"
MAX_FILE_BYTES = 64 << 20


@dataclass
class RunEvidence:
    root: Path
    config: dict[str, Any] | None = None
    setup: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] | None = None
    ledgers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    egress: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    server_keys: dict[str, Any] | None = None
    server_keys_path: str | None = None
    problems: dict[str, str] = field(default_factory=dict)

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


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    return path.read_text(encoding="utf-8")


def _json_object(path: Path, problems: dict[str, str], name: str) -> dict[str, Any] | None:
    if not path.is_file():
        problems[name] = "missing"
        return None
    try:
        value = json.loads(_read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems[name] = f"unreadable or not JSON ({exc})"
        return None
    if not isinstance(value, dict):
        problems[name] = "not a JSON object"
        return None
    return value


def _json_lines(path: Path, problems: dict[str, str], name: str) -> list[dict[str, Any]] | None:
    if not path.is_file():
        problems[name] = "missing"
        return None
    try:
        lines = _read_text(path).splitlines()
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
    if version != CONFIG_VERSION:
        evidence.problems["config.json"] = (
            f"configuration version {version!r}; this audit reads version {CONFIG_VERSION} "
            "(the run was made by another release of secure_fedsa)"
        )
    elif "secure_fedsa" not in config:
        evidence.problems["config.json"] = "no 'secure_fedsa' release field (an older release?)"


def load_run(root: Path) -> RunEvidence:
    """Read a run directory; never raises for its content (see :attr:`RunEvidence.problems`)."""
    evidence = RunEvidence(root=root)
    problems = evidence.problems
    evidence.config = _json_object(root / "config.json", problems, "config.json")
    _check_config_version(evidence)
    evidence.setup = _json_object(root / "setup.json", problems, "setup.json")
    evidence.summary = _json_object(root / "summary.json", problems, "summary.json")
    evidence.metrics = _json_lines(root / "metrics.jsonl", problems, "metrics.jsonl")
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
        evidence.ledgers[cid] = _json_object(clients_dir / cid / LEDGER_FILE, problems, ledger_name)
        egress_name = f"egress/{cid}.jsonl"
        evidence.egress[cid] = _json_lines(egress_dir / f"{cid}.jsonl", problems, egress_name)
    keys_path = root / "keys" / "server.keys"
    if not keys_path.is_file() and isinstance(evidence.cfg("keys_dir"), str):
        keys_path = Path(evidence.cfg("keys_dir")) / "server.keys"  # keys made outside the run
    evidence.server_keys_path = (
        str(keys_path.relative_to(root)) if keys_path.is_relative_to(root) else str(keys_path)
    )
    evidence.server_keys = _json_object(keys_path, problems, "keys/server.keys")
    return evidence
