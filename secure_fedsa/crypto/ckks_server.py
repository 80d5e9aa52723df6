"""The server side of the CKKS codec: validate upload chunks and add ciphertexts. Never decrypts.

Built from ``server.keys`` alone (parameters and fingerprint, no key material): adding two
ciphertexts needs no key. This module imports no decryption code, and ``server/aggregator.py``
imports nothing from ``ckks_client``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tenseal.sealapi as seal

from secure_fedsa.crypto.chunks import CiphertextLayout
from secure_fedsa.crypto.keys import ServerKeys, load_server_keys
from secure_fedsa.crypto.packing import sub_mod
from secure_fedsa.crypto.seal_io import Scratch, ciphertext_file, make_context, read_coefficients
from secure_fedsa.errors import CryptoError, UpdateRejected


class CKKSServerCodec:
    """Checks and sums CKKS upload chunks for one key set."""

    encrypted = True

    def __init__(self, keys: ServerKeys) -> None:
        if not isinstance(keys, ServerKeys):
            raise CryptoError("the server codec takes ServerKeys (server.keys), nothing else")
        self.params = keys.params
        self.max_clients: int | None = keys.max_clients
        self.fingerprint = keys.fingerprint
        self._context = make_context(keys.params)
        self._evaluator = seal.Evaluator(self._context)
        self._scratch = Scratch()
        self.layout = CiphertextLayout.for_context(self._context, keys.params)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str]) -> CKKSServerCodec:
        return cls(load_server_keys(path))

    def __repr__(self) -> str:
        return f"CKKSServerCodec(fingerprint={self.fingerprint!r})"

    def update_chunk_sizes(self, n_values: int) -> list[int]:
        return [self.layout.upload_bytes] * self.layout.chunk_count(n_values)

    def aggregate_chunk_sizes(self, n_values: int) -> list[int]:
        return [self.layout.aggregate_bytes] * self.layout.chunk_count(n_values)

    def validate_chunk(self, data: bytes) -> seal.Ciphertext:
        """Parse an upload chunk strictly and load it under the context (SEAL's checks too)."""
        seed, c0 = self.layout.parse_upload(data)
        blob = ciphertext_file(
            parms_id=list(self.layout.parms_id),
            ntt_form=False,
            poly_modulus_degree=self.layout.poly_modulus_degree,
            scale=self.layout.scale,
            coeffs=c0,
            seed=seed,
        )
        try:
            ciphertext = self._scratch.load(seal.Ciphertext, self._context, blob)
        except (ValueError, RuntimeError, TypeError):
            raise UpdateRejected(
                "ciphertext does not load under the key bundle's parameters"
            ) from None
        if (
            not seal.is_valid_for(ciphertext, self._context)
            or ciphertext.size() != 2
            or tuple(ciphertext.parms_id()) != self.layout.parms_id
            or ciphertext.scale != self.layout.scale
            or ciphertext.is_ntt_form()
        ):
            raise UpdateRejected("ciphertext is not valid for the key bundle's parameters")
        return ciphertext

    def mask_shape(self, n_values: int) -> tuple[int, int, int]:
        """(ciphertexts, coefficients each, modulus) of the masks an update of ``n_values``
        carries: what secure aggregation removes from the sum."""
        layout = self.layout
        return layout.chunk_count(n_values), layout.poly_modulus_degree, layout.modulus

    def new_accumulator(self, n_values: int) -> CKKSAccumulator:
        return CKKSAccumulator(self._evaluator, self.layout, self.layout.chunk_count(n_values))


class CKKSAccumulator:
    """Running sum of validated ciphertexts, chunk by chunk; memory does not grow with clients."""

    def __init__(self, evaluator: seal.Evaluator, layout: CiphertextLayout, n_chunks: int) -> None:
        self._evaluator = evaluator
        self._layout = layout
        self._n_chunks = n_chunks
        self._sums: list[seal.Ciphertext] = []
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, chunks: Sequence[object]) -> None:
        if len(chunks) != self._n_chunks or not all(isinstance(c, seal.Ciphertext) for c in chunks):
            raise UpdateRejected(f"expected {self._n_chunks} validated ciphertexts")
        if not self._sums:
            self._sums = list(chunks)  # type: ignore[arg-type]
        else:
            for total, chunk in zip(self._sums, chunks, strict=True):
                self._evaluator.add_inplace(total, chunk)
        self._count += 1

    def result(self, offsets: Sequence[np.ndarray] | None = None) -> list[bytes]:
        if not self._sums:
            raise CryptoError("no update has been added; there is nothing to aggregate")
        if offsets is not None and len(offsets) != len(self._sums):
            raise CryptoError(f"{len(offsets)} mask offsets for {len(self._sums)} ciphertexts")
        n, modulus = self._layout.poly_modulus_degree, self._layout.modulus
        out = []
        for index, total in enumerate(self._sums):
            coeffs = read_coefficients(total, 2 * n)
            c0 = coeffs[:n] if offsets is None else sub_mod(coeffs[:n], offsets[index], modulus)
            out.append(self._layout.encode_aggregate(c0, coeffs[n:]))
        return out
