"""The compact ciphertext chunk: one CKKS ciphertext at the data prime, as this library sends it.

Two kinds share one fixed-size header::

    magic "SFCK" | version u8 | kind u8 | size u8 | drop0 u8 | drop1 u8 | reserved u8
    | N u32 | parms_id 4 x u64 | scale f64                                  (54 bytes, LE)

- ``UPLOAD`` (client to server): a seeded symmetric ciphertext: SEAL's 64-byte seed for ``c1``,
  then ``c0`` rounded by ``drop0`` bits and bit-packed. About 6.8 bytes per float at default
  parameters, against 8.05 for SEAL's own seeded format.
- ``AGGREGATE`` (server to clients): a sum of uploads is no longer seeded: ``c0`` rounded by
  ``drop0`` bits and ``c1`` (not rounded: its error would be multiplied by the secret key).

Coefficients are in coefficient (not NTT) form so that rounding them adds only a small error.
Every field must equal the value the layout expects; anything else is :class:`UpdateRejected`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from secure_fedsa.crypto import packing
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.crypto.seal_io import SEED_BYTES, data_modulus
from secure_fedsa.errors import UpdateRejected

CHUNK_MAGIC = b"SFCK"
CHUNK_VERSION = 1
KIND_UPLOAD = 1
KIND_AGGREGATE = 2
CIPHERTEXT_SIZE = 2
_HEADER = struct.Struct("<4sBBBBBBI4Qd")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class CiphertextLayout:
    """Everything needed to write and strictly read chunks for one SEAL context."""

    poly_modulus_degree: int
    parms_id: tuple[int, int, int, int]
    scale: float
    modulus: int
    drop: int

    @classmethod
    def for_context(cls, context: seal.SEALContext, params: CKKSParams) -> CiphertextLayout:
        return cls(
            poly_modulus_degree=params.poly_modulus_degree,
            parms_id=tuple(context.first_parms_id()),
            scale=params.scale,
            modulus=data_modulus(context),
            drop=params.drop_bits,
        )

    def chunk_count(self, n_values: int) -> int:
        """Ciphertexts for an update of ``n_values`` values (the weight is not sent)."""
        return packing.chunk_count(n_values, self.poly_modulus_degree)

    @property
    def width(self) -> int:
        """Bits per rounded ``c0`` coefficient."""
        return packing.coefficient_width(self.modulus, self.drop)

    @property
    def full_width(self) -> int:
        """Bits per unrounded coefficient (``c1`` of an aggregate)."""
        return packing.coefficient_width(self.modulus, 0)

    @property
    def upload_bytes(self) -> int:
        n = self.poly_modulus_degree
        return HEADER_BYTES + SEED_BYTES + packing.packed_size(n, self.width)

    @property
    def aggregate_bytes(self) -> int:
        n = self.poly_modulus_degree
        return (
            HEADER_BYTES
            + packing.packed_size(n, self.width)
            + packing.packed_size(n, self.full_width)
        )

    # -- writing ------------------------------------------------------------------------------
    def _header(self, kind: int, drop1: int) -> bytes:
        return _HEADER.pack(
            CHUNK_MAGIC,
            CHUNK_VERSION,
            kind,
            CIPHERTEXT_SIZE,
            self.drop,
            drop1,
            0,
            self.poly_modulus_degree,
            *self.parms_id,
            self.scale,
        )

    def encode_upload(self, seed: bytes, c0: np.ndarray) -> bytes:
        """Chunk for a seeded ciphertext; ``c0`` in coefficient form, not yet rounded."""
        rounded = packing.round_coefficients(c0, self.drop, self.modulus)
        return self._header(KIND_UPLOAD, 0) + seed + packing.pack_uints(rounded, self.width)

    def encode_aggregate(self, c0: np.ndarray, c1: np.ndarray) -> bytes:
        """Chunk for a full ciphertext; both polynomials in coefficient form."""
        rounded = packing.round_coefficients(c0, self.drop, self.modulus)
        return (
            self._header(KIND_AGGREGATE, 0)
            + packing.pack_uints(rounded, self.width)
            + packing.pack_uints(np.asarray(c1, dtype=np.uint64), self.full_width)
        )

    # -- strict reading -----------------------------------------------------------------------
    def parse_upload(self, data: bytes) -> tuple[bytes, np.ndarray]:
        """(seed, c0) of an upload chunk; c0 restored to the coefficient range."""
        self._check_header(data, KIND_UPLOAD, self.upload_bytes)
        start = HEADER_BYTES + SEED_BYTES
        seed = bytes(data[HEADER_BYTES:start])
        return seed, self._coefficients(data[start:], self.drop, self.width)

    def parse_aggregate(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(c0, c1) of an aggregate chunk, in the coefficient range."""
        self._check_header(data, KIND_AGGREGATE, self.aggregate_bytes)
        split = HEADER_BYTES + packing.packed_size(self.poly_modulus_degree, self.width)
        c0 = self._coefficients(data[HEADER_BYTES:split], self.drop, self.width)
        c1 = self._coefficients(data[split:], 0, self.full_width)
        return c0, c1

    def _check_header(self, data: bytes, kind: int, size: int) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UpdateRejected("malformed chunk: not bytes")
        if len(data) != size:
            raise UpdateRejected(f"malformed chunk: {len(data)} bytes, expected {size}")
        fields = _HEADER.unpack_from(data)
        magic, version, got_kind, ct_size, drop0, drop1, reserved, n = fields[:8]
        parms_id, scale = tuple(fields[8:12]), fields[12]
        if magic != CHUNK_MAGIC or version != CHUNK_VERSION or reserved != 0:
            raise UpdateRejected("malformed chunk: bad magic, version or reserved byte")
        if got_kind != kind:
            raise UpdateRejected(f"malformed chunk: kind {got_kind}, expected {kind}")
        if ct_size != CIPHERTEXT_SIZE:
            raise UpdateRejected(f"ciphertext size {ct_size}, expected {CIPHERTEXT_SIZE}")
        if n != self.poly_modulus_degree or drop0 != self.drop or drop1 != 0:
            raise UpdateRejected("ciphertext layout (degree or rounding) does not match the keys")
        if parms_id != self.parms_id:
            raise UpdateRejected("ciphertext parms_id does not match the key bundle's parameters")
        if scale != self.scale:
            raise UpdateRejected(f"ciphertext scale {scale!r} does not match 2^scale_bits")

    def _coefficients(self, data: bytes, drop: int, width: int) -> np.ndarray:
        n = self.poly_modulus_degree
        if not packing.padding_is_zero(data, n, width):
            raise UpdateRejected("malformed chunk: nonzero padding bits")
        values = packing.unpack_uints(bytes(data), n, width)
        if values.size and int(values.max()) >= packing.rounded_limit(drop, self.modulus):
            raise UpdateRejected("ciphertext coefficient outside the modulus")
        return packing.restore_coefficients(values, drop)
