"""Moving data in and out of SEAL objects (``tenseal.sealapi``): contexts, files, coefficients.

``sealapi`` saves and loads only through file paths, so every transfer goes through a private
scratch directory (mode 0700, removed when its owner is garbage-collected). Ciphertexts are
written here in SEAL's own uncompressed format, built from fields this library has already
validated; SEAL's loader then checks them again (``is_valid_for``) before anything uses them.
Nothing in this module decrypts.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.errors import CryptoError

SEAL_MAGIC = 0xA15E
SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, -, size
COMPRESSION_NONE = 0
PRNG_BLAKE2XB = 1
SEED_BYTES = 64  # SEAL's prng_seed_type: 8 x uint64
# Ciphertext members: parms_id (4 x u64), is_ntt_form (u8), size, N, coeff_modulus_size (u64),
# scale (f64), correction_factor (u64).
_CT_MEMBERS = struct.Struct("<4QBQQQdQ")


def make_context(params: CKKSParams) -> seal.SEALContext:
    """A SEAL CKKS context at 128-bit security; SEAL itself re-checks the parameter table."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    try:
        moduli = seal.CoeffModulus.Create(
            params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)
        )
        parms.set_coeff_modulus(moduli)
        context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    except (ValueError, RuntimeError) as exc:
        raise CryptoError(f"SEAL cannot use CKKS parameters {params.to_dict()}: {exc}") from None
    if not context.parameters_set():
        raise CryptoError(
            f"SEAL rejects CKKS parameters {params.to_dict()}: {context.parameters_error_message()}"
        )
    return context


def data_modulus(context: seal.SEALContext) -> int:
    """The data prime ``q0``: the only modulus of ciphertexts at the first data level."""
    moduli = context.first_context_data().parms().coeff_modulus()
    if len(moduli) != 1:
        raise CryptoError("expected exactly one data prime below the special prime")
    return int(moduli[0].value())


class Scratch:
    """A private temporary directory for SEAL's path-only save/load; not thread-safe."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="secure_fedsa_"))  # created with mode 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def save(self, obj: Any) -> bytes:
        """Bytes of ``obj.save(path)`` for any SEAL object or Serializable."""
        target = self.path / "out.bin"
        obj.save(str(target))
        try:
            return target.read_bytes()
        finally:
            target.unlink()

    def load(self, factory: Callable[[], Any], context: seal.SEALContext, data: bytes) -> Any:
        """``factory()`` loaded from ``data`` under ``context`` (SEAL validates on load)."""
        target = self.path / "in.bin"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            obj = factory()
            obj.load(context, str(target))
            return obj
        finally:
            target.unlink(missing_ok=True)

    def close(self) -> None:
        self._cleanup()


@functools.cache
def seal_version() -> tuple[int, int]:
    """(major, minor) of the SEAL library inside tenseal, read from a header it writes."""
    scratch = Scratch()
    try:
        header = scratch.save(seal.Plaintext())[: SEAL_HEADER.size]
    finally:
        scratch.close()
    magic, _, major, minor, _, _, _ = SEAL_HEADER.unpack(header)
    if magic != SEAL_MAGIC:
        raise CryptoError("unexpected SEAL serialization header in this tenseal build")
    return major, minor


def _sealed(body: bytes) -> bytes:
    major, minor = seal_version()
    size = SEAL_HEADER.size + len(body)
    header = SEAL_HEADER.pack(SEAL_MAGIC, SEAL_HEADER.size, major, minor, COMPRESSION_NONE, 0, size)
    return header + body


def ciphertext_file(
    *,
    parms_id: list[int],
    ntt_form: bool,
    poly_modulus_degree: int,
    scale: float,
    coeffs: np.ndarray,
    seed: bytes | None = None,
) -> bytes:
    """A size-2 ciphertext at one prime in SEAL's uncompressed format.

    ``coeffs`` holds ``c0`` then ``c1`` (``2N`` values), or ``c0`` alone when ``seed`` is given:
    SEAL then expands ``c1`` from the seed with its own Blake2xb generator on load.
    """
    expected = poly_modulus_degree if seed is not None else 2 * poly_modulus_degree
    if len(coeffs) != expected or (seed is not None and len(seed) != SEED_BYTES):
        raise CryptoError("internal error: ciphertext data has the wrong shape")
    members = _CT_MEMBERS.pack(*parms_id, int(ntt_form), 2, poly_modulus_degree, 1, scale, 1)
    data = struct.pack("<Q", len(coeffs)) + np.ascontiguousarray(coeffs, dtype="<u8").tobytes()
    body = members + _sealed(data)
    if seed is not None:
        body += _sealed(bytes([PRNG_BLAKE2XB]) + seed)
    return _sealed(body)


def read_coefficients(ciphertext: seal.Ciphertext, count: int) -> np.ndarray:
    """The first ``count`` stored coefficients of a ciphertext (``c0`` first) as uint64."""
    array = ciphertext.dyn_array()
    return np.fromiter((array.at(i) for i in range(count)), dtype=np.uint64, count=count)
