"""CKKS parameters: security table, serialization, overflow bound, coefficient packing."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.crypto import packing
from secure_fedsa.crypto.params import MAX_MODULUS_BITS, CKKSParams
from secure_fedsa.crypto.seal_io import data_modulus, make_context
from secure_fedsa.errors import CryptoError

pytestmark = pytest.mark.unit


def test_defaults_are_128_bit_and_give_the_documented_bound():
    p = CKKSParams()
    assert (p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.scale_bits) == (4096, (60, 49), 40)
    assert p.security_level() == 128
    assert p.sum_bound == 2.0**18
    assert p.value_bound(64) == 2.0**18 / 64
    assert p.floats_per_chunk == 4096


@pytest.mark.parametrize("n, limit", sorted(MAX_MODULUS_BITS[128].items()))
def test_table_matches_seal(n, limit):
    assert seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128) == limit


@pytest.mark.parametrize(
    "n, sizes, ok",
    [
        (2048, (30, 24), True),
        (2048, (30, 25), False),
        (4096, (60, 49), True),
        (4096, (60, 50), False),
        (1024, (20, 20), False),
    ],
)
def test_table_limits_are_enforced(n, sizes, ok):
    if ok:
        assert CKKSParams(n, sizes, scale_bits=sizes[0] - 8).security_level() >= 128
        make_context(CKKSParams(n, sizes, scale_bits=sizes[0] - 8))
    else:
        with pytest.raises(CryptoError, match="128-bit"):
            CKKSParams(n, sizes, scale_bits=20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poly_modulus_degree": 3000},
        {"poly_modulus_degree": 512},
        {"coeff_mod_bit_sizes": (60,)},
        {"coeff_mod_bit_sizes": (60, 40, 40)},
        {"coeff_mod_bit_sizes": (61, 40)},
        {"coeff_mod_bit_sizes": (60, 50)},  # 110 bits > 109
        {"scale_bits": 58},  # no room below q0
        {"scale_bits": 10},
        {"scale_bits": 40.0},
    ],
)
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(CryptoError):
        CKKSParams(**kwargs)


def test_smaller_modulus_reports_higher_security():
    assert CKKSParams(4096, (50, 25), scale_bits=30).security_level() == 192
    assert CKKSParams(8192, (60, 49), scale_bits=40).security_level() == 256


def test_dict_round_trip_and_strictness():
    p = CKKSParams()
    assert CKKSParams.from_dict(p.to_dict()) == p
    with pytest.raises(CryptoError):
        CKKSParams.from_dict({**p.to_dict(), "extra": 1})
    with pytest.raises(CryptoError):
        CKKSParams.from_dict({**p.to_dict(), "coeff_mod_bit_sizes": "60,49"})


def test_value_bound_needs_positive_integer_clients():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(CryptoError):
            CKKSParams().value_bound(bad)


def test_seal_agrees_with_the_table():
    context = make_context(CKKSParams())
    assert data_modulus(context).bit_length() == 60


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.lists(st.integers(0, 2**60 - 1), min_size=1, max_size=50))
def test_bit_packing_round_trips(width, raw):
    values = np.array([v % (1 << width) for v in raw], dtype=np.uint64)
    data = packing.pack_uints(values, width)
    assert len(data) == packing.packed_size(len(values), width)
    assert packing.padding_is_zero(data, len(values), width)
    assert np.array_equal(packing.unpack_uints(data, len(values), width), values)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 12), st.lists(st.integers(0, 2**40), min_size=1, max_size=50))
def test_rounding_error_is_at_most_half_a_step_modulo_q(drop, raw):
    q = (1 << 40) - 87  # any odd modulus
    x = np.array([v % q for v in raw], dtype=np.uint64)
    y = packing.round_coefficients(x, drop, q)
    assert int(y.max()) < packing.rounded_limit(drop, q)
    assert int(y.max()).bit_length() <= packing.coefficient_width(q, drop)
    back = packing.restore_coefficients(y, drop)
    diff = (back.astype(object) - x.astype(object)) % q
    centred = [min(d, q - d) for d in diff]
    assert max(centred) <= (1 << drop) // 2


def test_slots_round_trip_pairs_floats_as_real_and_imaginary():
    floats = np.arange(7, dtype=np.float64)
    slots = packing.to_slots(floats, 4)
    assert slots.shape == (2, 2)
    assert slots[0, 0] == 0 + 1j and slots[1, 1] == 6 + 0j
    assert np.array_equal(packing.from_slots(slots, 7), floats)
