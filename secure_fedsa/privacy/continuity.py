"""Does a client's ledger explain everything the client has released? (promise P5)

Every time a client keeps or sends something computed from its records, it records which ledger
entry paid for it: ``state.pt`` holds the hash of the entry of its last trained round, each
egress record of an update holds the hash of the entry that paid for that update, and the run's
``metrics.jsonl`` lists the rounds it trained. Before a client trains again, these releases are
matched against its ledger. A ledger that was deleted, emptied, trimmed or rewritten (even
consistently, with a recomputed chain) no longer contains the entries those releases name, and
the client refuses to go on: it never trains with a budget that forgot earlier rounds.

This is tamper-evidence against anyone who edits some of the run's files. A rollback of the whole
directory to an older, consistent copy, or a consistent rewrite of every file, is caught by the
ledger's anchor outside the run directory (:mod:`secure_fedsa.privacy.anchor`), which
:func:`open_history` checks too. Normal operation never
hits these errors: the ledger is written before any release it pays for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from secure_fedsa.errors import LedgerError
from secure_fedsa.privacy.anchor import AnchorStore
from secure_fedsa.privacy.ledger import PrivacyLedger


@dataclass(frozen=True)
class Release:
    """Something a client kept or sent from round ``round``, paid for by ledger entry
    ``ledger_entry`` (None where the record does not name the entry, e.g. metrics.jsonl)."""

    round: int
    ledger_entry: str | None
    where: str


def unexplained(ledger: PrivacyLedger, releases: Iterable[Release]) -> list[str]:
    """One message per release the ledger does not pay for (pure; empty when all are paid)."""
    rounds = {e.round for e in ledger.entries}
    problems = []
    for release in releases:
        if release.ledger_entry is None:
            if release.round not in rounds:
                problems.append(
                    f"{release.where} shows round {release.round} trained, the ledger has no "
                    "entry for it"
                )
            continue
        entry = ledger.entry(release.ledger_entry)
        if entry is None:
            problems.append(
                f"{release.where} was paid for by ledger entry {release.ledger_entry[:12]}… "
                f"(round {release.round}), which the ledger does not contain"
            )
        elif entry.round != release.round:
            problems.append(
                f"{release.where} is from round {release.round}, but the ledger entry it names "
                f"is of round {entry.round}"
            )
    return problems


def open_history(
    path: Path, releases: Sequence[Release], anchors: AnchorStore | None
) -> PrivacyLedger | None:
    """The verified ledger at ``path`` if it explains ``releases`` (and reaches its anchor in
    ``anchors``); None if there is none yet and nothing was released. Raises
    :class:`LedgerError` otherwise, leaving the file as it is."""
    if not path.exists():
        if releases:
            first = releases[0]
            raise LedgerError(
                f"{path}: the privacy ledger is missing, but {first.where} shows this client "
                f"trained round {first.round}: the privacy it spent cannot be recovered. Restore "
                "the ledger from a backup; a new ledger is never created for a client that has "
                "trained"
            )
        return None
    ledger = PrivacyLedger.read(path, anchors=anchors)
    problems = unexplained(ledger, releases)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LedgerError(
            f"{path}: the privacy ledger does not account for what this client released: "
            f"{problems[0]}{more}. The ledger was deleted, trimmed or edited after those rounds; "
            "restore it from a backup. Training on would spend privacy the ledger forgot"
        )
    return ledger


def egress_releases(records: Iterable[dict]) -> list[Release]:
    """The updates in a client's egress records (parsed JSON lines), as releases."""
    releases = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or record.get("kind") != "update":
            continue
        round_number = record.get("round")
        if isinstance(round_number, int) and not isinstance(round_number, bool):
            entry = record.get("ledger_entry")
            releases.append(
                Release(
                    round_number,
                    entry if isinstance(entry, str) else None,
                    f"egress record {number} (an update of round {round_number})",
                )
            )
    return releases


def metrics_releases(records: Iterable[dict], client_id: str) -> list[Release]:
    """The rounds ``metrics.jsonl`` says this client trained, as releases."""
    releases = []
    for record in records:
        if not isinstance(record, dict):
            continue
        entry = (record.get("clients") or {}).get(client_id)
        number = record.get("round")
        trained = isinstance(entry, dict) and entry.get("status") == "trained"
        if trained and isinstance(number, int) and not isinstance(number, bool):
            releases.append(Release(number, None, f"metrics.jsonl (round {number})"))
    return releases
