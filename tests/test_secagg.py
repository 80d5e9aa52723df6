"""Pairwise and self masks over ciphertext coefficients, and the round protocol (promise P8).

The protocol is tested here over plain residues modulo a 60-bit prime (what a CKKS c0 coefficient
is); the CKKS path is tested end to end in tests/test_masked_federation.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.errors import CryptoError
from secure_fedsa.secagg.masking import (
    MaskSeeds,
    add_mod,
    chunk_mask,
    mask_context,
    prg_mod,
    sub_mod,
)
from secure_fedsa.secagg.protocol import (
    MaskingClient,
    MaskingServer,
    RoundFailed,
    default_threshold,
    survivors_digest,
)
from secure_fedsa.secagg.shamir import combine_shares, split_secret

pytestmark = pytest.mark.unit

Q = (1 << 60) - 93  # a 60-bit prime, like the CKKS data prime
SESSION = "ab" * 16


def _roster(ids):
    keys = {cid: SigningKey.generate(cid) for cid in ids}
    server = SigningKey.generate("server")
    return keys, Roster({cid: k.public_bytes for cid, k in keys.items()}, server.public_bytes)


# --------------------------------------------------------------------------- primitives
def test_prg_is_uniform_reproducible_and_keyed():
    a = prg_mod(b"k" * 32, info=b"x", count=50_000, modulus=Q)
    assert a.dtype == np.uint64 and int(a.max()) < Q
    assert np.array_equal(a, prg_mod(b"k" * 32, info=b"x", count=50_000, modulus=Q))
    assert not np.array_equal(a[:100], prg_mod(b"k" * 32, info=b"y", count=100, modulus=Q))
    assert not np.array_equal(a[:100], prg_mod(b"j" * 32, info=b"x", count=100, modulus=Q))
    # uniform over [0, Q): the mean of U/Q is 1/2 within 5 standard errors
    mean = float(np.mean(a.astype(np.float64) / Q))
    assert abs(mean - 0.5) < 5 * (1 / 12 / len(a)) ** 0.5
    small = prg_mod(b"k" * 32, info=b"x", count=20_000, modulus=13)
    assert set(np.unique(small).tolist()) == set(range(13))


@settings(max_examples=40, deadline=None)
@given(
    clients=st.lists(
        st.text("abcdefgh", min_size=1, max_size=4), min_size=2, max_size=6, unique=True
    ),  # fmt: skip
    count=st.integers(0, 600),
    chunk=st.integers(0, 5),
)
def test_pairwise_masks_cancel_for_any_clients_and_length(clients, count, chunk):
    """Σ over clients of (pairwise masks only, self seeds zero-contribution aside) is 0 mod q."""
    rng = np.random.default_rng(len(clients) * 1000 + count)
    secrets = {}
    for i, a in enumerate(clients):
        for b in clients[i + 1 :]:
            secrets[frozenset((a, b))] = rng.bytes(32)
    context = mask_context(SESSION, 3)
    total = np.zeros(count, dtype=np.uint64)
    self_total = np.zeros(count, dtype=np.uint64)
    for cid in clients:
        seed = rng.bytes(32)
        pairs = {p: secrets[frozenset((cid, p))] for p in clients if p != cid}
        mask = chunk_mask(MaskSeeds(cid, seed, pairs), context=context, chunk=chunk, count=count,
                          modulus=Q)  # fmt: skip
        total = add_mod(total, mask, Q)
        self_total = add_mod(
            self_total,
            chunk_mask(MaskSeeds(cid, seed, {}), context=context, chunk=chunk, count=count,
                       modulus=Q),
            Q,
        )  # fmt: skip
    # what is left after the pairwise masks cancel is exactly the sum of the self masks
    assert np.array_equal(total, self_total)


def test_shamir_any_threshold_subset_recovers_and_fewer_do_not():
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=3, holders=5)
    numbered = list(enumerate(shares, start=1))
    assert combine_shares(numbered[1:4], threshold=3) == secret
    assert combine_shares([numbered[4], numbered[0], numbered[2]], threshold=3) == secret
    with pytest.raises(CryptoError, match="3 needed"):
        combine_shares(numbered[:2], threshold=3)
    assert len(set(split_secret(secret, threshold=1, holders=3))) == 1  # degree 0: the secret
    assert split_secret(secret, threshold=3, holders=5) != shares  # fresh coefficients
    with pytest.raises(CryptoError):
        split_secret(b"short", threshold=2, holders=3)
    with pytest.raises(CryptoError, match="same holder"):
        combine_shares([numbered[0], numbered[0], numbered[1]], threshold=3)
    with pytest.raises(CryptoError, match="not a field element"):
        combine_shares([(1, b"\xff" * 33), *numbered[1:3]], threshold=3)


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(1, 9),
    extra=st.integers(0, 6),
    data=st.data(),
)
def test_shamir_property(secret, threshold, extra, data):
    """Any t shares recover the secret; t − 1 shares interpolate to something else (they carry
    no information: the missing coefficient is uniform); every share lies on one polynomial."""
    from secure_fedsa.secagg.shamir import PRIME

    holders = threshold + extra
    shares = list(enumerate(split_secret(secret, threshold=threshold, holders=holders), start=1))
    subset = data.draw(st.permutations(shares)).copy()[:threshold]
    assert combine_shares(subset, threshold=threshold) == secret
    if threshold >= 2:
        fewer = subset[: threshold - 1]
        try:
            guess = combine_shares(fewer, threshold=threshold - 1)
        except CryptoError:  # interpolated to a field element above 2^256: not a secret
            guess = None
        assert guess != secret
    # consistency: the polynomial through ``subset`` passes through every other share
    for x, share in shares:
        value = 0
        for i, (x_i, y_i) in enumerate(subset):
            term = int.from_bytes(y_i, "big")
            for j, (x_j, _) in enumerate(subset):
                if j != i:
                    term = term * (x - x_j) * pow(x_i - x_j, -1, PRIME) % PRIME
            value = (value + term) % PRIME
        assert value == int.from_bytes(share, "big")


def test_the_field_is_prime():
    """p = 2^256 + 297 is prime (deterministic Miller-Rabin bases for this size, plus 40 more)."""
    from secure_fedsa.secagg.shamir import PRIME

    d, r = PRIME - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    bases = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41] + list(range(43, 200, 4))
    for a in bases:
        x = pow(a, d, PRIME)
        if x in (1, PRIME - 1):
            continue
        for _ in range(r - 1):
            x = x * x % PRIME
            if x == PRIME - 1:
                break
        else:
            raise AssertionError(f"{a} witnesses that p is composite")
    assert PRIME > 1 << 256


# --------------------------------------------------------------------------- the protocol
def run_round(ids, *, drop_after_sharing=(), threshold=None, count=300, chunks=2):
    """One round over random residues: (what the server reconstructs, the true sum over the
    present clients, each client's upload, each client's input)."""
    keys, roster = _roster(ids)
    server = MaskingServer(roster, SESSION, 1, threshold=threshold)
    clients = {c: MaskingClient(c, keys[c], roster, SESSION, 1) for c in ids}
    u1 = server.collect_adverts([c.advertise() for c in clients.values()])
    t = server.threshold
    u2 = server.collect_shares({c: clients[c].share(u1, threshold=t) for c in ids})
    rng = np.random.default_rng(7)
    inputs, uploads = {}, {}
    for cid in sorted(u2):
        seeds = clients[cid].seeds(u2)
        inputs[cid] = [rng.integers(0, Q, size=count, dtype=np.uint64) for _ in range(chunks)]
        uploads[cid] = [
            add_mod(
                x, chunk_mask(seeds, context=server.context, chunk=k, count=count, modulus=Q), Q
            )
            for k, x in enumerate(inputs[cid])
        ]
    present = sorted(u2 - set(drop_after_sharing))
    dropped = set(u2) - set(present)
    signed = {c: clients[c].sign_survivors(present=present, dropped=dropped) for c in present}
    signatures = server.survivor_signatures(signed, present=present)
    reveals = [
        clients[c].reveal(
            server.shares_for(c), present=present, dropped=dropped, signatures=signatures
        )
        for c in present
    ]
    offsets = server.unmasking_offsets(reveals, present=present, chunks=chunks, count=count,
                                       modulus=Q)  # fmt: skip
    result, truth = [], []
    for k in range(chunks):
        total = np.zeros(count, dtype=np.uint64)
        expected = np.zeros(count, dtype=np.uint64)
        for c in present:
            total = add_mod(total, uploads[c][k], Q)
            expected = add_mod(expected, inputs[c][k], Q)
        result.append(sub_mod(total, offsets[k], Q))
        truth.append(expected)
    return result, truth, uploads, inputs, clients, server


def test_the_unmasked_sum_is_exact():
    result, truth, *_ = run_round([f"client-{i}" for i in range(5)])
    for r, t in zip(result, truth, strict=True):
        assert np.array_equal(r, t)


def test_a_client_dropping_after_masking_leaves_the_sum_exact():
    ids = [f"client-{i}" for i in range(6)]
    result, truth, *_ = run_round(ids, drop_after_sharing=("client-2",))  # t = 5
    for r, t in zip(result, truth, strict=True):
        assert np.array_equal(r, t)


def test_fewer_than_t_survivors_fail_the_round_cleanly():
    ids = [f"client-{i}" for i in range(5)]  # t = 4
    assert default_threshold(5) == 4
    with pytest.raises(RoundFailed, match="needed"):
        run_round(ids, drop_after_sharing=("client-0", "client-1"))


def test_a_single_upload_is_uniform_even_to_a_key_holder():
    """The masked c0 of one client says nothing about its input: uploads of two very different
    inputs are both uniform, and uncorrelated with their inputs."""
    _, _, uploads, inputs, *_ = run_round([f"client-{i}" for i in range(4)], count=5000)
    for cid in uploads:
        u = uploads[cid][0].astype(np.float64) / Q
        x = inputs[cid][0].astype(np.float64) / Q
        assert abs(float(np.mean(u)) - 0.5) < 0.02
        assert abs(float(np.corrcoef(u, x)[0, 1])) < 0.05


def test_a_present_clients_mask_key_is_never_revealed():
    """Double masking: once a client's b share is revealed (it is present), the same survivor
    refuses to reveal its s share too, e.g. when a lying server declares it dropped later: it
    neither signs nor reveals for a second survivor set."""
    ids = [f"client-{i}" for i in range(4)]
    *_, clients, server = run_round(ids)
    survivor = clients["client-0"]
    with pytest.raises(CryptoError, match="already signed another survivor set"):
        survivor.sign_survivors(present=["client-0", "client-2", "client-3"], dropped=["client-1"])
    with pytest.raises(CryptoError, match="did not sign this survivor set"):
        survivor.reveal(
            server.shares_for("client-0"),
            present=["client-0", "client-2", "client-3"],
            dropped=["client-1"],
            signatures={},
        )
    with pytest.raises(CryptoError, match="both present and dropped"):
        survivor.reveal({}, present=["client-0", "client-1"], dropped=["client-1"], signatures={})
    # the guard below the signatures: even with a consistent set, never both kinds of share
    survivor._signed = b""
    survivor.sign_survivors(present=["client-0", "client-2", "client-3"], dropped=["client-1"])
    with pytest.raises(CryptoError, match="revealed already"):
        survivor.reveal(
            server.shares_for("client-0"),
            present=["client-0", "client-2", "client-3"],
            dropped=["client-1"],
            signatures={
                c: clients[c].key.sign(
                    "mask-survivors",
                    survivors_digest(SESSION, 1, ["client-0", "client-2", "client-3"],
                                     ["client-1"]),
                )
                for c in ("client-0", "client-2", "client-3")
            },
        )  # fmt: skip


def test_forged_adverts_are_refused():
    ids = ["client-0", "client-1", "client-2"]
    keys, roster = _roster(ids)
    clients = {c: MaskingClient(c, keys[c], roster, SESSION, 1) for c in ids}
    adverts = [c.advertise() for c in clients.values()]
    impostor = MaskingClient("client-1", SigningKey.generate("client-1"), roster, SESSION, 1)
    forged = [adverts[0], impostor.advertise(), adverts[2]]
    with pytest.raises(CryptoError, match="client-1"):
        clients["client-0"].share(forged, threshold=2)
    server = MaskingServer(roster, SESSION, 1)
    assert [a.client for a in server.collect_adverts(forged)] == ["client-0", "client-2"]
    # an advert of another round does not verify either
    old = MaskingClient("client-1", keys["client-1"], roster, SESSION, 0).advertise()
    with pytest.raises(RoundFailed, match="0 clients advertised"):
        MaskingServer(roster, SESSION, 1, threshold=1).collect_adverts([old])


def test_a_kept_round_survives_export_and_keeps_its_guard():
    """Flower keeps a client's round between messages with export/restore: the restored client
    masks identically, still refuses to reveal both shares, and exists for its round only."""
    ids = [f"client-{i}" for i in range(4)]
    *_, clients, server = run_round(ids)  # every client present: b shares were revealed
    keys = {c: clients[c].key for c in ids}
    kept = clients["client-0"].export()
    restored = MaskingClient.restore(kept, keys["client-0"], server.roster, SESSION, 1)
    seeds, again = clients["client-0"].seeds(ids), restored.seeds(ids)
    assert seeds.self_seed == again.self_seed and seeds.pairs == again.pairs
    with pytest.raises(CryptoError, match="already signed another survivor set"):
        restored.sign_survivors(present=["client-0", "client-2", "client-3"], dropped=["client-1"])
    with pytest.raises(CryptoError, match="did not sign this survivor set"):
        restored.reveal(
            server.shares_for("client-0"), present=["client-0", "client-2", "client-3"],
            dropped=["client-1"], signatures={},
        )  # fmt: skip
    for session, round_number in ((SESSION, 2), ("cd" * 16, 1)):
        with pytest.raises(RoundFailed, match="holds no masking keys"):
            MaskingClient.restore(kept, keys["client-0"], server.roster, session, round_number)
    with pytest.raises(RoundFailed, match="holds no masking keys"):
        MaskingClient.restore({}, keys["client-0"], server.roster, SESSION, 1)
    assert "b" in kept  # repr shows ids, never a secret:
    assert kept["b"].hex() not in repr(seeds) and kept["b"].hex() not in repr(restored)


def test_a_client_masks_only_with_enough_clients_including_itself():
    ids = [f"client-{i}" for i in range(4)]
    *_, clients, _ = run_round(ids)  # threshold 3
    with pytest.raises(RoundFailed, match="at least 3"):
        clients["client-0"].seeds(["client-0", "client-1"])
    with pytest.raises(RoundFailed, match="not itself"):
        clients["client-0"].seeds(["client-1", "client-2", "client-3"])
