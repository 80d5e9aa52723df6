"""Mutation fuzz of the server's entry point over real captured updates (promise P7).

Updates are captured from a real in-process federation (real model, real CKKS, real signatures).
A seeded mutator alters them the ways a network attacker, a compromised relay or the server's own
storage could: flip bits (with the checksum recomputed, or not), splice or reorder chunks between
clients, relabel the client id, the round, the manifest or the session, swap or zero the
signature, truncate or extend. Every mutant goes to ``Aggregator.add`` before the honest updates.

Required: 0 crashes (nothing but UpdateRejected, and never an "internal error"), 0 accepted
altered updates, and the honest aggregate byte-identical to the one made without the mutants.
Hundreds of cases in the default run; ``-m slow`` runs 12 000.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct

import pytest
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto import wire
from secure_fedsa.crypto.signing import SigningKey
from secure_fedsa.errors import UpdateRejected
from secure_fedsa.server.aggregator import Aggregator
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

SEED = 20261130
PREFIX = struct.Struct("<4sHI")
TAIL = wire.DIGEST_BYTES + wire.SIGNATURE_BYTES


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Every update of a 2-round DP + CKKS federation, and the server's files to add them."""
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec
    from secure_fedsa.crypto.signing import identity_path, load_identity, load_roster
    from secure_fedsa.engine import aggregation

    updates: dict[int, list[bytes]] = {1: [], 2: []}
    real_submit = aggregation.submit

    def capture(aggregator, payload):
        updates[aggregator.round].append(payload)
        return real_submit(aggregator, payload)

    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    aggregation.submit = capture
    try:
        run_federation(RunConfig(**TINY_DP), run_dir)
    finally:
        aggregation.submit = real_submit
    keys = run_dir / "keys"
    setup = json.loads((run_dir / "setup.json").read_text())
    codec = CKKSServerCodec.from_bundle(keys / "server.keys")
    roster = load_roster(keys / "roster.json")
    server = load_identity(identity_path(keys, "server")).key

    def make(round_number: int) -> Aggregator:
        return Aggregator(
            codec,
            manifest_hash=setup["manifest_hash"],
            round=round_number,
            n_values=setup["shared_values"],
            session=setup["session"],
            roster=roster,
            key=server,
            require_ledger=True,  # a DP federation: every update names its ledger entry
        )

    return {"updates": updates, "make": make}


