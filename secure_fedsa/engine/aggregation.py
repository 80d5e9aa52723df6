"""The server's side of one round: validate and add updates, remove the masks, sign the sum.

:class:`ServerRound` holds one round's :class:`~secure_fedsa.server.aggregator.Aggregator` and
secure aggregation's :class:`~secure_fedsa.secagg.protocol.MaskingServer`. The server never decrypts
(this module imports no decryption code, and its keys have none) and it remembers, across rounds and
restarts, the last ledger head it accepted from each client (:class:`LedgerHeads`, rebuilt from its
own metrics.jsonl), so that a client whose ledger went back is refused (P5).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from secure_fedsa.crypto.codec import ServerCodec
from secure_fedsa.crypto.signing import (
    ROSTER_SIGNATURE_KIND,
    Identity,
    Roster,
    SigningKey,
    sign_roster,
)
from secure_fedsa.crypto.wire import LedgerHead
from secure_fedsa.engine.messages import APPLIED, KeysRequest
from secure_fedsa.errors import CryptoError, UpdateRejected
from secure_fedsa.model.sharing import Manifest
from secure_fedsa.secagg.protocol import KeyAdvert, MaskingServer, Reveal
from secure_fedsa.secagg.protocol import RoundFailed as MaskingFailed
from secure_fedsa.server.aggregator import Aggregator

ROSTER_KIND = ROSTER_SIGNATURE_KIND  # what the server's signature over the roster is bound to


@dataclass(frozen=True)
class ServerKeys:
    """What the server holds: a codec without any secret key, the roster, its own identity."""

    codec: ServerCodec
    roster: Roster
    identity: Identity  # the server's (it signs aggregates and the roster it sends)


def new_session() -> str:
    """A run's random session id: bound into every signed message, so that messages of another
    run (under the same keys) are rejected as replays. Public; kept in the run's setup."""
    return secrets.token_hex(16)


def submit(aggregator: Aggregator, payload: bytes) -> str | None:
    """Add one update; returns the rejection reason, or None when it was accepted."""
    try:
        aggregator.add(payload)
    except UpdateRejected as exc:
        return exc.reason
    return None


def ledger_heads_from_metrics(metrics: Sequence[dict]) -> dict[str, tuple[int, LedgerHead]]:
    """The last ledger head the server accepted from each client, from its round records (the
    ``ledger`` each accepted update carried), so that a restarted server keeps checking."""
    heads: dict[str, tuple[int, LedgerHead]] = {}
    for record in metrics:
        number = record.get("round") if isinstance(record, dict) else None
        for cid, entry in ((record or {}).get("clients") or {}).items():
            head = entry.get("ledger") if isinstance(entry, dict) else None
            if isinstance(number, int) and isinstance(head, dict):
                heads[cid] = (number, LedgerHead(int(head["entries"]), str(head["head"])))
    return heads


def last_applied_round(metrics: Sequence[dict]) -> int:
    """The last round whose aggregate some site reported applied, from the server's round
    records (0: none), so that a restarted server tells the sites the same."""
    last = 0
    for record in metrics:
        number = record.get("round") if isinstance(record, dict) else None
        entries = ((record or {}).get("clients") or {}).values()
        if isinstance(number, int) and any(
            isinstance(e, dict) and e.get("aggregate") == APPLIED for e in entries
        ):
            last = max(last, number)
    return last


def signed_roster(roster: Roster, key: SigningKey) -> tuple[bytes, bytes]:
    """The roster as the server sends it for secure aggregation, and its signature."""
    text = json.dumps(roster.to_json(), sort_keys=True).encode()
    return text, sign_roster(roster, key)


class ServerRound:
    """One round at the server. ``aggregator`` is None when the method shares nothing;
    ``masking`` is None with masking off (or nothing shared)."""

    def __init__(
        self,
        keys: ServerKeys,
        manifest: Manifest,
        number: int,
        *,
        session: str,
        dp: bool,
        heads: dict[str, tuple[int, LedgerHead]],
        masked: bool,
        threshold: int,
    ) -> None:
        self.keys, self.number, self.session = keys, number, session
        self.heads = heads  # updated in place: the server's memory across rounds
        self.aggregator = (
            Aggregator(
                keys.codec,
                manifest_hash=manifest.digest,
                round=number,
                n_values=manifest.size,
                session=session,
                roster=keys.roster,
                key=keys.identity.key,
                require_ledger=dp,
                ledger_heads=heads,
            )
            if manifest.size
            else None
        )
        self.masking = (
            MaskingServer(keys.roster, session, number, threshold)
            if masked and self.aggregator is not None
            else None
        )

    @property
    def accepted(self) -> list[str]:
        return list(self.aggregator.accepted) if self.aggregator is not None else []

    def signed_roster(self) -> tuple[bytes, bytes]:
        """The roster and the server's signature of it, as every request that needs it carries
        them (key adverts; training and the aggregate: the roster fixes each client's weight)."""
        return signed_roster(self.keys.roster, self.keys.identity.key)

    def keys_request(self, last_applied: int = 0) -> KeysRequest:
        return KeysRequest(self.number, self.session, *self.signed_roster(), last_applied)

    def collect_adverts(self, adverts: Iterable[KeyAdvert]) -> list[KeyAdvert]:
        """U1, the adverts that verify against the roster (MaskingFailed if too few)."""
        return self.masking.collect_adverts(adverts)  # type: ignore[union-attr]

    def collect_shares(self, shares: dict[str, dict[str, bytes]]) -> set[str]:
        """U2, the clients whose shares arrived for all of U1 (MaskingFailed if too few)."""
        return self.masking.collect_shares(shares)  # type: ignore[union-attr]

    def add(self, payload: bytes) -> tuple[str | None, str | None]:
        """Validate and add one update: (the client it authenticates as, None) when accepted,
        (None, why) when rejected. An accepted ledger head is remembered."""
        assert self.aggregator is not None
        reason = submit(self.aggregator, payload)
        if reason is not None:
            return None, reason
        client = self.aggregator.accepted[-1]
        head = self.aggregator.accepted_heads.get(client)
        if head is not None:
            self.heads[client] = (self.number, head)
        return client, None

    def accepted_head(self, client: str) -> LedgerHead | None:
        return self.aggregator.accepted_heads.get(client) if self.aggregator else None

    def survivor_signatures(self, signatures: Mapping[str, bytes]) -> dict[str, bytes]:
        """The present clients' valid signatures of the survivor set (the accepted updates),
        which every revealer checks (MaskingFailed with fewer than t)."""
        assert self.masking is not None
        return self.masking.survivor_signatures(signatures, present=self.accepted)

    def unmask(self, reveals: Iterable[Reveal]) -> list[np.ndarray]:
        """What to subtract from the sum, from the survivors' reveals (MaskingFailed if too
        few, or if they do not combine)."""
        assert self.masking is not None and self.aggregator is not None
        chunks, count, modulus = self.keys.codec.mask_shape(self.aggregator.n_values)
        try:
            return self.masking.unmasking_offsets(
                reveals, present=self.accepted, chunks=chunks, count=count, modulus=modulus
            )
        except (MaskingFailed, CryptoError) as exc:
            raise MaskingFailed(f"unmasking failed: {exc}") from None

    def result(self, offsets: Sequence[np.ndarray] | None) -> bytes:
        """The signed aggregate (the sum of the accepted updates, masks removed)."""
        assert self.aggregator is not None
        return self.aggregator.result(offsets)
