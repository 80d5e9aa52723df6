"""The plaintext codec for ``--no-encryption`` runs: same interface, float64 little-endian bytes.

It serves both sides (there is nothing secret). The server sees every update in the clear;
configurations that choose it must say so loudly. Like the CKKS codec it sends ``weight * values``
only (the weights are in the signed roster); an empty update is sent as one zero float.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secure_fedsa.crypto import packing
from secure_fedsa.crypto.wire import PLAINTEXT_FINGERPRINT
from secure_fedsa.errors import CryptoError, UpdateRejected

__all__ = ["PLAINTEXT_FINGERPRINT", "PlaintextCodec", "PlaintextAccumulator"]
FLOATS_PER_CHUNK = 4096
_DTYPE = np.dtype("<f8")


class PlaintextCodec:
    """``ClientCodec`` and ``ServerCodec`` at once, without any encryption."""

    encrypted = False
    fingerprint = PLAINTEXT_FINGERPRINT
    max_clients: int | None = None
    value_bound: float | None = None  # no overflow limit: plaintext floats

    def __repr__(self) -> str:
        return "PlaintextCodec()"

    def update_chunk_sizes(self, n_values: int) -> list[int]:
        total = max(n_values, 1)
        starts = range(0, total, FLOATS_PER_CHUNK)
        return [min(FLOATS_PER_CHUNK, total - i) * _DTYPE.itemsize for i in starts]

    def aggregate_chunk_sizes(self, n_values: int) -> list[int]:
        return self.update_chunk_sizes(n_values)

    def encrypt(self, values: np.ndarray, weight: float, mask: object = None) -> list[bytes]:
        if mask is not None:
            raise CryptoError("masks are added to ciphertexts: secure aggregation needs encryption")
        floats = packing.update_floats(values, weight, bound=None)
        return _split(floats if floats.size else np.zeros(1))

    def validate_chunk(self, data: bytes) -> np.ndarray:
        if len(data) % _DTYPE.itemsize or not 0 < len(data) <= FLOATS_PER_CHUNK * _DTYPE.itemsize:
            raise UpdateRejected("malformed plaintext chunk: wrong length")
        floats = np.frombuffer(data, dtype=_DTYPE).astype(np.float64)
        if not np.all(np.isfinite(floats)):
            raise UpdateRejected("plaintext chunk contains NaN or infinite values")
        return floats

    def new_accumulator(self, n_values: int) -> PlaintextAccumulator:
        return PlaintextAccumulator(max(n_values, 1))

    def decrypt_sum(self, chunks: Sequence[bytes], n_values: int) -> np.ndarray:
        if [len(c) for c in chunks] != self.aggregate_chunk_sizes(n_values):
            raise UpdateRejected("aggregate has the wrong number or size of chunks")
        return np.concatenate([self.validate_chunk(c) for c in chunks])[:n_values]


class PlaintextAccumulator:
    def __init__(self, n_floats: int) -> None:
        self._sum = np.zeros(n_floats, dtype=np.float64)
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, chunks: Sequence[object]) -> None:
        if not all(isinstance(c, np.ndarray) for c in chunks):
            raise UpdateRejected("expected validated plaintext chunks")
        floats = np.concatenate(chunks)  # type: ignore[arg-type]
        if floats.shape != self._sum.shape:
            raise UpdateRejected("plaintext update has the wrong number of values")
        self._sum += floats
        self._count += 1

    def result(self, offsets: object = None) -> list[bytes]:
        if offsets is not None:
            raise CryptoError("masks are added to ciphertexts: secure aggregation needs encryption")
        if self._count == 0:
            raise CryptoError("no update has been added; there is nothing to aggregate")
        return _split(self._sum)


def _split(floats: np.ndarray) -> list[bytes]:
    data = floats.astype(_DTYPE)
    return [data[i : i + FLOATS_PER_CHUNK].tobytes() for i in range(0, len(data), FLOATS_PER_CHUNK)]
