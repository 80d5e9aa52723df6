"""CKKS encryption parameters: validated against the homomorphic-encryption security standard.

The server only adds ciphertexts, so one data prime ``q0`` suffices; the second prime is SEAL's
special (key-level) prime. Ciphertexts therefore live modulo ``q0`` alone, which is what keeps
them small.

CKKS overflow is silent: a sum whose plaintext coefficients pass ``q0 / 2`` wraps around and
decrypts to garbage without any error. :meth:`CKKSParams.value_bound` gives the largest
``|weight * value|`` one client may send so that the sum over ``max_clients`` clients stays below
``2^(q0_bits - scale_bits - 2)``; the client codec refuses anything larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secure_fedsa.errors import CryptoError

# Largest total coefficient-modulus bit count per ring degree at each classical security level
# (HomomorphicEncryption.org standard, ternary secret; the same table SEAL enforces for 128 bits).
MAX_MODULUS_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MIN_SECURITY_BITS = 128
# SEAL accepts primes of at most 60 bits; below 20 bits there are too few NTT-friendly primes.
MIN_PRIME_BITS = 20
MAX_PRIME_BITS = 60
MIN_SCALE_BITS = 20
# Ciphertext coefficients are rounded to 2^(scale_bits - PRECISION_BITS) before they are sent:
# the rounding error stays about 2^-PRECISION_BITS of one unit, far below the 1e-7 target.
PRECISION_BITS = 34

_FIELDS = ("poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits")


@dataclass(frozen=True)
class CKKSParams:
    """Ring degree, prime sizes (data prime first, special prime last) and scale, as bits."""

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 49)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        _validate(self)

    # -- derived quantities -------------------------------------------------------------------
    @property
    def q0_bits(self) -> int:
        """Bits of the data prime: the modulus every ciphertext the server sees lives under."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def total_modulus_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def floats_per_chunk(self) -> int:
        """Real values per ciphertext: real and imaginary halves of every slot are used."""
        return self.poly_modulus_degree

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def sum_bound(self) -> float:
        """Largest safe magnitude of any summed slot component: 2^(q0_bits - scale_bits - 2)."""
        return float(2 ** (self.q0_bits - self.scale_bits - 2))

    @property
    def drop_bits(self) -> int:
        """Low bits of each ``c0`` coefficient rounded away before sending (below the noise)."""
        return max(0, self.scale_bits - PRECISION_BITS)

    def value_bound(self, max_clients: int) -> float:
        """Largest ``|weight * value|`` one of ``max_clients`` clients may send."""
        if type(max_clients) is not int or max_clients < 1:
            raise CryptoError(f"max_clients must be a positive integer, got {max_clients!r}")
        return self.sum_bound / max_clients

    def security_level(self) -> int:
        """Highest standard security level (128, 192 or 256 bits) these parameters meet."""
        n, bits = self.poly_modulus_degree, self.total_modulus_bits
        return max(level for level, table in MAX_MODULUS_BITS.items() if bits <= table[n])

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CKKSParams:
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            raise CryptoError(f"CKKS parameters must be an object with exactly the keys {_FIELDS}")
        sizes = data["coeff_mod_bit_sizes"]
        if not isinstance(sizes, list | tuple):
            raise CryptoError("coeff_mod_bit_sizes must be a list of integers")
        return cls(
            poly_modulus_degree=data["poly_modulus_degree"],
            coeff_mod_bit_sizes=tuple(sizes),
            scale_bits=data["scale_bits"],
        )


def _is_int(value: object) -> bool:
    return type(value) is int


def _validate(p: CKKSParams) -> None:
    table = MAX_MODULUS_BITS[MIN_SECURITY_BITS]
    n = p.poly_modulus_degree
    if not _is_int(n) or n not in table:
        raise CryptoError(f"poly_modulus_degree must be one of {sorted(table)}, got {n!r}")
    sizes = p.coeff_mod_bit_sizes
    if len(sizes) != 2 or not all(_is_int(b) for b in sizes):
        raise CryptoError(
            "coeff_mod_bit_sizes must be two integers (data prime, special prime): "
            f"the server only adds, so one data prime suffices; got {sizes!r}"
        )
    if not all(MIN_PRIME_BITS <= b <= MAX_PRIME_BITS for b in sizes):
        raise CryptoError(
            f"each prime must have {MIN_PRIME_BITS}..{MAX_PRIME_BITS} bits, got {sizes!r}"
        )
    if p.total_modulus_bits > table[n]:
        raise CryptoError(
            f"{p.total_modulus_bits} modulus bits at poly_modulus_degree={n} is below 128-bit "
            f"security (at most {table[n]} bits allowed); use fewer or smaller primes"
        )
    if not _is_int(p.scale_bits) or p.scale_bits < MIN_SCALE_BITS:
        raise CryptoError(f"scale_bits must be an integer >= {MIN_SCALE_BITS}")
    if p.q0_bits - p.scale_bits - 2 < 1:
        raise CryptoError(
            f"scale_bits={p.scale_bits} leaves no room below the {p.q0_bits}-bit data prime: "
            "need q0_bits - scale_bits - 2 >= 1 or every sum overflows"
        )
