"""Each DP hazard fires when it should and stays quiet when it should not."""

from __future__ import annotations

import pytest

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.hazards import INSECURE_RNG_NOTE, check_dp_setup

NAMES = ["layer.0.lora_A.weight", "layer.0.lora_B.weight", "head.weight", "head.bias"]

# A setup with no hazard at all.
SAFE = {
    "dataset_size": 3200,
    "batch_size": 128,
    "sample_rate": 0.04,
    "delta": 1e-5,
    "noise_multiplier": 1.0,
    "secure_mode": True,
    "poisson": True,
    "grad_accumulation_steps": 1,
    "trainable_names": NAMES,
    "covered_names": NAMES,
}


def codes(**overrides) -> dict[str, str]:
    return {h.code: h.severity for h in check_dp_setup(**{**SAFE, **overrides})}


def test_a_safe_setup_has_no_hazard():
    assert check_dp_setup(**SAFE) == []


@pytest.mark.parametrize(
    "overrides, code, severity",
    [
        ({"delta": 1 / 3200}, "delta-too-large", "error"),
        ({"delta": 1e-3}, "delta-too-large", "error"),
        ({"sample_rate": 0.0406}, "sample-rate-mismatch", "error"),
        ({"sample_rate": 1 / 25}, None, None),  # q = 1/ceil(n/B) = 0.04 exactly here
        ({"poisson": False}, "not-poisson", "error"),
        ({"grad_accumulation_steps": 4}, "grad-accumulation", "error"),
        ({"covered_names": NAMES[:1]}, "uncovered-parameters", "error"),
        ({"covered_names": [*NAMES, "extra"]}, None, None),
        ({"dataset_size": 999, "sample_rate": 128 / 999, "delta": 1e-4}, "small-dataset", "warn"),
        ({"batch_size": 31, "sample_rate": 31 / 3200}, "small-batch", "warn"),
        ({"noise_multiplier": 3.1}, "high-noise", "warn"),
        ({"noise_multiplier": 3.0}, None, None),
        ({"secure_mode": False}, "insecure-rng", "warn"),
    ],
)
def test_each_rule_fires_alone(overrides, code, severity):
    found = codes(**overrides)
    assert found == ({} if code is None else {code: severity})


def test_delta_error_says_what_to_use():
    (hazard,) = check_dp_setup(**{**SAFE, "delta": 1e-3})
    assert "1/n = 1/3200" in hazard.message and "--delta 1e-05" in hazard.message


def test_accumulation_without_poisson_reports_the_sampling_first():
    assert codes(poisson=False, grad_accumulation_steps=4) == {"not-poisson": "error"}


def test_batch_at_least_dataset_uses_rate_one():
    found = codes(batch_size=5000, sample_rate=1.0)
    assert "sample-rate-mismatch" not in found


def test_messages_name_the_numbers_and_the_reason():
    hazards = check_dp_setup(
        **{
            **SAFE,
            "dataset_size": 279,
            "batch_size": 8,
            "sample_rate": 8 / 279,
            "delta": 1e-5,
            "noise_multiplier": 3.1,
            "secure_mode": False,
            "covered_names": NAMES[:1],
        }
    )
    by_code = {h.code: h for h in hazards}
    assert "279" in by_code["small-dataset"].message
    assert "8.0" in by_code["small-batch"].message
    assert "3.1" in by_code["high-noise"].message
    assert by_code["insecure-rng"].message == INSECURE_RNG_NOTE
    assert "lora_B" in by_code["uncovered-parameters"].message
    assert "voids the guarantee" in by_code["uncovered-parameters"].message
    # errors come first
    severities = [h.severity for h in hazards]
    assert severities == sorted(severities, key=lambda s: s != "error")


@pytest.mark.parametrize(
    "overrides",
    [
        {"dataset_size": 0},
        {"batch_size": 0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"delta": 0},
        {"noise_multiplier": -1.0},
        {"grad_accumulation_steps": 0},
    ],
)
def test_nonsense_input_raises(overrides):
    with pytest.raises(PrivacyError, match="invalid DP setup"):
        check_dp_setup(**{**SAFE, **overrides})
