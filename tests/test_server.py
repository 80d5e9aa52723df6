"""The aggregation server: every rejection path, authentication, fuzzing, and the
no-decryption boundary."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_fedsa.crypto import chunks as chunkfmt
from secure_fedsa.crypto import wire
from secure_fedsa.crypto.ckks_client import CKKSClientCodec
from secure_fedsa.crypto.ckks_server import CKKSServerCodec
from secure_fedsa.crypto.keys import create_key_bundles
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.crypto.plaintext import PlaintextCodec
from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.errors import ConfigError, UpdateRejected
from secure_fedsa.server.aggregator import Aggregator

pytestmark = pytest.mark.unit

MANIFEST = "5e" * 32
SESSION = "ab" * 16
SIGNERS = {f"client-{k}": SigningKey.generate(f"client-{k}") for k in range(10)}
SERVER = SigningKey.generate("server")
ROSTER = Roster({cid: k.public_bytes for cid, k in SIGNERS.items()}, SERVER.public_bytes)
N = 4100  # two ciphertexts: 4100 values + weight > 4096 floats
MAX_CLIENTS = 4
fuzz_settings = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Our key set, another key set with the same parameters, and one with other parameters."""
    made = {}
    for name, params in [
        ("ours", CKKSParams()),
        ("other", CKKSParams()),
        ("big", CKKSParams(8192, (60, 49), 40)),
    ]:
        client_path, server_path = create_key_bundles(
            tmp_path_factory.mktemp(name), params, max_clients=MAX_CLIENTS
        )
        made[name] = (
            CKKSClientCodec.from_bundle(client_path),
            CKKSServerCodec.from_bundle(server_path),
        )
    return made


def vec(k: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(k).normal(0, 1, size=n)


def update(
    codec, k, *, round=0, manifest=MANIFEST, n=N, client_id=None, weight=None, session=SESSION
):
    return wire.encode_update(
        codec,
        vec(k, n),
        weight if weight is not None else 1.0 + k,
        manifest_hash=manifest,
        round=round,
        session=session,
        key=SIGNERS[client_id or f"client-{k}"],
    )


def aggregator(keys, codec=None, **kwargs) -> Aggregator:
    args = dict(manifest_hash=MANIFEST, round=0, n_values=N, session=SESSION)
    args.update(roster=ROSTER, key=SERVER)
    args.update(kwargs)
    return Aggregator(codec or keys["ours"][1], **args)


def assert_average_of(agg: Aggregator, keys, accepted: list[int]) -> None:
    """The aggregate decrypts to the weighted average of exactly the accepted updates."""
    assert agg.accepted == [f"client-{k}" for k in accepted]
    result = wire.decode_aggregate(
        keys["ours"][0],
        agg.result(),
        manifest_hash=MANIFEST,
        round=agg.round,
        session=SESSION,
        n_values=N,
        server_key=SERVER.public_bytes,
    )
    weights = [1.0 + k for k in accepted]
    assert result.contributor_ids == tuple(sorted(agg.accepted))  # the divisor's names
    average = result.total / sum(weights)
    expected = sum(w * vec(k) for k, w in zip(accepted, weights, strict=True)) / sum(weights)
    assert np.max(np.abs(average - expected)) < 1e-7
    assert result.contributors == len(accepted)


def repack(data: bytes, key: SigningKey | None = None, **changes) -> bytes:
    """An update rebuilt with some fields or chunks changed, checksum recomputed and signed by
    ``key`` (default: its own sender, i.e. a key-holding client that sends a bad message)."""
    message = wire.unpack(data)
    fields = {**message.__dict__, **changes}
    del fields["digest"], fields["signature"]
    signer = key or SIGNERS.get(fields["client_id"]) or SERVER
    return wire.pack(wire.Message(**fields), signer)


def rejected(agg: Aggregator, data: bytes, match: str) -> None:
    before = (list(agg.accepted), len(agg.rejections))
    with pytest.raises(UpdateRejected, match=match):
        agg.add(data)
    assert (agg.accepted, len(agg.rejections)) == (before[0], before[1] + 1)
    assert not agg.rejections[-1][1].startswith("internal")


# -- every rejection path, each followed by the aggregate of accepted updates only --------------
def test_accepts_valid_updates(keys):
    agg = aggregator(keys)
    for k in range(3):
        assert agg.add(update(keys["ours"][0], k)) == f"client-{k}"
    assert agg.rejections == []
    assert_average_of(agg, keys, [0, 1, 2])
    message = wire.unpack(agg.result())
    assert (message.client_id, message.contributors, message.kind) == ("server", 3, "aggregate")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda keys: update(keys["other"][0], 5), "fingerprint"),
        (lambda keys: update(keys["big"][0], 5), "fingerprint"),
        (lambda keys: update(keys["ours"][0], 5, manifest="77" * 32), "manifest"),
        (lambda keys: update(keys["ours"][0], 5, round=1), "round"),
        (lambda keys: update(keys["ours"][0], 5, session="cd" * 16), "another run"),
        (lambda keys: update(keys["ours"][0], 5, n=N - 1), "number of values"),
        (lambda keys: update(PlaintextCodec(), 5), "plaintext message sent to an encrypted"),
        (lambda keys: update(keys["ours"][0], 5)[:-100], "malformed"),
        (lambda keys: update(keys["ours"][0], 5) + b"\0", "malformed"),
    ],
)
def test_rejections_leave_the_sum_unchanged(keys, make, match):
    agg = aggregator(keys)
    agg.add(update(keys["ours"][0], 0))
    rejected(agg, make(keys), match)
    agg.add(update(keys["ours"][0], 1))
    assert_average_of(agg, keys, [0, 1])


