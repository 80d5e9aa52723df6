"""Masks over ciphertext coefficients that cancel in the server's sum (promise P8, building block).

Each client adds to the ``c0`` coefficients of every ciphertext it uploads (modulo the data prime
q0, in coefficient form, before rounding) a self mask and one pairwise mask per other client:

    c0_i  +=  PRG(b_i)  +  Σ_{j ≠ i} σ_ij · PRG(s_ij)        (mod q0)

where ``s_ij`` is the secret clients i and j agree on (X25519), ``σ_ij`` is +1 for the client whose
id sorts first and −1 for the other, and ``b_i`` is i's own seed. The pairwise masks cancel in the
sum over clients; the self masks are removed by the server once enough clients reveal their shares
of ``b_i`` (double masking, as in SecAgg; the protocol lives in
:mod:`secure_fedsa.secagg.protocol`). A single masked upload is a uniformly random polynomial modulo
q0, to anyone who lacks the masks, the CKKS secret key's holders included: ``c0 + c1·s`` decrypts to
``Δm + e + mask``.

The PRG is ChaCha20 (the ``cryptography`` package) keyed by HKDF-SHA256 of the seed and a context
naming the run's session, the round, the chunk and the kind of mask; coefficients are 60-bit
words drawn by rejection sampling below q0, so every mask is exactly uniform modulo q0 and
reproducible by whoever holds its seed. Pure functions; nothing here is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_fedsa.crypto.packing import add_mod, sub_mod

__all__ = [
    "MaskSeeds",
    "add_mod",
    "chunk_mask",
    "mask_context",
    "pair_secret",
    "pair_sign",
    "prg_mod",
    "sub_mod",
]

_DOMAIN = b"secure_fedsa/mask/v1/"
SEED_BYTES = 32


def mask_context(session: str, round_number: int) -> bytes:
    """The context every mask of one round of one run is bound to (fresh masks per round)."""
    return f"{session}/{round_number}/".encode("ascii")


def _derive(seed: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DOMAIN + info).derive(seed)


def prg_mod(seed: bytes, *, info: bytes, count: int, modulus: int) -> np.ndarray:
    """``count`` integers uniform in ``[0, modulus)`` from ``seed`` and ``info`` (uint64).

    ChaCha20 keystream, 64-bit little-endian words cut to the modulus' bit length, words not
    below the modulus skipped (rejection sampling: exactly uniform). Deterministic.
    """
    if not 1 < modulus < 1 << 63:
        raise ValueError(f"modulus must be in (1, 2^63), got {modulus}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    key = _derive(seed, info)
    stream = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    cut = np.uint64((1 << modulus.bit_length()) - 1)
    parts, have = [], 0
    while have < count:
        want = count - have
        draw = want + want // 4 + 16  # rejections are rare for a prime just below 2^k
        words = np.frombuffer(stream.update(bytes(8 * draw)), dtype="<u8") & cut
        kept = words[words < np.uint64(modulus)][:want]
        parts.append(kept)
        have += len(kept)
    if not parts:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate(parts).astype(np.uint64)


def pair_secret(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The secret two clients agree on (X25519); both sides compute the same bytes."""
    return own.exchange(X25519PublicKey.from_public_bytes(peer_public))


def pair_sign(own_id: str, peer_id: str) -> int:
    """+1 for the client whose id sorts first, −1 for the other: the pair's masks cancel."""
    if own_id == peer_id:
        raise ValueError("a client has no pairwise mask with itself")
    return 1 if own_id < peer_id else -1


@dataclass(frozen=True)
class MaskSeeds:
    """What one client adds to its uploads in one round: its self seed and, per peer it masks
    with, the pair secret. ``repr`` shows no secret."""

    client_id: str
    self_seed: bytes
    pairs: Mapping[str, bytes]  # peer id -> pair secret

    def __repr__(self) -> str:
        return f"MaskSeeds(client_id={self.client_id!r}, peers={sorted(self.pairs)})"


def self_mask(seed: bytes, *, context: bytes, chunk: int, count: int, modulus: int) -> np.ndarray:
    return prg_mod(
        seed, info=context + b"self/" + str(chunk).encode(), count=count, modulus=modulus
    )


def pair_mask(secret: bytes, *, context: bytes, chunk: int, count: int, modulus: int) -> np.ndarray:
    return prg_mod(
        secret, info=context + b"pair/" + str(chunk).encode(), count=count, modulus=modulus
    )


def chunk_mask(
    seeds: MaskSeeds, *, context: bytes, chunk: int, count: int, modulus: int
) -> np.ndarray:
    """The total mask client ``seeds.client_id`` adds to ciphertext ``chunk``'s c0 (mod q0)."""
    total = self_mask(seeds.self_seed, context=context, chunk=chunk, count=count, modulus=modulus)
    for peer in sorted(seeds.pairs):
        mask = pair_mask(
            seeds.pairs[peer], context=context, chunk=chunk, count=count, modulus=modulus
        )
        total = (
            add_mod(total, mask, modulus)
            if pair_sign(seeds.client_id, peer) > 0
            else sub_mod(total, mask, modulus)
        )
    return total
