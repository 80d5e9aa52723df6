"""Ledger anchors: each ledger's head, kept where a rollback of the run directory cannot reach.

A privacy ledger lives in the client's directory, inside the run directory (or a Flower site's
state directory). Restoring that whole directory from an older copy restores an older, perfectly
consistent ledger: its chain, the egress records and ``state.pt`` all agree, and the rounds
trained since would be trained again on the same records with a budget that forgot them. Every
time a ledger records a round, its new head (number of entries, hash of the last one, ε) is also
written here, in a per-user directory outside any run (:func:`default_anchor_dir`, or
``$SECURE_FEDSA_ANCHORS``). Opening a ledger checks it against its anchor: a ledger with fewer
entries than its anchor, or whose entry at the anchored position has another hash, was rolled
back or rewritten, and is refused. A ledger with entries but no anchor is refused too (it was
made elsewhere, or the anchors were deleted): the message says how to carry the anchor along.

One file per ledger, named by the ledger's identity hash (unique: the identity holds a random
ledger id). Anchors never move backwards. They hold nothing secret: the same head travels in
every signed update, where the server checks that it never goes back either.

Whoever controls both the run directory and this directory can still roll both back; the threat
model says so (docs/threat-model.md, P5).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from secure_fedsa.atomic import write_json_atomic
from secure_fedsa.errors import LedgerError

ANCHOR_DIR_ENV = "SECURE_FEDSA_ANCHORS"
FORMAT = "secure_fedsa.ledger_anchor"
FORMAT_VERSION = 1


def default_anchor_dir() -> Path:
    """``$SECURE_FEDSA_ANCHORS``, else ``$XDG_STATE_HOME/secure-fedsa/ledger-anchors``, else
    ``~/.local/state/secure-fedsa/ledger-anchors``."""
    given = os.environ.get(ANCHOR_DIR_ENV)
    if given:
        return Path(given)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "secure-fedsa" / "ledger-anchors"


@dataclass(frozen=True)
class Anchor:
    """The head of one ledger: how many entries it had, the last one's hash, and ε after it."""

    ledger: str  # the ledger's identity hash (the name of its anchor file)
    client_id: str
    entries: int
    head: str  # hash of the last entry (the identity hash before any entry)
    epsilon: float

    def to_json(self) -> dict[str, Any]:
        eps = "inf" if self.epsilon == math.inf else self.epsilon
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self), "epsilon": eps}


def rollback_problem(anchor: Anchor, entry_hashes: list[str], identity_hash: str) -> str | None:
    """Why a ledger whose entries hash to ``entry_hashes`` is not a continuation of ``anchor``
    (pure; None when it is: the same head, or the anchored head followed by more entries)."""
    have = len(entry_hashes)
    if have < anchor.entries:
        return (
            f"the ledger has {have} entr{'y' if have == 1 else 'ies'}, but {anchor.entries} were "
            f"recorded for it (ε = {anchor.epsilon:.4g}): it was rolled back to an older copy"
        )
    at = entry_hashes[anchor.entries - 1] if anchor.entries else identity_hash
    if at != anchor.head:
        return (
            f"entry {anchor.entries} of the ledger is not the one recorded for it: the ledger was "
            "rewritten"
        )
    return None


class AnchorStore:
    """The anchors of every ledger this user's processes wrote, in one directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_anchor_dir()

    def file(self, ledger: str) -> Path:
        if not (isinstance(ledger, str) and len(ledger) == 64 and ledger.isalnum()):
            raise LedgerError(f"not a ledger identity hash: {ledger!r}")
        return self.directory / f"{ledger}.json"

    def read(self, ledger: str) -> Anchor | None:
        """The anchor of ``ledger``, or None; LedgerError if the file is unreadable."""
        path = self.file(ledger)
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.pop("format") != FORMAT or raw.pop("format_version") != FORMAT_VERSION:
                raise ValueError("not a ledger anchor of this version")
            eps = math.inf if raw.get("epsilon") == "inf" else float(raw["epsilon"])
            anchor = Anchor(
                ledger=str(raw["ledger"]),
                client_id=str(raw["client_id"]),
                entries=int(raw["entries"]),
                head=str(raw["head"]),
                epsilon=eps,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerError(
                f"{path}: the ledger anchor is unreadable ({exc}); it is left as it is. Restore "
                "it from a backup: without it this ledger cannot be shown to be the latest"
            ) from None
        if anchor.ledger != ledger or anchor.entries < 0:
            raise LedgerError(f"{path}: the ledger anchor belongs to another ledger")
        return anchor

    def advance(self, anchor: Anchor) -> None:
        """Record ``anchor`` as the ledger's head; refuses to move an anchor backwards."""
        current = self.read(anchor.ledger)
        if current is not None and anchor.entries < current.entries:
            raise LedgerError(
                f"{self.file(anchor.ledger)}: refusing to move the ledger anchor back from "
                f"{current.entries} to {anchor.entries} entries"
            )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json_atomic(self.file(anchor.ledger), anchor.to_json())