def test_duplicate_client_is_rejected(keys):
    agg = aggregator(keys)
    agg.add(update(keys["ours"][0], 0))
    # the same client id again, even with other values
    rejected(agg, update(keys["ours"][0], 3, client_id="client-0"), "duplicate")
    assert agg.rejections[-1] == ("client-0", agg.rejections[-1][1])
    assert_average_of(agg, keys, [0])


# -- authentication: who sent it, and nothing altered since -----------------------------------
def test_an_update_signed_by_another_client_is_rejected(keys):
    agg = aggregator(keys)
    agg.add(update(keys["ours"][0], 0))
    own = update(keys["ours"][0], 1)
    # relabelled as client-2 and signed by client-1: not client-2's signature
    as_client_2 = SigningKey("client-2", SIGNERS["client-1"].private_bytes())
    rejected(agg, repack(own, key=as_client_2, client_id="client-2"), "bad signature")
    # relabelled and signed by nobody in particular
    rejected(agg, repack(own, key=SigningKey.generate("client-2"), client_id="client-2"), "bad sig")
    assert_average_of(agg, keys, [0])


def test_unknown_and_revoked_clients_are_rejected(keys):
    stranger = SigningKey.generate("client-99")
    data = wire.encode_update(
        keys["ours"][0], vec(0), 1.0, manifest_hash=MANIFEST, round=0, session=SESSION,
        key=stranger,
    )  # fmt: skip
    agg = aggregator(keys)
    rejected(agg, data, "unknown sender")
    revoked = Aggregator(
        keys["ours"][1], manifest_hash=MANIFEST, round=0, n_values=N, session=SESSION,
        roster=ROSTER.without("client-0"), key=SERVER,
    )  # fmt: skip
    rejected(revoked, update(keys["ours"][0], 0), "unknown sender")