def _split(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, chunk bytes, signature) of a message."""
    _, _, length = PREFIX.unpack_from(data)
    header = json.loads(data[PREFIX.size : PREFIX.size + length])
    return header, data[PREFIX.size + length : -TAIL], data[-wire.SIGNATURE_BYTES :]


def _join(header: dict, chunks: bytes, signature: bytes, *, fix_checksum: bool = True) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = PREFIX.pack(wire.MAGIC, wire.WIRE_VERSION, len(text)) + text + chunks
    digest = hashlib.sha256(body).digest() if fix_checksum else b"\0" * 32
    return body + digest + signature


def _rechecksum(raw: bytes) -> bytes:
    body = raw[:-TAIL]
    return body + hashlib.sha256(body).digest() + raw[-wire.SIGNATURE_BYTES :]


def mutate(rng: random.Random, own: bytes, other: bytes, later: bytes) -> tuple[str, bytes]:
    """One altered message (and what was done), from an update, another client's update of the
    same round, and the same client's update of the next round."""
    header, chunks, signature = _split(own)
    kind = rng.choice(
        [
            "flip", "flip-rechecksum", "ciphertext-rechecksum", "splice", "reorder", "client",
            "round", "manifest", "session", "signature-swap", "signature-zero", "truncate",
            "extend", "header-field",
        ]
    )  # fmt: skip
    raw = bytearray(own)
    if kind in ("flip", "flip-rechecksum"):
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(len(raw) * 8)
            raw[bit // 8] ^= 1 << (bit % 8)
        return kind, _rechecksum(bytes(raw)) if kind == "flip-rechecksum" else bytes(raw)
    if kind == "ciphertext-rechecksum":
        offset = len(own) - TAIL - len(chunks)
        for _ in range(rng.randint(1, 4)):
            at = offset + rng.randrange(len(chunks))
            raw[at] ^= rng.randint(1, 255)
        return kind, _rechecksum(bytes(raw))
    if kind == "splice":
        _, theirs, _ = _split(other)
        cut = rng.randrange(1, len(chunks))
        return kind, _join(header, chunks[:cut] + theirs[cut:], signature)
    if kind == "reorder":
        sizes = header["chunk_bytes"]
        parts, at = [], 0
        for size in sizes:
            parts.append(chunks[at : at + size])
            at += size
        if len(parts) > 1:
            parts = parts[1:] + parts[:1]
        else:  # one chunk: swap its halves
            half = len(chunks) // 2
            parts = [chunks[half:] + chunks[:half]]
        return kind, _join(header, b"".join(parts), signature)
    if kind == "client":
        return kind, _join(
            {**header, "client_id": _split(other)[0]["client_id"]}, chunks, signature
        )
    if kind == "round":  # the next round's update relabelled as this round's
        theirs_header, their_chunks, their_signature = _split(later)
        return kind, _join(
            {**theirs_header, "round": header["round"]}, their_chunks, their_signature
        )
    if kind == "manifest":
        return kind, _join({**header, "manifest_hash": "77" * 32}, chunks, signature)
    if kind == "session":
        return kind, _join({**header, "session": "cd" * 16}, chunks, signature)
    if kind == "signature-swap":  # another client's signature, or the attacker's own
        key = SigningKey.generate(header["client_id"])
        forged = key.sign("update", hashlib.sha256(own[:-TAIL]).digest())
        return kind, own[: -wire.SIGNATURE_BYTES] + rng.choice([forged, _split(other)[2]])
    if kind == "signature-zero":
        return kind, own[: -wire.SIGNATURE_BYTES] + b"\0" * wire.SIGNATURE_BYTES
    if kind == "truncate":
        return kind, own[: rng.randrange(len(own))]
    if kind == "extend":
        at = rng.randrange(len(own) + 1)
        return kind, own[:at] + rng.randbytes(rng.randint(1, 64)) + own[at:]
    field = rng.choice(sorted(header))
    value = rng.choice([0, 1, -1, 2**40, "x", None, [], True, header[field]])
    return kind, _join({**header, field: value}, chunks, signature)


def run_fuzz(captured, cases: int) -> dict:
    rng = random.Random(SEED)
    stats = {"cases": 0, "unaltered": 0, "accepted": [], "crashes": [], "kinds": {}}
    for round_number in (1,):
        honest = captured["updates"][round_number]
        later = captured["updates"][round_number + 1]
        reference = captured["make"](round_number)
        for payload in honest:
            reference.add(payload)
        expected = reference.result()
        aggregator = captured["make"](round_number)
        for _ in range(cases):
            which = rng.randrange(len(honest))
            kind, mutant = mutate(rng, honest[which], honest[1 - which], later[which])
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            if mutant == honest[which]:
                stats["unaltered"] += 1
                continue
            stats["cases"] += 1
            try:
                aggregator.add(mutant)
            except UpdateRejected as exc:
                if exc.reason.startswith("internal"):
                    stats["crashes"].append((kind, exc.reason))
            except Exception as exc:  # noqa: BLE001 - any other exception is a crash
                stats["crashes"].append((kind, repr(exc)))
            else:
                stats["accepted"].append(kind)
        for payload in honest:
            try:
                aggregator.add(payload)
            except UpdateRejected as exc:  # e.g. "duplicate" after an accepted mutant
                stats.setdefault("honest_rejected", []).append(exc.reason)
        stats["identical"] = aggregator.result() == expected
    return stats


def _check(stats: dict) -> None:
    assert stats["crashes"] == [], stats["crashes"][:5]
    assert stats["accepted"] == [], stats["accepted"]
    assert "honest_rejected" not in stats, stats["honest_rejected"]
    assert stats["identical"], "the honest aggregate changed"
    assert len(stats["kinds"]) == 14  # every kind of mutation was tried


def test_mutants_are_rejected_and_the_aggregate_is_untouched(captured):
    _check(run_fuzz(captured, 400))


@pytest.mark.slow
def test_twelve_thousand_mutants(captured):
    stats = run_fuzz(captured, 12_000)
    print(stats["cases"], "altered cases,", stats["kinds"])
    _check(stats)
