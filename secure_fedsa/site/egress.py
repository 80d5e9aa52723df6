"""The egress record: every message a client sends, written by the transport as it sends it.

One JSON line per message in ``<run>/egress/<client>.jsonl``: round, kind, byte count, SHA-256 of
the bytes, whether the payload is encrypted, the names of the tensors it carries (from the
manifest the client encoded against) and, for a DP update, the hash of the privacy-ledger entry
that paid for it. Auditors read these files; they are append-only and never
hold the payload itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path


class EgressLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        client_id: str,
        *,
        round_number: int,
        kind: str,
        payload: bytes,
        encrypted: bool,
        tensors: list[str],
        transport: str,
        key_fingerprint: str | None = None,
        manifest_hash: str | None = None,
        ledger_entry: str | None = None,
    ) -> dict:
        entry = {
            "time": time.time(),
            "client": client_id,
            "round": round_number,
            "kind": kind,
            "transport": transport,
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "form": "ciphertext" if encrypted else "plaintext",
            "tensors": tensors,
            "key_fingerprint": key_fingerprint,
            "manifest_hash": manifest_hash,
            # the privacy-ledger entry that paid for this update (None without DP)
            "ledger_entry": ledger_entry,
        }
        path = self.directory / f"{client_id}.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def read(self, client_id: str) -> list[dict]:
        path = self.directory / f"{client_id}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
