"""The per-client privacy ledger (promise P5: privacy spent is never forgotten).

One JSON file per client records who the ledger belongs to and what it may spend (its identity:
client, δ, accountant, the neighbouring relation ε is stated in (replace-one), dataset size, the
budget ε and a random ledger id) and one entry per trained round: the DP
event of that round, where its noise came from, and the cumulative ε after it. The file is
written atomically as soon as a round has trained, before anything computed in that round leaves
the client ("charge before release"), and read back and checked on restart, so a restarted client
continues from the privacy it has already spent instead of starting again at zero.

The entries form a hash chain: each carries the SHA-256 of the previous entry (the first, of the
identity) and its own hash. The client records the hash of the entry that paid for each release
next to it (``state.pt``, the egress record), so a ledger that was deleted, emptied, trimmed or
rewritten no longer explains those releases and is refused (:mod:`secure_fedsa.privacy.continuity`).
A round trained again after a crash is recorded again, as a new entry with the same round number:
counting a round twice is safe, counting it zero times never is.

Each time a round is recorded, the ledger's new head is also written to its anchor, outside the
run directory (:mod:`secure_fedsa.privacy.anchor`): a ledger restored from an older copy of the
whole directory, or rewritten, no longer reaches its anchor and is refused.

A ledger is never silently replaced: a corrupt file, a broken chain, one whose recorded ε does not
match a recomputation from its events, or one that belongs to another client or configuration
(including another budget: a resume can never raise it) raises :class:`LedgerError` and leaves
the file untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from secure_fedsa.atomic import atomic_write
from secure_fedsa.errors import BudgetExhausted, LedgerError, PrivacyError
from secure_fedsa.privacy.accounting import NEIGHBOURING_RELATION, DPEvent, epsilon
from secure_fedsa.privacy.anchor import Anchor, AnchorStore, rollback_problem

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LedgerEntry",
    "LedgerIdentity",
    "PrivacyLedger",
    "check_budget",
    "identity_hash",
]

FORMAT = "secure_fedsa.privacy_ledger"
# Version 3: replace-one accounting (dp_accounting PLD), the relation and a random ledger id in the
# identity, anchors outside the run directory. Version 2 ledgers (add/remove-one, Opacus) are not
# read: their ε means something else.
FORMAT_VERSION = 3

# A recorded ε must equal its recomputation to within this (absolute + relative) tolerance. The
# recomputation is deterministic; the slack only absorbs numerical differences between machines.
EPSILON_ABS_TOLERANCE = 1e-4
EPSILON_REL_TOLERANCE = 1e-4

# Identity fields that must match when a ledger is reopened: they decide what the recorded ε
# means (δ, accountant), whose records it covers (client, dataset size, key), the sensitivity of
# each step (clip) and what may be spent (the budget: a resume can never raise it). The planned σ
# may change on resume (recalibration against the history); versions describe the run that
# created the ledger.
MATCHED_FIELDS = (
    "client_id",
    "key_fingerprint",
    "delta",
    "accountant",
    "dataset_size",
    "clip",
    "target_epsilon",
    "neighbouring_relation",
)


def _library_versions() -> dict[str, str]:
    import opacus
    import torch

    import secure_fedsa

    return {
        "opacus": opacus.__version__,
        "torch": torch.__version__,
        "secure_fedsa": secure_fedsa.__version__,
    }


@dataclass(frozen=True)
class LedgerIdentity:
    """Who and what a ledger belongs to; fixed when the ledger is created."""

    client_id: str
    key_fingerprint: str  # "none" when updates are not encrypted
    delta: float
    accountant: str
    dataset_size: int  # training records of this client
    target_epsilon: float | None  # the budget; None when σ is given without one
    noise_multiplier: float  # planned σ
    clip: float
    # the relation every ε of this ledger is stated in (privacy/accounting.py)
    neighbouring_relation: str
    # random, fixed at creation: no two ledgers share an identity (or an anchor)
    ledger_id: str
    versions: dict[str, str] = field(hash=False)
    # SHA-256 committing to the run-level audit's canary bits (privacy/canaries.py), fixed before
    # the first round; None (and absent from the file) in a run without canaries
    canary_commitment: str | None = None

    @classmethod
    def create(
        cls,
        *,
        client_id: str,
        key_fingerprint: str | None,
        delta: float,
        accountant: str,
        dataset_size: int,
        target_epsilon: float | None,
        noise_multiplier: float,
        clip: float,
        canary_commitment: str | None = None,
    ) -> LedgerIdentity:
        """The identity of a new ledger, with this process's library versions."""
        return cls(
            client_id=client_id,
            key_fingerprint="none" if key_fingerprint is None else key_fingerprint,
            delta=float(delta),
            accountant=accountant,
            dataset_size=dataset_size,
            target_epsilon=None if target_epsilon is None else float(target_epsilon),
            noise_multiplier=float(noise_multiplier),
            clip=float(clip),
            versions=_library_versions(),
            neighbouring_relation=NEIGHBOURING_RELATION,
            ledger_id=secrets.token_hex(16),
            canary_commitment=canary_commitment,
        )

    def __post_init__(self) -> None:
        problems = _identity_problems(self)
        if problems:
            raise PrivacyError(f"invalid ledger identity: {'; '.join(problems)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _identity_problems(identity: LedgerIdentity) -> list[str]:
    i = identity
    checks = [
        (isinstance(i.client_id, str) and i.client_id != "", "client_id must be a non-empty str"),
        (isinstance(i.key_fingerprint, str), "key_fingerprint must be a str ('none' if unused)"),
        (_is_number(i.delta) and 0 < i.delta < 1, "delta must be in (0, 1)"),
        (isinstance(i.accountant, str) and i.accountant != "", "accountant must be a str"),
        (
            isinstance(i.dataset_size, int)
            and not isinstance(i.dataset_size, bool)
            and i.dataset_size > 0,
            "dataset_size must be an int > 0",
        ),
        (
            i.target_epsilon is None or (_is_number(i.target_epsilon) and i.target_epsilon > 0),
            "target_epsilon must be None or > 0",
        ),
        (
            _is_number(i.noise_multiplier)
            and math.isfinite(i.noise_multiplier)
            and i.noise_multiplier >= 0,
            "noise_multiplier must be finite and >= 0",
        ),
        (_is_number(i.clip) and math.isfinite(i.clip) and i.clip > 0, "clip must be > 0"),
        (
            i.neighbouring_relation == NEIGHBOURING_RELATION,
            f"neighbouring_relation must be {NEIGHBOURING_RELATION!r}",
        ),
        (
            isinstance(i.ledger_id, str) and len(i.ledger_id) == 32,
            "ledger_id must be 32 hex characters",
        ),
        (
            isinstance(i.versions, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in i.versions.items()),
            "versions must map names to version strings",
        ),
        (
            i.canary_commitment is None
            or (
                isinstance(i.canary_commitment, str)
                and len(i.canary_commitment) == 64
                and all(c in "0123456789abcdef" for c in i.canary_commitment)
            ),
            "canary_commitment must be None or a SHA-256 in hex",
        ),
    ]
    return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class LedgerEntry:
    """One trained round: its DP event and the cumulative ε after it."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    clip: float
    accountant: str
    epsilon: float  # cumulative, after this round; inf when no finite bound exists
    timestamp: str  # ISO 8601, UTC
    noise_source: str  # where noise and sampling came from ("os-csprng" in every private run)
    previous: str  # SHA-256 of the previous entry (of the identity, for the first entry)
    hash: str  # SHA-256 of this entry (every field but this one)

    @property
    def event(self) -> DPEvent:
        return DPEvent(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=self.steps
        )


# --- JSON ---------------------------------------------------------------------------------------
# Floats are written with repr (exact round trip). ε = inf is written as the string "inf", which
# every JSON reader accepts (bare Infinity is not JSON).


def _encode_epsilon(value: float) -> float | str:
    return "inf" if value == math.inf else value


def _decode_epsilon(value: Any) -> float:
    if value == "inf":
        return math.inf
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"epsilon must be a number >= 0 or 'inf', got {value!r}")
    return float(value)


def _entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {**asdict(entry), "epsilon": _encode_epsilon(entry.epsilon)}


def _document(identity: LedgerIdentity, entries: tuple[LedgerEntry, ...]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "identity": _identity_json(identity),
        "entries": [_entry_json(e) for e in entries],
    }


# --- the hash chain -------------------------------------------------------------------------
# hash = SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of the object as written
# to the file, without its "hash" field. Auditors recompute it with any JSON library.


def canonical_hash(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _identity_json(identity: LedgerIdentity) -> dict[str, Any]:
    """The identity as written: without ``canary_commitment`` when there is none, so a ledger
    of a run without canaries reads (and hashes) exactly as before the field existed."""
    data = asdict(identity)
    if data["canary_commitment"] is None:
        del data["canary_commitment"]
    return data


def identity_hash(identity: LedgerIdentity) -> str:
    """The chain's anchor: the first entry's ``previous``."""
    return canonical_hash(_identity_json(identity))


def _require(mapping: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{what} must be a JSON object")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ValueError(f"{what} lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")


def _parse_identity(raw: Any) -> LedgerIdentity:
    names = tuple(f.name for f in fields(LedgerIdentity))
    if isinstance(raw, dict) and "canary_commitment" not in raw:
        names = tuple(n for n in names if n != "canary_commitment")  # written only when set
    _require(raw, names, "identity")
    try:
        return LedgerIdentity(**raw)
    except PrivacyError as exc:
        raise ValueError(str(exc)) from None


def _parse_entry(raw: Any, index: int) -> LedgerEntry:
    names = tuple(f.name for f in fields(LedgerEntry))
    what = f"entry {index}"
    _require(raw, names, what)
    if not isinstance(raw["round"], int) or isinstance(raw["round"], bool) or raw["round"] < 1:
        raise ValueError(f"{what}: round must be an int >= 1")
    if not _is_number(raw["clip"]) or not raw["clip"] > 0:
        raise ValueError(f"{what}: clip must be > 0")
    if not isinstance(raw["accountant"], str) or not isinstance(raw["timestamp"], str):
        raise ValueError(f"{what}: accountant and timestamp must be strings")
    try:
        event = DPEvent(
            noise_multiplier=raw["noise_multiplier"],
            sample_rate=raw["sample_rate"],
            steps=raw["steps"],
        )
    except PrivacyError as exc:
        raise ValueError(f"{what}: {exc}") from None
    for name in ("noise_source", "previous", "hash"):
        if not isinstance(raw[name], str) or not raw[name]:
            raise ValueError(f"{what}: {name} must be a non-empty string")
    return LedgerEntry(
        round=raw["round"],
        noise_multiplier=event.noise_multiplier,
        sample_rate=event.sample_rate,
        steps=event.steps,
        clip=float(raw["clip"]),
        accountant=raw["accountant"],
        epsilon=_decode_epsilon(raw["epsilon"]),
        timestamp=raw["timestamp"],
        noise_source=raw["noise_source"],
        previous=raw["previous"],
        hash=raw["hash"],
    )


def _parse(text: str) -> tuple[LedgerIdentity, tuple[LedgerEntry, ...]]:
    """Identity and entries of a ledger file; ValueError saying what is wrong."""
    doc = json.loads(text)
    _require(doc, ("format", "format_version", "identity", "entries"), "ledger")
    if doc["format"] != FORMAT:
        raise ValueError(f"not a privacy ledger (format {doc['format']!r})")
    if doc["format_version"] != FORMAT_VERSION:
        older = doc["format_version"] in (1, 2)
        raise ValueError(
            f"format version {doc['format_version']!r}; this version of secure_fedsa reads "
            f"version {FORMAT_VERSION}"
            + (
                " (older ledgers accounted add/remove-one neighbours, which protect nothing "
                "once n is public: start a new run)"
                if older
                else ""
            )
        )
    identity = _parse_identity(doc["identity"])
    if not isinstance(doc["entries"], list):
        raise ValueError("entries must be a list")
    entries = tuple(_parse_entry(raw, i) for i, raw in enumerate(doc["entries"]))
    return identity, entries


def _check_consistent(identity: LedgerIdentity, entries: tuple[LedgerEntry, ...]) -> None:
    """The chain is intact, rounds never go back (a retried round repeats its number), ε never
    decreases, and the last ε equals its recomputation."""
    previous_round, previous_eps = 0, 0.0
    link = identity_hash(identity)
    for entry in entries:
        if entry.previous != link:
            raise ValueError(
                f"the hash chain is broken at round {entry.round}: the entry does not follow "
                "the one before it (an entry was removed, inserted, reordered or edited)"
            )
        if canonical_hash(_entry_json(entry)) != entry.hash:
            raise ValueError(f"the entry of round {entry.round} was edited (its hash differs)")
        link = entry.hash
        if entry.round < previous_round:
            raise ValueError(f"round {entry.round} follows round {previous_round}")
        if entry.epsilon < previous_eps:
            raise ValueError(f"ε decreases at round {entry.round}")
        if entry.accountant != identity.accountant:
            raise ValueError(
                f"round {entry.round} was accounted with {entry.accountant!r}, "
                f"the ledger with {identity.accountant!r}"
            )
        previous_round, previous_eps = entry.round, entry.epsilon
    if entries:
        # One accountant call checks every event: the final ε depends on all of them.
        recomputed = epsilon(
            [e.event for e in entries], delta=identity.delta, accountant=identity.accountant
        )
        recorded = entries[-1].epsilon
        if not _close(recorded, recomputed):
            raise ValueError(
                f"recorded ε = {recorded!r} after round {entries[-1].round} does not match "
                f"ε = {recomputed!r} recomputed from the recorded events"
            )


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= EPSILON_ABS_TOLERANCE + EPSILON_REL_TOLERANCE * abs(b)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the ledger ---------------------------------------------------------------------------------


class PrivacyLedger:
    """A client's privacy ledger, bound to one JSON file. Use :meth:`open`."""

    def __init__(
        self,
        path: Path,
        identity: LedgerIdentity,
        entries: tuple[LedgerEntry, ...],
        anchors: AnchorStore | None = None,
    ) -> None:
        self._path = path
        self._identity = identity
        self._entries = entries
        self._anchors = anchors

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        identity: LedgerIdentity,
        create: bool = True,
        anchors: AnchorStore | None = None,
    ) -> PrivacyLedger:
        """Read and check the ledger at ``path``, or create it (written at once) if absent and
        ``create`` is true (callers pass false for a client that has trained before).

        With ``anchors`` (every training client passes them; audits, which only read, do not),
        the ledger is checked against its anchor and every recorded round advances it.

        Raises :class:`LedgerError` if the file is corrupt or inconsistent, was created for
        another client or configuration, or was rolled back or rewritten behind its anchor; the
        file is then left exactly as it was.
        """
        if not isinstance(identity, LedgerIdentity):
            raise TypeError(f"identity must be a LedgerIdentity, got {type(identity).__name__}")
        path = Path(path)
        if not path.exists():
            if not create:
                raise LedgerError(
                    f"{path}: the privacy ledger is missing, but this client has trained before: "
                    "the privacy it spent cannot be recovered. Restore the ledger from a backup; "
                    "a new ledger is never created for a client that has trained"
                )
            if not path.parent.is_dir():
                raise LedgerError(f"{path}: directory {path.parent} does not exist")
            ledger = cls(path, identity, (), anchors)
            ledger._write(ledger._entries)
            ledger._advance_anchor()
            return ledger
        ledger = cls.read(path, anchors=anchors)
        ledger.require_identity(identity)
        return ledger

    @classmethod
    def read(
        cls, path: str | os.PathLike[str], *, anchors: AnchorStore | None = None
    ) -> PrivacyLedger:
        """The existing, verified ledger at ``path`` (chain, order and ε all checked; with
        ``anchors``, also that it is not behind or beside its anchor).

        Raises :class:`LedgerError` if it is missing, unreadable, corrupt, inconsistent, or
        rolled back or rewritten.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"{path}: cannot read the privacy ledger: {exc}") from exc
        try:
            stored, entries = _parse(text)
            _check_consistent(stored, entries)
        except (ValueError, TypeError, PrivacyError) as exc:  # JSONDecodeError: a ValueError
            raise LedgerError(
                f"{path}: privacy ledger is corrupt or was edited ({exc}). It is left as it is: "
                "restore it from a backup, or start a fresh run directory (spent privacy is "
                "then no longer tracked for this data)"
            ) from None
        ledger = cls(path, stored, entries, anchors)
        if anchors is not None:
            ledger._check_anchor()
        return ledger

    def _check_anchor(self) -> None:
        store = self._anchors
        assert store is not None
        key = identity_hash(self._identity)
        anchor = store.read(key)
        if anchor is None and self._entries:
            raise LedgerError(
                f"{self._path}: this ledger records {len(self._entries)} round(s) but has no "
                f"anchor in {store.directory} (file {key}.json): it cannot be shown to be the "
                "latest copy, so it is not trusted. If the run was trained on another machine or "
                "as another user, copy that file from its anchor directory (or point "
                "$SECURE_FEDSA_ANCHORS at it); a ledger is never trusted on its own word"
            )
        if anchor is not None:
            problem = rollback_problem(anchor, [e.hash for e in self._entries], key)
            if problem:
                raise LedgerError(
                    f"{self._path}: {problem}. Training on would spend privacy the budget has "
                    "already paid for; restore the latest copy of the run (its anchor is "
                    f"{store.file(key)})"
                )
            if anchor.entries == len(self._entries):
                return
        self._advance_anchor()  # a new ledger, or one a crash left ahead of its anchor

    def _advance_anchor(self) -> None:
        if self._anchors is None:
            return
        self._anchors.advance(
            Anchor(
                ledger=identity_hash(self._identity),
                client_id=self._identity.client_id,
                entries=len(self._entries),
                head=self.head,
                epsilon=self.epsilon_spent,
            )
        )

    def require_identity(self, identity: LedgerIdentity) -> None:
        """Raise :class:`LedgerError` unless ``identity`` matches this ledger's
        :data:`MATCHED_FIELDS` (same client, key, δ, accountant, data size, clip and budget)."""
        for name in MATCHED_FIELDS:
            ours, theirs = getattr(self._identity, name), getattr(identity, name)
            if ours == theirs:
                continue
            if name == "target_epsilon":
                raise LedgerError(
                    f"{self._path}: the ledger's budget is ε = {ours!r} but the configuration "
                    f"asks for ε = {theirs!r}. The ledger is the authority on the budget: a "
                    "resumed run keeps the budget it was started with (restore config.json, or "
                    "start a new run directory for a new budget)"
                )
            raise LedgerError(
                f"{self._path}: this privacy ledger belongs to another configuration: {name} is "
                f"{ours!r} in the ledger but {theirs!r} now. Use a fresh run directory, or "
                "the configuration the ledger was created with"
            )

    # -- reading -------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def identity(self) -> LedgerIdentity:
        return self._identity

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return self._entries

    @property
    def events(self) -> tuple[DPEvent, ...]:
        return tuple(e.event for e in self._entries)

    @property
    def epsilon_spent(self) -> float:
        """Cumulative ε after the last recorded round (0 before any)."""
        return self._entries[-1].epsilon if self._entries else 0.0

    @property
    def steps_total(self) -> int:
        return sum(e.steps for e in self._entries)

    @property
    def last_round(self) -> int:
        """The last recorded round number (0 before any)."""
        return self._entries[-1].round if self._entries else 0

    @property
    def head(self) -> str:
        """Hash of the last entry (of the identity before any): what releases are tied to."""
        return self._entries[-1].hash if self._entries else identity_hash(self._identity)

    def entry(self, entry_hash: str) -> LedgerEntry | None:
        """The entry with this hash, or None."""
        return next((e for e in self._entries if e.hash == entry_hash), None)

    def projected_epsilon(self, event: DPEvent) -> float:
        """Cumulative ε if ``event`` were recorded next."""
        if not isinstance(event, DPEvent):
            raise PrivacyError(f"expected DPEvent, got {type(event).__name__}")
        return epsilon(
            (*self.events, event), delta=self._identity.delta, accountant=self._identity.accountant
        )

    def would_exceed(self, event: DPEvent, *, budget: float) -> tuple[bool, float]:
        """(whether recording ``event`` would take ε above ``budget``, the projected ε)."""
        if not _is_number(budget) or not budget > 0:
            raise PrivacyError(f"budget must be a number > 0, got {budget!r}")
        projected = self.projected_epsilon(event)
        return projected > budget, projected

    # -- writing -------------------------------------------------------------------------------
    def record(self, round: int, event: DPEvent, *, clip: float, noise_source: str) -> float:
        """Append the round just trained, write the file atomically, return the cumulative ε.

        Call it as soon as training ran and before anything computed in the round leaves the
        client: the privacy is spent whether or not anything else succeeds afterwards. A round
        trained again (after a crash lost its result) is recorded again: ``round`` may equal
        the last recorded round, never precede it.
        """
        if not isinstance(round, int) or isinstance(round, bool):
            raise LedgerError(f"round must be an int, got {round!r}")
        if round < self.last_round:
            raise LedgerError(
                f"{self._path}: round {round} is before the last recorded round "
                f"{self.last_round}; rounds are recorded in order"
            )
        if not isinstance(noise_source, str) or not noise_source:
            raise LedgerError(f"noise_source must name the randomness used, got {noise_source!r}")
        if not _is_number(clip) or not (math.isfinite(clip) and clip > 0):
            raise LedgerError(f"clip must be a finite number > 0, got {clip!r}")
        cumulative = self.projected_epsilon(event)
        unsigned = LedgerEntry(
            round=round,
            noise_multiplier=event.noise_multiplier,
            sample_rate=event.sample_rate,
            steps=event.steps,
            clip=float(clip),
            accountant=self._identity.accountant,
            epsilon=cumulative,
            timestamp=_now(),
            noise_source=noise_source,
            previous=self.head,
            hash="",
        )
        entry = replace(unsigned, hash=canonical_hash(_entry_json(unsigned)))
        entries = (*self._entries, entry)
        self._write(entries)
        self._entries = entries
        self._advance_anchor()  # before anything paid for by this entry can leave the client
        return cumulative

    def _write(self, entries: tuple[LedgerEntry, ...]) -> None:
        text = json.dumps(_document(self._identity, entries), indent=2, allow_nan=False)
        atomic_write(self._path, text + "\n")

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger({str(self._path)!r}, client={self._identity.client_id!r}, "
            f"rounds={len(self._entries)}, epsilon={self.epsilon_spent:.4g})"
        )


def check_budget(ledger: PrivacyLedger, event: DPEvent, budget: float) -> float:
    """Raise :class:`BudgetExhausted` if ``event`` would take ``ledger`` past ``budget``.

    Returns the projected cumulative ε otherwise. Call it before training a round.
    """
    exceeded, projected = ledger.would_exceed(event, budget=budget)
    if exceeded:
        raise BudgetExhausted(
            f"client {ledger.identity.client_id}: privacy budget exhausted: spent ε = "
            f"{ledger.epsilon_spent:.4g}, the next round ({event.steps} steps, "
            f"σ = {event.noise_multiplier:.4g}, q = {event.sample_rate:.4g}) would reach ε = "
            f"{projected:.4g}, above the budget ε = {budget:g} (δ = {ledger.identity.delta:g})"
        )
    return projected
