"""The signed message envelope shared by both codecs, and every wire name in one place.

Layout (integers little-endian)::

    magic "SFSA" | wire version u16 | header length u32 | header (UTF-8 JSON)
    | chunk 0 | chunk 1 | ... | SHA-256 of everything before it (32 bytes)
    | Ed25519 signature of that digest (64 bytes)

The header names the protocol version, message kind, key fingerprint (or ``"plaintext"``),
manifest hash, round, the run's session, client id (``"server"`` on aggregates), encrypted flag,
number of values, number and byte size of each chunk, the number of contributing clients, on an
aggregate the ids of those clients (``null`` on an update), and on an update of a DP federation
the head of the client's privacy ledger (entries and the hash of the entry that paid for the
update; ``null`` otherwise): the server keeps the last head it accepted from each client and
refuses one that goes back (a client whose ledger was rolled back). The chunks hold
``weight * values`` only: each client's weight is fixed in the signed roster, and every client
divides the aggregate by the roster weights of the contributors the aggregate names (wire
version 3, protocol 4; version 2 carried the weight in an extra encrypted slot and named no
contributors, and is refused with a message saying so).
The digest catches corruption in transit; the signature (by the client named in the header, or by
the server for an aggregate; :mod:`secure_fedsa.crypto.signing`) authenticates the header and
every ciphertext byte, so a message altered in any way, relabelled with another client, round,
manifest or session, or replayed from another run is rejected.

:func:`unpack` is strict: exact field set and types, sizes checked against limits and against
the message length before anything is sliced, and any problem is ``UpdateRejected("malformed
...")`` and nothing else. It does not verify the signature: :func:`verify_sender` does, with the
key the receiver expects for the sender the header names.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from secure_fedsa.crypto.codec import ChunkMask, ClientCodec
from secure_fedsa.crypto.signing import SIGNATURE_BYTES, SigningKey, verify
from secure_fedsa.errors import ConfigError, UpdateRejected

MAGIC = b"SFSA"
# 3: no weight slot (weights are fixed in the signed roster); 2 carried it encrypted
WIRE_VERSION = 3
# 4: aggregates name their contributors (F_CONTRIBUTOR_IDS)
PROTOCOL_VERSION = 4
PLAINTEXT_FINGERPRINT = "plaintext"
SERVER_ID = "server"
KIND_UPDATE = "update"
KIND_AGGREGATE = "aggregate"

# header field names
F_PROTOCOL = "protocol"
F_KIND = "kind"
F_FINGERPRINT = "fingerprint"
F_MANIFEST = "manifest_hash"
F_ROUND = "round"
F_SESSION = "session"
F_CLIENT = "client_id"
F_ENCRYPTED = "encrypted"
F_N_VALUES = "n_values"
F_N_CHUNKS = "n_chunks"
F_CHUNK_BYTES = "chunk_bytes"
F_CONTRIBUTORS = "contributors"
F_CONTRIBUTOR_IDS = "contributor_ids"
F_LEDGER = "ledger"
LEDGER_FIELDS = frozenset({"entries", "head"})
HEADER_FIELDS = frozenset(
    {
        F_PROTOCOL,
        F_KIND,
        F_FINGERPRINT,
        F_MANIFEST,
        F_ROUND,
        F_SESSION,
        F_CLIENT,
        F_ENCRYPTED,
        F_N_VALUES,
        F_N_CHUNKS,
        F_CHUNK_BYTES,
        F_CONTRIBUTORS,
        F_CONTRIBUTOR_IDS,
        F_LEDGER,
    }
)

# limits, checked before anything is allocated
MAX_HEADER_BYTES = 1 << 23
MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 24
MAX_N_VALUES = 1 << 32
MAX_ROUND = (1 << 31) - 1
MAX_CONTRIBUTORS = 1 << 20

_PREFIX = struct.Struct("<4sHI")
DIGEST_BYTES = 32
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MANIFEST_PATTERN = re.compile(r"[0-9a-f]{8,128}")
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")
SESSION_PATTERN = re.compile(r"[0-9a-f]{32}")
HEAD_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_LEDGER_ENTRIES = 1 << 31


@dataclass(frozen=True)
class LedgerHead:
    """The privacy ledger entry that paid for an update: its position (1 = first) and hash."""

    entries: int
    head: str

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "head": self.head}


@dataclass(frozen=True)
class Message:
    kind: str
    fingerprint: str
    manifest_hash: str
    round: int
    session: str  # the run's random id: a message of another run is a replay
    client_id: str
    encrypted: bool
    n_values: int
    contributors: int
    chunks: tuple[bytes, ...]
    ledger: LedgerHead | None = None  # on updates of a DP federation
    # on aggregates: the clients whose updates were added (sorted; None on updates)
    contributor_ids: tuple[str, ...] | None = None
    digest: bytes = b""  # set by unpack: SHA-256 of header and chunks
    signature: bytes = b""  # set by unpack: the sender's signature of the digest


# -- packing ------------------------------------------------------------------------------------
def pack(message: Message, key: SigningKey) -> bytes:
    """Serialize and sign a message (fields are checked the same way :func:`unpack` checks
    them). ``key`` is the sender's: the client named in the header, or the server."""
    if key.owner != message.client_id:
        raise ConfigError(f"{key.owner} cannot sign a message from {message.client_id}")
    header = {
        F_PROTOCOL: PROTOCOL_VERSION,
        F_KIND: message.kind,
        F_FINGERPRINT: message.fingerprint,
        F_MANIFEST: message.manifest_hash,
        F_ROUND: message.round,
        F_SESSION: message.session,
        F_CLIENT: message.client_id,
        F_ENCRYPTED: message.encrypted,
        F_N_VALUES: message.n_values,
        F_N_CHUNKS: len(message.chunks),
        F_CHUNK_BYTES: [len(c) for c in message.chunks],
        F_CONTRIBUTORS: message.contributors,
        F_CONTRIBUTOR_IDS: (
            None if message.contributor_ids is None else list(message.contributor_ids)
        ),
        F_LEDGER: None if message.ledger is None else message.ledger.to_json(),
    }
    problem = _header_problem(header)
    if problem:
        raise ConfigError(f"cannot send this message: {problem}")
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    body = b"".join([_PREFIX.pack(MAGIC, WIRE_VERSION, len(text)), text, *message.chunks])
    digest = hashlib.sha256(body).digest()
    return body + digest + key.sign(message.kind, digest)


