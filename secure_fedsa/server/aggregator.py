"""The aggregation server: validate each update completely, then add it. Never decrypts.

:class:`Aggregator` serves one round. ``add`` checks an update before touching the running sum:
envelope, the sender's signature (against the roster: an unknown or revoked client, a relabelled
id, or any altered byte fails), key fingerprint, manifest hash, round, session (a replay from
another run fails), duplicate client, client limit, encrypted flag, number and size of chunks,
and every chunk's ciphertext parameters; in a DP federation also the head of the client's privacy
ledger, which must move forward from the last head this server accepted from that client (a client
whose ledger was rolled back to an older copy, or rewritten, is refused). A rejected update leaves
the sum exactly as it was and is recorded in ``rejections``. Updates are added as they arrive, so
memory does not grow with the number of clients. The aggregate is signed with the server's identity
and names the clients whose updates it holds: every client divides it by their roster weights.

This module imports no decryption code: it works with any ``ServerCodec`` (``CKKSServerCodec``
from ``server.keys``, or ``PlaintextCodec``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from secure_fedsa.crypto import wire
from secure_fedsa.crypto.codec import ServerCodec
from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.errors import ConfigError, UpdateRejected

logger = logging.getLogger(__name__)


# client id -> (round, ledger head) of the last update this server accepted from it
LedgerHeads = Mapping[str, tuple[int, wire.LedgerHead]]


def ledger_head_problem(
    previous: tuple[int, wire.LedgerHead] | None, round: int, head: wire.LedgerHead
) -> str | None:
    """Why an update of ``round`` paid for by ledger ``head`` cannot follow ``previous``, the
    last accepted head of the same client (pure; None when it can). Each new round is paid for
    by a new ledger entry; the same round resent after a restart carries the same head."""
    if previous is None:
        return None
    last_round, last = previous
    if head.entries < last.entries:
        return (
            f"ledger rolled back: the update is paid for by ledger entry {head.entries}, but "
            f"entry {last.entries} paid for this client's update of round {last_round}"
        )
    if head.entries == last.entries and head.head != last.head:
        return f"ledger rewritten: entry {head.entries} is not the one this server accepted"
    if head.entries == last.entries and round != last_round:
        return f"no new ledger entry: round {round} is paid for by the entry of round {last_round}"
    if head.entries > last.entries and round <= last_round:
        return f"round {round} does not follow round {last_round}, already accepted"
    return None


class Aggregator:
    """Sums the validated updates of one round for one manifest and key set."""

    def __init__(
        self,
        codec: ServerCodec,
        *,
        manifest_hash: str,
        round: int,
        n_values: int,
        session: str,
        roster: Roster,
        key: SigningKey,
        require_ledger: bool = False,
        ledger_heads: LedgerHeads | None = None,
    ) -> None:
        if not isinstance(manifest_hash, str) or not wire.MANIFEST_PATTERN.fullmatch(manifest_hash):
            raise ConfigError("manifest_hash must be 8-128 lowercase hex characters")
        if type(round) is not int or not 0 <= round <= wire.MAX_ROUND:
            raise ConfigError(f"round must be an integer in 0..{wire.MAX_ROUND}")
        if type(n_values) is not int or not 0 <= n_values <= wire.MAX_N_VALUES:
            raise ConfigError(f"n_values must be an integer in 0..{wire.MAX_N_VALUES}")
        if not isinstance(session, str) or not wire.SESSION_PATTERN.fullmatch(session):
            raise ConfigError("session must be 32 lowercase hex characters")
        if key.owner != wire.SERVER_ID or key.public_bytes != roster.server:
            raise ConfigError("the aggregator needs the server's identity from this roster")
        self.session = session
        self.roster = roster
        self._key = key
        self.codec = codec
        self.manifest_hash = manifest_hash
        self.round = round
        self.n_values = n_values
        self.require_ledger = require_ledger
        self._previous_heads = dict(ledger_heads or {})
        self.accepted_heads: dict[str, wire.LedgerHead] = {}
        self.accepted: list[str] = []
        self.rejections: list[tuple[str | None, str]] = []
        self._counted: set[str] = set()
        self._chunk_sizes = codec.update_chunk_sizes(n_values)
        self._sum = codec.new_accumulator(n_values)

    def add(self, data: bytes) -> str:
        """Validate one update and add it; returns its client id or raises UpdateRejected."""
        client_id: str | None = None
        try:
            message = wire.unpack(data)
            wire.verify_sender(message, self.roster.key_of(message.client_id))
            client_id = message.client_id  # authenticated from here on
            self._check(message)
            validated = [self.codec.validate_chunk(chunk) for chunk in message.chunks]
            self._sum.add(validated)
        except UpdateRejected as exc:
            self._reject(client_id, exc.reason)
            raise
        except Exception as exc:  # never let a hostile update raise anything else
            reason = f"internal error while validating the update ({type(exc).__name__})"
            self._reject(client_id, reason)
            raise UpdateRejected(reason) from None
        self.accepted.append(client_id)
        self._counted.add(client_id)
        if message.ledger is not None:
            self.accepted_heads[client_id] = message.ledger
        logger.info("round %d: accepted update from %s", self.round, client_id)
        return client_id

    def _check(self, message: wire.Message) -> None:
        wire.check_message(
            message,
            kind=wire.KIND_UPDATE,
            fingerprint=self.codec.fingerprint,
            encrypted=self.codec.encrypted,
            manifest_hash=self.manifest_hash,
            round=self.round,
            session=self.session,
            n_values=self.n_values,
            chunk_sizes=self._chunk_sizes,
        )
        if message.client_id in self._counted:
            raise UpdateRejected(f"duplicate: {message.client_id} already counted this round")
        if self.require_ledger and message.ledger is None:
            raise UpdateRejected(
                "no ledger head: in a DP federation every update names the privacy ledger "
                "entry that paid for it"
            )
        if not self.require_ledger and message.ledger is not None:
            raise UpdateRejected("a ledger head in a federation without DP")
        if message.ledger is not None:
            problem = ledger_head_problem(
                self._previous_heads.get(message.client_id), self.round, message.ledger
            )
            if problem:
                raise UpdateRejected(problem)
        limit = self.codec.max_clients
        if limit is not None and len(self.accepted) >= limit:
            raise UpdateRejected(
                f"too many updates: the keys allow at most {limit} per round (more could "
                "overflow CKKS silently)"
            )

    def _reject(self, client_id: str | None, reason: str) -> None:
        self.rejections.append((client_id, reason))
        logger.warning("round %d: rejected update from %s: %s", self.round, client_id, reason)

    def result(self, offsets: Sequence[np.ndarray] | None = None) -> bytes:
        """The aggregate message (sum of accepted updates) for every client to decrypt;
        ``offsets`` (one per ciphertext) are the masks secure aggregation removes from it."""
        if not self.accepted:
            raise UpdateRejected(
                f"no update was accepted in round {self.round} "
                f"({len(self.rejections)} rejected): there is no aggregate"
            )
        return wire.pack(
            wire.Message(
                kind=wire.KIND_AGGREGATE,
                fingerprint=self.codec.fingerprint,
                manifest_hash=self.manifest_hash,
                round=self.round,
                session=self.session,
                client_id=wire.SERVER_ID,
                encrypted=self.codec.encrypted,
                n_values=self.n_values,
                contributors=len(self.accepted),
                contributor_ids=tuple(sorted(self.accepted)),
                chunks=tuple(self._sum.result(offsets)),
            ),
            self._key,
        )
