"""The run directory: what a run wrote is what an auditor sees.

Layout::

    config.json            the full configuration used (RunConfig.to_dict)
    setup.json             manifest, client sizes, privacy plans, key fingerprint
    metrics.jsonl          one line per completed round
    summary.json           final accuracies and privacy spent
    keys/                  key bundles made for this run (client.keys is mode 0600)
    clients/<id>/          each client's own files: state.pt, privacy_ledger.json
    egress/<id>.jsonl      every message each client sent (written by the transport)
    adapters/<id>/         each client's final adapter in peft's format + head
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any

from secure_fedsa import __version__
from secure_fedsa.atomic import write_json_atomic
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# the distributions whose versions config.json records (what made the run, for its audit)
RECORDED_PACKAGES = ("torch", "opacus", "tenseal", "peft", "transformers", "dp-accounting", "numpy")


def written_by() -> dict[str, Any]:
    """config.json's ``secure_fedsa`` field: the release and the versions of Python and of
    every package that makes a run, where the configuration is written."""
    versions = {"python": platform.python_version(), "secure_fedsa": __version__}
    for name in RECORDED_PACKAGES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = "not installed"
    return {"release": __version__, "versions": versions}


class RunDirectory:
    def __init__(self, path: Path, *, created: bool = False) -> None:
        self.path = path
        self.created = created  # made by this process (a failed set-up removes it)

    @classmethod
    def create(cls, path: Path, config: RunConfig) -> RunDirectory:
        """A new run directory; refuses one that already holds files."""
        existed = path.exists()
        if existed and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(
                f"run directory {str(path)!r} is not empty: choose another --out, "
                "or continue it with --resume"
            )
        made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
        try:
            path.mkdir(parents=True, exist_ok=True)
            run = cls(path, created=not existed)
            run.save_config(config)  # atomic: a failed write leaves no file behind
        except OSError as exc:
            for directory in made:  # what this call made, if empty: the same --out works again
                with suppress(OSError):
                    directory.rmdir()
            fix = (
                "free some space, or choose another --out"
                if exc.errno == errno.ENOSPC
                else "choose another --out"
            )
            raise ConfigError(
                f"cannot write the run directory {str(path)!r}: {exc.strerror or exc}; {fix}"
            ) from None
        return run

    def discard(self) -> None:
        """Remove what a failed set-up of a new run wrote (the directory too, if it made it)."""
        if not self.path.is_dir():
            return
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if self.created:
            with suppress(OSError):
                self.path.rmdir()

    @classmethod
    def resume(cls, path: Path, config: RunConfig) -> RunDirectory:
        """An existing run directory whose config equals ``config``, except possibly for more
        rounds (extending a run; the clients' ledgers decide whether the budget allows it).
        Reads only: nothing is written until :meth:`save_config`."""
        saved = read_config(path)
        if saved.replace(rounds=config.rounds) != config:
            raise ConfigError(
                f"{str(path)!r} was made with a different configuration; resume it without "
                "changing options, or start a new run"
            )
        run = cls(path)
        done = run.completed_rounds()
        if config.rounds < done:
            raise ConfigError(
                f"--rounds {config.rounds} is fewer than the {done} rounds {str(path)!r} has "
                "completed; a run can be extended, not shortened"
            )
        return run

    def save_config(self, config: RunConfig) -> None:
        """Write ``config`` as the run's configuration if it differs from the stored one."""
        file = self.path / CONFIG_FILE
        if file.is_file() and read_config(self.path) == config:
            return
        self.write_json(CONFIG_FILE, {"secure_fedsa": written_by(), **config.to_dict()})

    def client_dir(self, client_id: str) -> Path:
        return self.path / "clients" / client_id

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, data)

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def metrics(self) -> list[dict]:
        path = self.path / METRICS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stored_session(self) -> str | None:
        """The session id ``setup.json`` records (None before the setup was written); a run
        keeps its session across restarts so that its messages stay valid."""
        path = self.path / "setup.json"
        if not path.exists():
            return None
        try:
            session = json.loads(path.read_text())["session"]
        except (OSError, ValueError, KeyError, TypeError):
            session = None
        if not isinstance(session, str):
            raise ConfigError(f"{path} records no session: the run cannot be resumed")
        return session

    def completed_rounds(self) -> int:
        rounds = [m["round"] for m in self.metrics()]
        return max(rounds, default=0)


def read_config(path: Path) -> RunConfig:
    """The configuration a run directory was made with."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"{str(path)!r} is not a run directory (no {CONFIG_FILE})")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    data.pop("secure_fedsa", None)
    return RunConfig.from_dict(data)
