"""Pure functions that lay values out in ciphertext slots and squeeze coefficients into bytes.

Layout: a client sends ``weight * values`` and nothing else: its weight is fixed in the signed
roster, so every client knows the divisor without it (:mod:`secure_fedsa.site.aggregate_check`).
Floats are taken two at a time as ``real + 1j * imag`` of one complex CKKS slot,
``floats_per_chunk`` floats per ciphertext; the last ciphertext is padded with zeros.

Coefficient compression: a coefficient ``x`` in ``[0, q)`` is sent as ``round(x / 2^d)``, which
needs ``bits(q) - d`` bits. Rounding a public ciphertext is post-processing: it cannot weaken the
encryption; it only adds an error of at most ``2^(d-1)`` per coefficient, far below the scale.
"""

from __future__ import annotations

import math

import numpy as np

from secure_fedsa.errors import CryptoError


def chunk_count(n_floats: int, floats_per_chunk: int) -> int:
    """Ciphertexts needed for ``n_floats`` floats (at least one)."""
    return max(1, math.ceil(n_floats / floats_per_chunk))


def update_floats(values: np.ndarray, weight: float, *, bound: float | None) -> np.ndarray:
    """The floats a client sends: ``weight * values`` (the weight itself is not sent).

    Refuses (CryptoError) non-finite input, a weight that is not positive, and, when ``bound`` is
    given, any float above it in magnitude: CKKS would overflow silently.
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "fiu":
        raise CryptoError("values must be a 1-D array of real numbers")
    if not isinstance(weight, int | float | np.floating | np.integer) or isinstance(weight, bool):
        raise CryptoError("weight must be a real number")
    weight = float(weight)
    if not math.isfinite(weight) or weight <= 0:
        raise CryptoError(f"weight must be finite and positive, got {weight!r}")
    floats = weight * values.astype(np.float64)
    if not np.all(np.isfinite(floats)):
        raise CryptoError("update contains NaN or infinite values; refusing to encode it")
    largest = float(np.max(np.abs(floats))) if floats.size else 0.0
    if bound is not None and largest > bound:
        raise CryptoError(
            f"update too large for CKKS: max |weight * value| is {largest:.6g}, above "
            f"the overflow bound {bound:.6g} (2^(q0_bits - scale_bits - 2) / max_clients). CKKS "
            "overflow is silent, so nothing was encrypted. Clip the update, use smaller weights "
            "(e.g. thousands of examples rather than examples), or create keys with a smaller "
            "max_clients."
        )
    return floats


def to_slots(floats: np.ndarray, floats_per_chunk: int) -> np.ndarray:
    """Complex slot matrix ``(chunks, floats_per_chunk // 2)`` holding ``floats`` in order."""
    n_chunks = chunk_count(len(floats), floats_per_chunk)
    padded = np.zeros(n_chunks * floats_per_chunk, dtype=np.float64)
    padded[: len(floats)] = floats
    pairs = padded.reshape(n_chunks, floats_per_chunk // 2, 2)
    return pairs[..., 0] + 1j * pairs[..., 1]


def from_slots(slots: np.ndarray, n_floats: int) -> np.ndarray:
    """Inverse of :func:`to_slots`: the first ``n_floats`` floats of a complex slot matrix."""
    slots = np.asarray(slots, dtype=np.complex128)
    pairs = np.stack([slots.real, slots.imag], axis=-1)
    return pairs.reshape(-1)[:n_floats].copy()


def packed_size(count: int, width: int) -> int:
    """Bytes needed for ``count`` unsigned integers of ``width`` bits each."""
    return (count * width + 7) // 8


def pack_uints(values: np.ndarray, width: int) -> bytes:
    """Concatenate the low ``width`` bits of each uint64, little-endian bit order."""
    words = np.ascontiguousarray(values, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), bitorder="little").reshape(len(words), 64)
    return np.packbits(bits[:, :width].reshape(-1), bitorder="little").tobytes()


def unpack_uints(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uints`. ``data`` must be exactly ``packed_size(count, width)``."""
    if len(data) != packed_size(count, width):
        raise ValueError("packed data has the wrong length")
    raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    bits = np.zeros((count, 64), dtype=np.uint8)
    bits[:, :width] = raw[: count * width].reshape(count, width)
    return np.packbits(bits.reshape(-1), bitorder="little").view("<u8").astype(np.uint64)


def padding_is_zero(data: bytes, count: int, width: int) -> bool:
    """Whether the unused bits after the last packed integer are zero (canonical encoding)."""
    used = count * width
    if used % 8 == 0:
        return True
    return (data[-1] >> (used % 8)) == 0


def round_coefficients(coeffs: np.ndarray, drop: int, modulus: int) -> np.ndarray:
    """``round(x / 2^drop)`` for coefficients in ``[0, modulus)``; values that round up to the
    modulus wrap to 0 (still within ``2^(drop-1)`` of ``x`` modulo ``modulus``)."""
    coeffs = np.asarray(coeffs, dtype=np.uint64)
    if drop == 0:
        return coeffs.copy()
    shift = np.uint64(drop)
    rounded = (coeffs + np.uint64(1 << (drop - 1))) >> shift
    rounded[(rounded << shift) >= np.uint64(modulus)] = 0
    return rounded


def rounded_limit(drop: int, modulus: int) -> int:
    """Exclusive upper bound of valid rounded coefficients: ``y * 2^drop < modulus``."""
    return -(-modulus // (1 << drop))


def restore_coefficients(rounded: np.ndarray, drop: int) -> np.ndarray:
    """Back to the coefficient range: ``y * 2^drop`` (callers check ``y < rounded_limit``)."""
    return np.asarray(rounded, dtype=np.uint64) << np.uint64(drop)


def coefficient_width(modulus: int, drop: int) -> int:
    """Bits needed per rounded coefficient."""
    return max(1, (rounded_limit(drop, modulus) - 1).bit_length())


def add_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """``(a + b) mod modulus`` for uint64 arrays already reduced (modulus < 2^63)."""
    return (a + b) % np.uint64(modulus)


def sub_mod(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """``(a - b) mod modulus`` for uint64 arrays already reduced (modulus < 2^63)."""
    return (a + (np.uint64(modulus) - b)) % np.uint64(modulus)