def unpack(data: bytes) -> Message:
    """Parse a message strictly; raises ``UpdateRejected("malformed ...")`` on anything odd."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UpdateRejected("malformed message: not bytes")
    view = memoryview(data).cast("B")
    if len(view) < _PREFIX.size + DIGEST_BYTES + SIGNATURE_BYTES:
        raise UpdateRejected("malformed message: too short")
    magic, version, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise UpdateRejected("malformed message: not a secure_fedsa message")
    if version != WIRE_VERSION:
        raise UpdateRejected(
            f"malformed message: wire version {version}, but this secure_fedsa reads only "
            f"version {WIRE_VERSION}{_OLDER if version < WIRE_VERSION else ''}: the sender runs "
            "another release; the server and every site must run the same one"
        )
    digest_end = len(view) - SIGNATURE_BYTES
    body_end = digest_end - DIGEST_BYTES
    header_end = _PREFIX.size + header_len
    if header_len > MAX_HEADER_BYTES or header_end > body_end:
        raise UpdateRejected("malformed message: header length out of range")
    digest = hashlib.sha256(view[:body_end]).digest()
    if digest != view[body_end:digest_end]:
        raise UpdateRejected("malformed message: checksum mismatch (corrupted in transit)")
    header = _parse_header(view[_PREFIX.size : header_end])
    problem = _header_problem(header)
    if problem:
        raise UpdateRejected(f"malformed message: {problem}")
    sizes = header[F_CHUNK_BYTES]
    if header_end + sum(sizes) != body_end:
        raise UpdateRejected("malformed message: chunk sizes do not add up to the message length")
    chunks, offset = [], header_end
    for size in sizes:
        chunks.append(bytes(view[offset : offset + size]))
        offset += size
    return Message(
        kind=header[F_KIND],
        fingerprint=header[F_FINGERPRINT],
        manifest_hash=header[F_MANIFEST],
        round=header[F_ROUND],
        session=header[F_SESSION],
        client_id=header[F_CLIENT],
        encrypted=header[F_ENCRYPTED],
        n_values=header[F_N_VALUES],
        contributors=header[F_CONTRIBUTORS],
        chunks=tuple(chunks),
        ledger=None if header[F_LEDGER] is None else LedgerHead(**header[F_LEDGER]),
        contributor_ids=(
            None if header[F_CONTRIBUTOR_IDS] is None else tuple(header[F_CONTRIBUTOR_IDS])
        ),
        digest=digest,
        signature=bytes(view[digest_end:]),
    )


_OLDER = (
    " (an older release, which sent each weight in an encrypted slot: weights are now fixed in "
    "the signed roster, made with `secure-fedsa keys init --client-sizes`)"
)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _reject_number(text: str) -> Any:
    raise ValueError("non-integer number")


def _parse_header(raw: memoryview) -> Any:
    try:
        return json.loads(
            bytes(raw).decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_float=_reject_number,
            parse_constant=_reject_number,
        )
    except (ValueError, RecursionError, TypeError):
        raise UpdateRejected("malformed message: header is not valid JSON") from None


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _header_problem(h: Any) -> str | None:
    """What is wrong with a header (structure and ranges only), or None."""
    if not isinstance(h, dict) or set(h) != HEADER_FIELDS:
        return "unexpected or missing header fields"
    if h[F_PROTOCOL] != PROTOCOL_VERSION or type(h[F_PROTOCOL]) is not int:
        return (
            f"unsupported protocol version {json.dumps(h[F_PROTOCOL])[:16]} (this release speaks "
            f"{PROTOCOL_VERSION}: the sender runs another release)"
        )
    if h[F_KIND] not in (KIND_UPDATE, KIND_AGGREGATE):
        return "unknown message kind"
    if type(h[F_ENCRYPTED]) is not bool:
        return "encrypted flag must be a boolean"
    fingerprint = h[F_FINGERPRINT]
    if h[F_ENCRYPTED] != (fingerprint != PLAINTEXT_FINGERPRINT) or not (
        fingerprint == PLAINTEXT_FINGERPRINT or _matches(FINGERPRINT_PATTERN, fingerprint)
    ):
        return "fingerprint and encrypted flag disagree or fingerprint is malformed"
    if not _matches(MANIFEST_PATTERN, h[F_MANIFEST]):
        return "manifest hash must be 8-128 lowercase hex characters"
    if not _is_int(h[F_ROUND], 0, MAX_ROUND):
        return "round out of range"
    if not _matches(SESSION_PATTERN, h[F_SESSION]):
        return "session must be 32 lowercase hex characters"
    if not _matches(CLIENT_ID_PATTERN, h[F_CLIENT]):
        return "client id must be 1-128 characters from A-Z a-z 0-9 . _ : @ -"
    if not _is_int(h[F_N_VALUES], 0, MAX_N_VALUES):
        return "n_values out of range"
    if not _is_int(h[F_N_CHUNKS], 1, MAX_CHUNKS):
        return "number of chunks out of range"
    sizes = h[F_CHUNK_BYTES]
    if not isinstance(sizes, list) or len(sizes) != h[F_N_CHUNKS]:
        return "chunk_bytes must list one size per chunk"
    if not all(_is_int(s, 1, MAX_CHUNK_BYTES) for s in sizes):
        return "chunk size out of range"
    if not _is_int(h[F_CONTRIBUTORS], 1, MAX_CONTRIBUTORS):
        return "contributors out of range"
    is_server = h[F_CLIENT] == SERVER_ID
    if h[F_KIND] == KIND_UPDATE and (is_server or h[F_CONTRIBUTORS] != 1):
        return "an update comes from one client, never from the server"
    if h[F_KIND] == KIND_AGGREGATE and not is_server:
        return "an aggregate comes from the server"
    problem = _contributor_ids_problem(h)
    if problem:
        return problem
    ledger = h[F_LEDGER]
    if ledger is not None:
        if h[F_KIND] != KIND_UPDATE:
            return "only an update carries a ledger head"
        if not isinstance(ledger, dict) or set(ledger) != LEDGER_FIELDS:
            return "ledger must be null or have exactly entries and head"
        if not _is_int(ledger["entries"], 1, MAX_LEDGER_ENTRIES):
            return "ledger entries out of range"
        if not _matches(HEAD_PATTERN, ledger["head"]):
            return "ledger head must be 64 lowercase hex characters"
    return None


def _contributor_ids_problem(h: dict[str, Any]) -> str | None:
    """An aggregate names its contributors: distinct client ids, as many as it counts; an
    update names none (its sender is its client id)."""
    ids = h[F_CONTRIBUTOR_IDS]
    if h[F_KIND] == KIND_UPDATE:
        return None if ids is None else "an update names no contributors"
    if not isinstance(ids, list) or not all(
        _matches(CLIENT_ID_PATTERN, c) and c != SERVER_ID for c in ids
    ):
        return "contributor_ids must list client ids"
    if len(set(ids)) != len(ids):
        return "contributor_ids names a client twice"
    if len(ids) != h[F_CONTRIBUTORS]:
        return "contributor_ids does not name as many clients as contributors counts"
    return None


# -- checks shared by the server and the clients --------------------------------------------
def check_message(
    message: Message,
    *,
    kind: str,
    fingerprint: str,
    encrypted: bool,
    manifest_hash: str,
    round: int,
    session: str,
    n_values: int,
    chunk_sizes: Sequence[int],
) -> None:
    """Raise UpdateRejected(reason) unless the message belongs where it arrived (its signature
    is checked separately, by :func:`verify_sender`)."""
    if message.kind != kind:
        raise UpdateRejected(f"expected an {kind} message, got {message.kind}")
    if message.encrypted != encrypted:
        raise UpdateRejected(
            "plaintext message sent to an encrypted federation"
            if encrypted
            else "encrypted message sent to a plaintext federation"
        )
    if message.fingerprint != fingerprint:
        raise UpdateRejected("wrong key fingerprint: made with a different key set")
    if message.manifest_hash != manifest_hash:
        raise UpdateRejected("manifest hash mismatch: built for different shared tensors")
    if message.round != round:
        raise UpdateRejected(f"wrong round: message is for round {message.round}, not {round}")
    if message.session != session:
        raise UpdateRejected("wrong session: a message of another run (a replay)")
    if message.n_values != n_values:
        raise UpdateRejected(f"wrong number of values: {message.n_values}, expected {n_values}")
    if len(message.chunks) != len(chunk_sizes):
        raise UpdateRejected(
            f"wrong number of chunks: {len(message.chunks)}, expected {len(chunk_sizes)}"
        )
    if [len(c) for c in message.chunks] != list(chunk_sizes):
        raise UpdateRejected("wrong chunk sizes for these parameters")


def verify_sender(message: Message, public_key: bytes | None) -> None:
    """Raise UpdateRejected unless ``message`` carries a valid signature by ``public_key``
    (the key the receiver holds for the sender the header names; None: an unknown sender)."""
    if public_key is None:
        raise UpdateRejected(f"unknown sender {message.client_id!r}: not in the roster")
    if not verify(public_key, message.signature, message.kind, message.digest):
        raise UpdateRejected(
            f"bad signature: the message was altered or not signed by {message.client_id}"
        )


# -- client helpers -----------------------------------------------------------------------------
def encode_update(
    codec: ClientCodec,
    values: np.ndarray,
    weight: float,
    *,
    manifest_hash: str,
    round: int,
    session: str,
    key: SigningKey,
    mask: ChunkMask | None = None,
    ledger: LedgerHead | None = None,
) -> bytes:
    """The bytes a client sends: ``weight * values`` (``weight``: the client's weight in the
    signed roster, which is not sent), encoded by ``codec`` (with
    secure aggregation's ``mask`` added to the ciphertexts, if given), with the head of the
    privacy ``ledger`` entry that paid for it (DP federations), signed with the client's ``key``
    (whose owner is the client id in the header)."""
    chunks = codec.encrypt(values, weight) if mask is None else codec.encrypt(values, weight, mask)
    return pack(
        Message(
            kind=KIND_UPDATE,
            fingerprint=codec.fingerprint,
            manifest_hash=manifest_hash,
            round=round,
            session=session,
            client_id=key.owner,
            encrypted=codec.encrypted,
            n_values=int(np.asarray(values).shape[0]),
            contributors=1,
            chunks=tuple(chunks),
            ledger=ledger,
        ),
        key,
    )


@dataclass(frozen=True)
class Aggregate:
    """A decrypted aggregate: the weighted sum and the clients the server says it added (their
    number and ids, both signed by the server). The divisor is the sum of the contributors'
    roster weights (:mod:`secure_fedsa.site.aggregate_check`)."""

    total: np.ndarray
    contributors: int
    contributor_ids: tuple[str, ...]


def decode_aggregate(
    codec: ClientCodec,
    data: bytes,
    *,
    manifest_hash: str,
    round: int,
    session: str,
    n_values: int,
    server_key: bytes,
) -> Aggregate:
    """Verify the server's signed aggregate message and decrypt it.

    Raises UpdateRejected if the message is malformed, not signed by the server, or belongs to
    another key set, manifest, round, session or size. Whether its values are plausible is the
    caller's check (:mod:`secure_fedsa.site.aggregate_check`). The decrypted values must never be
    sent back to the server (rule P6).
    """
    message = unpack(data)
    if message.client_id != SERVER_ID:
        raise UpdateRejected("an aggregate comes from the server")
    verify_sender(message, server_key)
    check_message(
        message,
        kind=KIND_AGGREGATE,
        fingerprint=codec.fingerprint,
        encrypted=codec.encrypted,
        manifest_hash=manifest_hash,
        round=round,
        session=session,
        n_values=n_values,
        chunk_sizes=codec.aggregate_chunk_sizes(n_values),
    )
    total = codec.decrypt_sum(message.chunks, n_values)
    return Aggregate(np.asarray(total), message.contributors, tuple(message.contributor_ids or ()))
