"""Randomness that protects privacy: DP noise and Poisson sampling, from the OS CSPRNG.

DP-SGD is private only if nobody can predict its noise or its batches. Anything derived from
``--seed`` (or any other value written to the run directory) is predictable by whoever holds the
run's files, so the noise and the sampling of every DP step come from :class:`OSRandom`: fresh
bytes of the operating system's cryptographically secure generator (``os.urandom``, i.e.
``getrandom(2)`` on Linux), turned into numbers in float64 by pure functions below. Nothing of it
is seeded, stored or logged, and every call draws new bytes, so every round (and every retry of a
round after a crash) gets fresh noise.

Gaussian noise uses the construction of Opacus' ``secure_mode`` (Holohan & Braghin 2021,
"Secure random sampling in differential privacy", section 5.1): each value is the sum of four
independent N(0, σ²) draws divided by 2, which has the same N(0, σ²) law but hides the low-order
bits of any single draw from floating-point reconstruction attacks (Jin et al. 2021). Each draw
comes from the Box-Muller transform of two 53-bit uniforms in float64. Opacus' own secure mode
needs ``torchcsprng``, which is unmaintained; this module needs nothing but the OS.

:class:`SeededTestRandom` exists for tests only (reproducible noise): no configuration field,
command-line flag or Flower run-config key selects it, the ledger records its name on every round
it drives, and the audit fails any run that used it.
"""

from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np
import torch

__all__ = [
    "OS_CSPRNG",
    "OSRandom",
    "RandomSource",
    "SeededTestRandom",
    "gaussian",
    "poisson_indices",
    "uniforms",
]

# The name the ledger records for the only source a private run may use.
OS_CSPRNG = "os-csprng"
SEEDED_TEST_ONLY = "seeded-test-only"
# Sum of GAUSSIAN_TERMS draws of std σ, divided by sqrt(GAUSSIAN_TERMS) (= 2): Opacus' secure mode.
GAUSSIAN_TERMS = 4
_UNIT = 2.0**-53


class RandomSource(Protocol):
    """Where the bytes of DP noise and sampling come from."""

    name: str

    def random_bytes(self, count: int) -> bytes: ...


class OSRandom:
    """Fresh bytes from the operating system's CSPRNG on every call. Nothing to seed or save."""

    name = OS_CSPRNG

    def random_bytes(self, count: int) -> bytes:
        return os.urandom(count)

    def __repr__(self) -> str:
        return "OSRandom()"


class SeededTestRandom:
    """Reproducible bytes from a seed. FOR TESTS ONLY: a run using it is not DP against anyone
    who knows the seed. The ledger records ``seeded-test-only`` and the audit fails such runs."""

    name = SEEDED_TEST_ONLY

    def __init__(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def random_bytes(self, count: int) -> bytes:
        return self._rng.bytes(count)

    def __repr__(self) -> str:
        return "SeededTestRandom(<seed>)"


# --------------------------------------------------------------------------- pure functions
def uniforms(source: RandomSource, count: int) -> np.ndarray:
    """``count`` independent uniforms on the open interval (0, 1), 53 random bits each."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    words = np.frombuffer(source.random_bytes(8 * count), dtype=np.uint64)
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * _UNIT


def _standard_normals(source: RandomSource, count: int) -> np.ndarray:
    """``count`` N(0, 1) draws in float64 (Box-Muller: two uniforms give two normals)."""
    pairs = (count + 1) // 2
    u = uniforms(source, 2 * pairs)
    radius = np.sqrt(-2.0 * np.log(u[:pairs]))
    angle = (2.0 * math.pi) * u[pairs:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]


def gaussian(
    source: RandomSource,
    shape: tuple[int, ...] | torch.Size,
    std: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, std²) noise of ``shape``: a sum of four float64 draws / 2, then cast to ``dtype``."""
    if not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"std must be finite and >= 0, got {std}")
    count = math.prod(shape)
    if std == 0 or count == 0:
        return torch.zeros(tuple(shape), dtype=dtype)
    draws = _standard_normals(source, GAUSSIAN_TERMS * count).reshape(GAUSSIAN_TERMS, count)
    values = draws.sum(axis=0) * (std / math.sqrt(GAUSSIAN_TERMS))
    return torch.from_numpy(values).reshape(tuple(shape)).to(dtype)


def poisson_indices(source: RandomSource, n: int, rate: float) -> torch.Tensor:
    """Poisson sampling: each of ``n`` records is in the batch independently with prob. ``rate``."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    mask = uniforms(source, n) < rate
    return torch.from_numpy(np.flatnonzero(mask)).to(torch.long)
