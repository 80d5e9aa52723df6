"""The codec interface: how an update becomes chunks of bytes, is summed, and comes back.

Two sides, two protocols, so that the server never holds an object able to decrypt:

- :class:`ClientCodec` (holds the secret key, or nothing for plaintext): ``encrypt`` packs
  ``weight * values`` into chunks; ``decrypt_sum`` turns aggregate chunks back into the sum of
  ``weight * values``. The weights are not sent: each is fixed in the signed roster (client
  sizes are public), and every client divides by the roster weights of the contributors.
- :class:`ServerCodec` (built from ``server.keys`` alone): ``validate_chunk`` checks one upload
  chunk and returns it ready to add; an :class:`Accumulator` adds validated updates chunk by
  chunk (ciphertext + ciphertext only) and serializes the sum.

Implementations: ``ckks_client.CKKSClientCodec``, ``ckks_server.CKKSServerCodec`` and
``plaintext.PlaintextCodec`` (both sides, for ``--no-encryption`` runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

# ``mask(chunk, count, modulus)``: what secure aggregation adds to a chunk's c0 coefficients
ChunkMask = Callable[[int, int, int], np.ndarray]


@runtime_checkable
class ClientCodec(Protocol):
    fingerprint: str
    encrypted: bool
    value_bound: float | None  # largest magnitude one client may encode; None: no limit

    def update_chunk_sizes(self, n_values: int) -> list[int]: ...

    def aggregate_chunk_sizes(self, n_values: int) -> list[int]: ...

    def encrypt(
        self, values: np.ndarray, weight: float, mask: ChunkMask | None = None
    ) -> list[bytes]: ...

    def decrypt_sum(self, chunks: Sequence[bytes], n_values: int) -> np.ndarray: ...


class Accumulator(Protocol):
    @property
    def count(self) -> int:
        """Updates added so far."""
        ...

    def add(self, chunks: Sequence[object]) -> None:
        """Add one update's validated chunks (from ``ServerCodec.validate_chunk``), in order."""
        ...

    def result(self, offsets: Sequence[np.ndarray] | None = None) -> list[bytes]:
        """The running sum, serialized as aggregate chunks; ``offsets`` (one per chunk) are
        subtracted from the sum's c0 first (the masks secure aggregation removes)."""
        ...


@runtime_checkable
class ServerCodec(Protocol):
    fingerprint: str
    encrypted: bool
    max_clients: int | None  # None: no overflow limit (plaintext)

    def update_chunk_sizes(self, n_values: int) -> list[int]: ...

    def aggregate_chunk_sizes(self, n_values: int) -> list[int]: ...

    def validate_chunk(self, data: bytes) -> object:
        """The chunk, checked and ready to add; raises UpdateRejected otherwise."""
        ...

    def new_accumulator(self, n_values: int) -> Accumulator: ...
