"""The client side of the CKKS codec: encrypt an update, decrypt an aggregate. Holds the secret.

Upload ciphertexts are seeded symmetric encryptions: ``c1`` is expanded from a 64-byte seed
(SEAL's Blake2xb generator), so only ``c0`` and the seed travel. The Python binding of SEAL cannot
hand out the seed of its own seeded encryption, so the client draws the seed itself and computes
the matching ``c0 = Δm + e - c1·s`` with SEAL: a fresh symmetric encryption supplies ``Δm + e``
(SEAL's noise), and a secret-key evaluation (``Decryptor.decrypt`` of a crafted pair, on the
client, of the client's own ciphertext) turns it into the ``c0`` for the chosen ``c1``. The result
has the same distribution as SEAL's ``encrypt_symmetric`` output.

The server never imports this module.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

import numpy as np
import tenseal.sealapi as seal

from secure_fedsa.crypto import packing
from secure_fedsa.crypto.chunks import CiphertextLayout
from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.crypto.keys import ClientKeys, load_client_keys
from secure_fedsa.crypto.packing import add_mod
from secure_fedsa.crypto.seal_io import (
    SEED_BYTES,
    Scratch,
    ciphertext_file,
    make_context,
    read_coefficients,
)
from secure_fedsa.errors import CryptoError, UpdateRejected

# A key-pair check: encrypt these under the bundle's public key, decrypt with its secret key.
_PROBE = np.array([1.0, -2.5, 3.25, 0.0])
_PROBE_TOLERANCE = 1e-3


class CKKSClientCodec:
    """Encrypts updates and decrypts aggregates with the federation's shared secret key."""

    encrypted = True

    def __init__(self, keys: ClientKeys) -> None:
        if not isinstance(keys, ClientKeys):
            raise CryptoError(
                "decryption needs client.keys (the secret key); a server bundle has none"
            )
        self.params = keys.params
        self.max_clients = keys.max_clients
        self.fingerprint = keys.fingerprint
        self._bound = keys.params.value_bound(keys.max_clients)
        self._context = make_context(keys.params)
        self._scratch = Scratch()
        self.layout = CiphertextLayout.for_context(self._context, keys.params)
        try:
            secret = self._scratch.load(seal.SecretKey, self._context, keys.secret_key_bytes)
            public = self._scratch.load(seal.PublicKey, self._context, keys.public_key)
        except (ValueError, RuntimeError, TypeError):
            raise CryptoError("the key bundle's keys do not load under its parameters") from None
        self._encoder = seal.CKKSEncoder(self._context)
        self._evaluator = seal.Evaluator(self._context)
        self._encryptor = seal.Encryptor(self._context, secret)
        self._decryptor = seal.Decryptor(self._context, secret)
        self._check_pair(public)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str]) -> CKKSClientCodec:
        return cls(load_client_keys(path))

    def __repr__(self) -> str:
        return f"CKKSClientCodec(fingerprint={self.fingerprint!r})"

    @property
    def value_bound(self) -> float:
        """The largest magnitude one client may encrypt (each weighted value): above it the
        sum of ``max_clients`` updates could overflow CKKS silently."""
        return self._bound

    def update_chunk_sizes(self, n_values: int) -> list[int]:
        return [self.layout.upload_bytes] * self.layout.chunk_count(n_values)

    def aggregate_chunk_sizes(self, n_values: int) -> list[int]:
        return [self.layout.aggregate_bytes] * self.layout.chunk_count(n_values)

    # -- encryption ---------------------------------------------------------------------------
    def encrypt(
        self, values: np.ndarray, weight: float, mask: ChunkMask | None = None
    ) -> list[bytes]:
        """Upload chunks for ``weight * values`` (the weight itself is not sent: every client
        knows it from the signed roster); checks the overflow bound.

        ``mask(chunk, count, modulus)``, when given, is added to each chunk's ``c0``
        coefficients modulo the data prime before rounding (secure aggregation's masks)."""
        floats = packing.update_floats(values, weight, bound=self._bound)
        slots = packing.to_slots(floats, self.params.floats_per_chunk)
        return [self._encrypt_chunk(row, index, mask) for index, row in enumerate(slots)]

    def _plaintext(self, slots: np.ndarray) -> seal.Plaintext:
        plain = seal.Plaintext()
        self._encoder.encode(slots.tolist(), list(self.layout.parms_id), self.layout.scale, plain)
        return plain

    def _load(self, coeffs: np.ndarray, seed: bytes | None = None) -> seal.Ciphertext:
        blob = ciphertext_file(
            parms_id=list(self.layout.parms_id),
            ntt_form=False,
            poly_modulus_degree=self.layout.poly_modulus_degree,
            scale=self.layout.scale,
            coeffs=coeffs,
            seed=seed,
        )
        return self._scratch.load(seal.Ciphertext, self._context, blob)

    def _encrypt_chunk(self, slots: np.ndarray, index: int, mask: ChunkMask | None) -> bytes:
        n = self.layout.poly_modulus_degree
        fresh = seal.Ciphertext()  # (c0, a) with c0 + a·s = Δm + e, NTT form
        self._encryptor.encrypt_symmetric(self._plaintext(slots), fresh)
        seed = secrets.token_bytes(SEED_BYTES)
        seeded = self._load(np.zeros(n, dtype=np.uint64), seed)  # (0, a'), a' from the seed
        self._evaluator.transform_to_ntt_inplace(seeded)
        crafted = seal.Ciphertext()
        self._evaluator.sub(fresh, seeded, crafted)  # (c0, a - a')
        body = seal.Plaintext()
        self._decryptor.decrypt(crafted, body)  # c0 + (a - a')·s = Δm + e - a'·s
        self._evaluator.add_plain_inplace(seeded, body)  # (Δm + e - a'·s, a')
        self._evaluator.transform_from_ntt_inplace(seeded)
        c0 = read_coefficients(seeded, n)
        if mask is not None:
            c0 = add_mod(c0, mask(index, n, self.layout.modulus), self.layout.modulus)
        return self.layout.encode_upload(seed, c0)

    # -- decryption ---------------------------------------------------------------------------
    def decrypt_sum(self, chunks: Sequence[bytes], n_values: int) -> np.ndarray:
        """``Σ weight·values`` from aggregate chunks."""
        if len(chunks) != self.layout.chunk_count(n_values):
            raise UpdateRejected("aggregate has the wrong number of chunks")
        rows = []
        for data in chunks:
            c0, c1 = self.layout.parse_aggregate(data)
            try:
                ciphertext = self._load(np.concatenate([c0, c1]))
            except (ValueError, RuntimeError, TypeError):
                raise UpdateRejected("aggregate ciphertext does not load under the keys") from None
            self._evaluator.transform_to_ntt_inplace(ciphertext)
            rows.append(self._decode(ciphertext))
        return packing.from_slots(np.stack(rows), n_values)

    def _decode(self, ciphertext: seal.Ciphertext) -> np.ndarray:
        plain = seal.Plaintext()
        self._decryptor.decrypt(ciphertext, plain)
        return np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)

    def _check_pair(self, public: seal.PublicKey) -> None:
        probe = np.zeros(self.params.slots, dtype=np.complex128)
        probe[: len(_PROBE)] = _PROBE
        ciphertext = seal.Ciphertext()
        seal.Encryptor(self._context, public).encrypt(self._plaintext(probe), ciphertext)
        decoded = self._decode(ciphertext)
        if not np.allclose(decoded, probe, atol=_PROBE_TOLERANCE):
            raise CryptoError(
                "the secret key does not belong to this bundle's public key and fingerprint; "
                "the bundle is corrupt or was edited"
            )
