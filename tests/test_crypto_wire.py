"""The message envelope: round trips, and strict parsing that only ever raises UpdateRejected."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from secure_fedsa.crypto import wire
from secure_fedsa.crypto.plaintext import PlaintextCodec
from secure_fedsa.crypto.signing import SigningKey
from secure_fedsa.errors import ConfigError, UpdateRejected

pytestmark = pytest.mark.unit

FP = "f" * 64
MANIFEST = "0123abcd" * 8
SESSION = "5a" * 16
KEYS = {name: SigningKey.generate(name) for name in ("client-1", wire.SERVER_ID, "a")}


def pack(m: wire.Message) -> bytes:
    """Packed and signed by the sender the header names."""
    return wire.pack(m, KEYS[m.client_id])


def same(a: wire.Message, b: wire.Message) -> bool:
    """Equal content (the digest and signature only exist after unpacking)."""
    strip = {"digest": b"", "signature": b""}
    return {**a.__dict__, **strip} == {**b.__dict__, **strip}


def message(**overrides) -> wire.Message:
    fields = dict(
        kind=wire.KIND_UPDATE,
        fingerprint=FP,
        manifest_hash=MANIFEST,
        round=3,
        session=SESSION,
        client_id="client-1",
        encrypted=True,
        n_values=7,
        contributors=1,
        chunks=(b"abc", b"defgh"),
    )
    fields.update(overrides)
    return wire.Message(**fields)


def header_of(m: wire.Message) -> dict:
    return {
        wire.F_PROTOCOL: wire.PROTOCOL_VERSION,
        wire.F_KIND: m.kind,
        wire.F_FINGERPRINT: m.fingerprint,
        wire.F_MANIFEST: m.manifest_hash,
        wire.F_ROUND: m.round,
        wire.F_SESSION: m.session,
        wire.F_CLIENT: m.client_id,
        wire.F_ENCRYPTED: m.encrypted,
        wire.F_N_VALUES: m.n_values,
        wire.F_N_CHUNKS: len(m.chunks),
        wire.F_CHUNK_BYTES: [len(c) for c in m.chunks],
        wire.F_CONTRIBUTORS: m.contributors,
        wire.F_CONTRIBUTOR_IDS: None if m.contributor_ids is None else list(m.contributor_ids),
        wire.F_LEDGER: None if m.ledger is None else m.ledger.to_json(),
    }


def forge(header_text: bytes, chunks=(b"abc", b"defgh"), *, version=wire.WIRE_VERSION) -> bytes:
    """A message with any header text, a correct checksum and a signature slot (what an
    attacker can send; the parser never gets as far as the signature check)."""
    body = struct.pack("<4sHI", wire.MAGIC, version, len(header_text)) + header_text
    body += b"".join(chunks)
    return body + hashlib.sha256(body).digest() + b"\0" * wire.SIGNATURE_BYTES


def forge_fields(**changes) -> bytes:
    header = header_of(message())
    header.update(changes)
    return forge(json.dumps(header).encode())


def forge_text(old: bytes, new: bytes) -> bytes:
    text = json.dumps(header_of(message())).encode()
    assert old in text
    return forge(text.replace(old, new))


def test_round_trip():
    m = message()
    back = wire.unpack(pack(m))
    assert same(back, m) and len(back.digest) == 32
    wire.verify_sender(back, KEYS["client-1"].public_bytes)
    aggregate = message(kind=wire.KIND_AGGREGATE, client_id=wire.SERVER_ID, contributors=3,
                        contributor_ids=("a", "b", "client-1"))  # fmt: skip
    assert same(wire.unpack(pack(aggregate)), aggregate)
    charged = message(ledger=wire.LedgerHead(3, "ab" * 32))  # an update of a DP federation
    assert same(wire.unpack(pack(charged)), charged)


def test_signatures_bind_sender_and_content():
    back = wire.unpack(pack(message()))
    with pytest.raises(UpdateRejected, match="bad signature"):
        wire.verify_sender(back, KEYS["a"].public_bytes)  # another sender's key
    with pytest.raises(UpdateRejected, match="unknown sender"):
        wire.verify_sender(back, None)
    with pytest.raises(ConfigError, match="cannot sign"):
        wire.pack(message(), KEYS["a"])  # a key signs only its owner's messages


def test_forge_helper_builds_valid_messages():
    assert same(wire.unpack(forge_fields()), message())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SFSA",
        b"\0" * 100,
        pack(message())[:-1],
        pack(message()) + b"\0",
        b"XXXX" + pack(message())[4:],
        forge(b"{}", version=1),
        forge(b"not json"),
        forge(b"\xff\xfe"),
        forge(b"[" * 100_000 + b"]" * 100_000),
        forge(b'{"a": 1, "a": 2}'),
        forge_text(b'"round": 3', b'"round": 3, "round": 3'),
        forge_text(b'"round": 3', b'"round": 3.0'),
        forge_text(b'"round": 3', b'"round": NaN'),
        forge_text(b'"round": 3', b'"round": 1' + b"0" * 5000),
        forge_fields(extra=1),
        forge_fields(round=True),
        forge_fields(round=-1),
        forge_fields(round=2**40),
        forge_fields(protocol=1),
        forge_fields(session="ab"),
        forge_fields(session="AB" * 16),
        forge_fields(kind="other"),
        forge_fields(encrypted=1),
        forge_fields(encrypted=False),  # disagrees with a key fingerprint
        forge_fields(fingerprint="plaintext"),  # disagrees with encrypted=True
        forge_fields(fingerprint="F" * 64),
        forge_fields(manifest_hash="xyz"),
        forge_fields(manifest_hash=MANIFEST.upper()),
        forge_fields(client_id=""),
        forge_fields(client_id="a b"),
        forge_fields(client_id="x" * 200),
        forge_fields(client_id="client\n1"),
        forge_fields(client_id=wire.SERVER_ID),  # an update from the server
        forge_fields(kind=wire.KIND_AGGREGATE),  # an aggregate from a client
        forge_fields(contributors=2),
        forge_fields(n_values=-1),
        forge_fields(n_chunks=3),
        forge_fields(n_chunks=0, chunk_bytes=[]),
        forge_fields(chunk_bytes=[3, 4]),
        forge_fields(chunk_bytes=[3, "5"]),
        forge_fields(chunk_bytes=[0, 8]),
        forge_fields(chunk_bytes=[2**40, 8]),
        forge_fields(ledger={"entries": 1}),
        forge_fields(ledger={"entries": 0, "head": "ab" * 32}),
        forge_fields(ledger={"entries": True, "head": "ab" * 32}),
        forge_fields(ledger={"entries": 1, "head": "AB" * 32}),
        forge_fields(ledger={"entries": 1, "head": "ab" * 32, "epsilon": 1}),
        forge_fields(ledger=[1, "ab" * 32]),
        forge_fields(
            kind=wire.KIND_AGGREGATE,
            client_id=wire.SERVER_ID,
            contributor_ids=["client-1"],
            ledger={"entries": 1, "head": "ab" * 32},
        ),  # an aggregate carries no ledger head
        forge_fields(contributor_ids=["client-1"]),  # an update names no contributors
        *(
            forge_fields(kind=wire.KIND_AGGREGATE, client_id=wire.SERVER_ID, **bad)
            for bad in (
                {"contributor_ids": None},  # an aggregate names its contributors
                {"contributor_ids": "client-1"},
                {"contributor_ids": []},
                {"contributor_ids": ["a", "a"], "contributors": 2},  # named twice
                {"contributor_ids": ["a", "b"]},  # counts 1, names 2
                {"contributor_ids": ["a"], "contributors": 2},
                {"contributor_ids": [wire.SERVER_ID]},
                {"contributor_ids": ["a b"]},
                {"contributor_ids": [1]},
            )
        ),
    ],
)
def test_malformed_messages_are_rejected(data):
    with pytest.raises(UpdateRejected, match="malformed"):
        wire.unpack(data)


def test_messages_of_the_previous_release_are_refused_with_a_clear_reason():
    """Wire version 2 carried the weight in an encrypted slot and protocol 3 named no
    contributors: a message of either is refused, saying the releases differ."""
    assert (wire.WIRE_VERSION, wire.PROTOCOL_VERSION) == (3, 4)
    header = header_of(message())
    with pytest.raises(UpdateRejected, match="wire version 4, .*same one"):
        wire.unpack(forge(json.dumps(header).encode(), version=4))
    del header[wire.F_CONTRIBUTOR_IDS]
    with pytest.raises(UpdateRejected, match=r"wire version 2, .*older release.*keys init"):
        wire.unpack(forge(json.dumps(header).encode(), version=2))
    header[wire.F_CONTRIBUTOR_IDS] = None
    header[wire.F_PROTOCOL] = 3
    with pytest.raises(UpdateRejected, match="unsupported protocol version 3 .*speaks 4"):
        wire.unpack(forge(json.dumps(header).encode()))


def test_header_length_is_checked_before_allocating():
    data = struct.pack("<4sHI", wire.MAGIC, wire.WIRE_VERSION, 2**32 - 1) + b"\0" * 120
    with pytest.raises(UpdateRejected, match="header length"):
        wire.unpack(data)


def test_non_bytes_input_is_rejected():
    for data in (None, "text", 12, [1, 2]):
        with pytest.raises(UpdateRejected, match="malformed"):
            wire.unpack(data)  # type: ignore[arg-type]


def test_memoryview_and_bytearray_are_accepted():
    data = pack(message())
    assert wire.unpack(bytearray(data)) == wire.unpack(memoryview(data))
    assert same(wire.unpack(data), message())


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "bad id"},
        {"manifest_hash": "nothex!"},
        {"round": -1},
        {"chunks": ()},
        {"fingerprint": "plaintext"},
        {"session": "short"},
    ],
)
def test_pack_refuses_bad_fields(overrides):
    with pytest.raises(ConfigError):
        wire.pack(message(**overrides), KEYS["client-1"])


def test_decode_aggregate_checks_the_header():
    codec = PlaintextCodec()
    update = wire.encode_update(
        codec, np.arange(3.0), 2.0, manifest_hash=MANIFEST, round=1, session=SESSION, key=KEYS["a"]
    )
    assert [len(c) for c in wire.unpack(update).chunks] == [3 * 8]  # no weight slot
    aggregate = pack(
        message(
            kind=wire.KIND_AGGREGATE,
            client_id=wire.SERVER_ID,
            fingerprint=wire.PLAINTEXT_FINGERPRINT,
            encrypted=False,
            round=1,
            n_values=3,
            contributor_ids=("a",),
            chunks=tuple(codec.encrypt(np.arange(3.0), 2.0)),
        )
    )
    server = KEYS[wire.SERVER_ID].public_bytes
    args = dict(manifest_hash=MANIFEST, round=1, session=SESSION, n_values=3, server_key=server)
    result = wire.decode_aggregate(codec, aggregate, **args)
    assert np.allclose(result.total, 2.0 * np.arange(3.0))  # the weighted sum, nothing more
    assert result.contributors == 1 and result.contributor_ids == ("a",)
    with pytest.raises(UpdateRejected, match="aggregate comes from the server"):
        wire.decode_aggregate(codec, update, **args)
    for wrong, match in [
        ({"round": 2}, "round"),
        ({"manifest_hash": "9" * 16}, "manifest"),
        ({"n_values": 4}, "values"),
        ({"session": "6b" * 16}, "another run"),
        ({"server_key": KEYS["a"].public_bytes}, "bad signature"),
    ]:
        with pytest.raises(UpdateRejected, match=match):
            wire.decode_aggregate(codec, aggregate, **{**args, **wrong})