def test_altered_bytes_with_a_recomputed_checksum_are_rejected(keys):
    """What a man in the middle (or the server's own storage) could do: change any byte and fix
    the checksum. Only the sender can make the signature."""
    good = update(keys["ours"][0], 3)
    message = wire.unpack(good)
    agg = aggregator(keys)
    flipped = bytearray(message.chunks[0])
    flipped[len(flipped) // 2] ^= 0x01  # a coefficient: a valid ciphertext, another value
    body_change = wire.Message(**{**message.__dict__, "chunks": (bytes(flipped), message.chunks[1]),
                                  "digest": b"", "signature": b""})  # fmt: skip
    # re-packed with the right checksum, but signed by the attacker (not client-3)
    rejected(agg, wire.pack(body_change, SigningKey.generate("client-3")), "bad signature")
    # the original signature kept: it no longer matches the digest
    forged = bytearray(wire.pack(body_change, SIGNERS["client-3"]))
    forged[-wire.SIGNATURE_BYTES :] = good[-wire.SIGNATURE_BYTES :]
    rejected(agg, bytes(forged), "bad signature")
    # a round-2 update relabelled as round 0, or moved to another manifest
    later = update(keys["ours"][0], 3, round=2)
    for change in ({"round": 0}, {"manifest_hash": "77" * 32}):
        rejected(agg, repack(later, key=SigningKey.generate("client-3"), **change), "bad signat")
    agg.add(good)
    assert_average_of(agg, keys, [3])


def test_the_aggregate_is_signed_by_the_server(keys):
    agg = aggregator(keys)
    agg.add(update(keys["ours"][0], 0))
    aggregate = agg.result()
    args = dict(manifest_hash=MANIFEST, round=0, session=SESSION, n_values=N)
    impostor = SigningKey.generate("server")
    for bad, match in (
        (repack(aggregate, key=impostor), "bad signature"),
        (update(keys["ours"][0], 1), "aggregate comes from the server"),
    ):
        with pytest.raises(UpdateRejected, match=match):
            wire.decode_aggregate(keys["ours"][0], bad, server_key=SERVER.public_bytes, **args)
    with pytest.raises(UpdateRejected, match="another run"):
        wire.decode_aggregate(
            keys["ours"][0], aggregate, server_key=SERVER.public_bytes,
            **{**args, "session": "cd" * 16},
        )  # fmt: skip
    ok = wire.decode_aggregate(keys["ours"][0], aggregate, server_key=SERVER.public_bytes, **args)
    assert ok.contributors == 1 and ok.contributor_ids == ("client-0",)
    assert_average_of(agg, keys, [0])


def test_chunk_count_and_size_are_checked(keys):
    agg = aggregator(keys)
    good = update(keys["ours"][0], 1)
    chunks = wire.unpack(good).chunks
    rejected(agg, repack(good, chunks=chunks[:1]), "number of chunks")
    rejected(agg, repack(good, chunks=chunks + chunks[:1]), "number of chunks")
    rejected(agg, repack(good, chunks=(chunks[0][:-1], chunks[1])), "chunk sizes")
    rejected(agg, repack(good, chunks=(chunks[0], chunks[1] + b"\0")), "chunk sizes")
    agg.add(good)
    assert_average_of(agg, keys, [1])


def test_ciphertexts_are_checked_before_any_is_added(keys):
    agg = aggregator(keys)
    good = update(keys["ours"][0], 2)
    first, second = wire.unpack(good).chunks
    bad = bytearray(second)
    bad[14] ^= 1  # parms_id of the LAST chunk: the first one must not be added either
    rejected(agg, repack(good, chunks=(first, bytes(bad))), "parms_id")
    scale = bytearray(first)
    scale[46 + 7] ^= 0x10
    rejected(agg, repack(good, chunks=(bytes(scale), second)), "scale")
    agg.add(good)
    assert_average_of(agg, keys, [2])


def test_ciphertext_from_other_parameters_is_rejected(keys):
    """Even under our fingerprint, a ciphertext made with other parameters does not fit."""
    agg = aggregator(keys)
    good = update(keys["ours"][0], 0)
    foreign = wire.unpack(update(keys["big"][0], 0)).chunks
    rejected(agg, repack(good, chunks=(foreign[0], foreign[0])), "chunk sizes")
    agg.add(good)
    assert_average_of(agg, keys, [0])


def test_other_key_set_with_forged_fingerprint_is_undetectable(keys):
    """Known limit: a ciphertext under other keys with our parameters looks like ours. Only the
    fingerprint tells them apart, and a client that lies about it cannot be caught; the sum is
    then garbage. Clients that hold no key of this federation cannot do more than that."""
    other = update(keys["other"][0], 0)
    forged = repack(other, fingerprint=keys["ours"][1].fingerprint)
    agg = aggregator(keys)
    assert agg.add(forged) == "client-0"


def test_encrypted_update_to_plaintext_aggregator(keys):
    agg = aggregator(keys, codec=PlaintextCodec())
    agg.add(update(PlaintextCodec(), 0))
    rejected(agg, update(keys["ours"][0], 1), "encrypted message sent to a plaintext")
    assert agg.accepted == ["client-0"]


def test_aggregate_message_is_not_an_update(keys):
    agg = aggregator(keys)
    agg.add(update(keys["ours"][0], 0))
    rejected(agg, agg.result(), "unknown sender 'server'")  # the server signs no updates
    assert_average_of(agg, keys, [0])


def test_client_limit_protects_against_overflow(keys):
    agg = aggregator(keys)
    for k in range(MAX_CLIENTS):
        agg.add(update(keys["ours"][0], k))
    rejected(agg, update(keys["ours"][0], MAX_CLIENTS), "too many")
    assert_average_of(agg, keys, list(range(MAX_CLIENTS)))


def test_no_update_no_aggregate(keys):
    agg = aggregator(keys)
    with pytest.raises(UpdateRejected, match="no update"):
        agg.result()
    rejected(agg, b"junk", "malformed")
    assert agg.rejections == [(None, agg.rejections[0][1])]
    with pytest.raises(UpdateRejected, match="1 rejected"):
        agg.result()


def test_rejections_are_logged_without_payload(keys, caplog):
    agg = aggregator(keys)
    data = update(keys["ours"][0], 0, round=7)
    with (
        caplog.at_level(logging.INFO, logger="secure_fedsa.server.aggregator"),
        pytest.raises(UpdateRejected),
    ):
        agg.add(data)
    assert "rejected update from client-0" in caplog.text and "round" in caplog.text
    assert len(caplog.text) < 500


def test_constructor_arguments_are_checked(keys):
    for kwargs in (
        {"manifest_hash": "nothex"},
        {"round": -1},
        {"n_values": 1.5},
        {"session": "short"},
        {"key": SigningKey.generate("server")},  # not the roster's server
        {"key": SIGNERS["client-0"]},
    ):
        with pytest.raises(ConfigError):
            aggregator(keys, **kwargs)


# -- fuzzing: nothing but UpdateRejected, and corrupted input is never accepted ----------------
class Blob(bytes):
    """Bytes with a short repr, so that failing fuzz examples stay readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def valid_update(keys):
    return Blob(update(keys["ours"][0], 9, client_id="client-9"))


@fuzz_settings
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(keys, data):
    agg = aggregator(keys)
    with pytest.raises(UpdateRejected) as info:
        agg.add(data)
    assert not info.value.reason.startswith("internal")


@fuzz_settings
@given(data=st.data())
def test_fuzz_mutated_updates_are_never_accepted(keys, valid_update, data):
    """Bit flips, truncation, extension anywhere: the checksum or the parser catches them all."""
    raw = bytearray(valid_update)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        flips = st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, unique=True)
        for position in data.draw(flips):
            raw[position // 8] ^= 1 << (position % 8)
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=64))
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    agg = aggregator(keys)
    with pytest.raises(UpdateRejected) as info:
        agg.add(bytes(raw))
    assert not info.value.reason.startswith("internal") and agg.accepted == []


@fuzz_settings
@given(data=st.data())
def test_fuzz_ciphertext_metadata_with_valid_checksum(keys, valid_update, data):
    """A sender who recomputes the checksum: changes to any chunk's header (magic, kind, size,
    rounding, degree, parms_id, scale) are caught. Flips inside the seed or the coefficients of
    a ciphertext are in general undetectable (any value below the modulus is a valid
    ciphertext), so those are only required not to raise anything but UpdateRejected."""
    chunks = [bytearray(c) for c in wire.unpack(valid_update).chunks]
    which = data.draw(st.integers(0, len(chunks) - 1))
    in_header = st.integers(0, chunkfmt.HEADER_BYTES * 8 - 1)
    position = data.draw(st.one_of(in_header, st.integers(0, len(chunks[which]) * 8 - 1)))
    chunks[which][position // 8] ^= 1 << (position % 8)
    mutated = repack(valid_update, chunks=tuple(bytes(c) for c in chunks))
    agg = aggregator(keys)
    in_metadata = position // 8 < chunkfmt.HEADER_BYTES
    try:
        agg.add(mutated)
    except UpdateRejected as exc:
        assert not exc.reason.startswith("internal")
    else:
        assert not in_metadata, "a corrupted ciphertext header was accepted"


@fuzz_settings
@given(data=st.data())
def test_fuzz_header_text_with_valid_checksum(keys, valid_update, data):
    """Edited header text with the checksum recomputed: the signature no longer matches."""
    prefix = 10
    header_len = int.from_bytes(valid_update[6:10], "little")
    raw = bytearray(valid_update[: prefix + header_len])
    position = data.draw(st.integers(prefix, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[position]))
    raw[position] = value
    end = len(valid_update) - wire.DIGEST_BYTES - wire.SIGNATURE_BYTES
    body = bytes(raw) + valid_update[prefix + header_len : end]
    signature = valid_update[-wire.SIGNATURE_BYTES :]
    agg = aggregator(keys)
    with pytest.raises(UpdateRejected) as info:
        agg.add(body + hashlib.sha256(body).digest() + signature)
    assert not info.value.reason.startswith("internal") and agg.accepted == []


# -- the server never holds anything that decrypts ----------------------------------------------
def test_server_side_imports_no_decryption_code():
    code = (
        "import sys, inspect\n"
        "import secure_fedsa.server.aggregator, secure_fedsa.crypto.ckks_server\n"
        "import secure_fedsa.crypto.wire\n"
        "mods = [m for n, m in sys.modules.items() if n.startswith('secure_fedsa')]\n"
        "assert 'secure_fedsa.crypto.ckks_client' not in sys.modules\n"
        "bad = [m.__name__ for m in mods if 'Decryptor' in inspect.getsource(m)]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the ledger head every update of a DP federation carries (P5) -------------------------------


def charged(k: int, round: int, entries: int, head: str) -> bytes:
    return wire.encode_update(
        PlaintextCodec(),
        vec(k, 8),
        1.0,
        manifest_hash=MANIFEST,
        round=round,
        session=SESSION,
        key=SIGNERS[f"client-{k}"],
        ledger=wire.LedgerHead(entries, head),
    )


def dp_aggregator(round: int, heads=None) -> Aggregator:  # noqa: ANN001
    return Aggregator(
        PlaintextCodec(),
        manifest_hash=MANIFEST,
        round=round,
        n_values=8,
        session=SESSION,
        roster=ROSTER,
        key=SERVER,
        require_ledger=True,
        ledger_heads=heads,
    )


def test_a_client_whose_ledger_went_back_is_refused_by_the_server():
    """The server keeps the last ledger head it accepted from each client. A client whose run
    directory was restored from an older copy retrains with an older ledger: its next update is
    paid for by an entry the server already saw pass (or by a different one at that position)."""
    first = dp_aggregator(3)
    first.add(charged(0, 3, entries=3, head="aa" * 32))
    heads = {"client-0": (3, first.accepted_heads["client-0"])}
    for entries, head, reason in [
        (2, "bb" * 32, "ledger rolled back"),  # retrained round 4 from a copy after round 2
        (3, "cc" * 32, "ledger rewritten"),
        (3, "aa" * 32, "no new ledger entry"),  # round 4 paid for by round 3's entry
    ]:
        later = dp_aggregator(4, heads)
        with pytest.raises(UpdateRejected, match=reason):
            later.add(charged(0, 4, entries=entries, head=head))
        assert later.accepted == []
    # the honest next round, and the same round re-sent after a restart, are accepted
    dp_aggregator(4, heads).add(charged(0, 4, entries=4, head="dd" * 32))
    dp_aggregator(3, heads).add(charged(0, 3, entries=3, head="aa" * 32))


def test_a_dp_federation_needs_the_ledger_head_and_a_plain_one_refuses_it():
    with pytest.raises(UpdateRejected, match="no ledger head"):
        dp_aggregator(1).add(update(PlaintextCodec(), 0, round=1, n=8))
    plain = Aggregator(
        PlaintextCodec(), manifest_hash=MANIFEST, round=1, n_values=8, session=SESSION,
        roster=ROSTER, key=SERVER,
    )  # fmt: skip
    with pytest.raises(UpdateRejected, match="without DP"):
        plain.add(charged(0, 1, entries=1, head="aa" * 32))


@given(
    last=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    now=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    same_head=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_only_a_head_that_moves_forward_with_the_rounds_passes(last, now, same_head):
    from secure_fedsa.server.aggregator import ledger_head_problem

    (last_round, last_entries), (round_now, entries) = last, now
    previous = (last_round, wire.LedgerHead(last_entries, "aa" * 32))
    head = wire.LedgerHead(entries, "aa" * 32 if same_head else "bb" * 32)
    problem = ledger_head_problem(previous, round_now, head)
    forward = entries > last_entries and round_now > last_round
    resent = entries == last_entries and same_head and round_now == last_round
    assert (problem is None) == (forward or resent)
