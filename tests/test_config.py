"""The run configuration validates every field and survives a JSON round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.config import CONFIG_VERSION, RunConfig
from secure_fedsa.errors import ConfigError

pytestmark = pytest.mark.unit


def test_secure_by_default():
    config = RunConfig()
    assert config.dp and config.encryption
    assert config.epsilon == 8.0 and config.delta == 1e-5
    assert config.method == "fedsa"
    assert config.protections == []


def test_turning_protections_off_is_loud():
    config = RunConfig(dp=False, epsilon=None, encryption=False)
    text = " ".join(config.protections)
    assert "NO DIFFERENTIAL PRIVACY" in text and "NO ENCRYPTION" in text


def test_json_round_trip():
    config = RunConfig(method="ffa", data_files=("a.csv", "b.csv"), labels=("x", "y"), seed=3)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_unknown_fields_and_newer_versions_are_refused():
    data = RunConfig().to_dict()
    with pytest.raises(ConfigError, match="unknown configuration fields: colour"):
        RunConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match="version"):
        RunConfig.from_dict({**data, "version": CONFIG_VERSION + 1})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "fedprox"}, "unknown method"),
        ({"rounds": 0}, "rounds"),
        ({"partition": "random"}, "unknown partition"),
        ({"alpha": 0.0}, "alpha"),
        ({"test_fraction": 1.0}, "test-fraction"),
        ({"delta": 0.0}, "delta"),
        ({"accountant": "gdp"}, "accountant"),
        ({"epsilon": None}, "give --epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"num_clients": 100, "max_clients": 10}, "max-clients"),
    ],
)
def test_invalid_values_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


@given(
    rounds=st.integers(-5, 5),
    steps=st.integers(-5, 5),
    clients=st.integers(-5, 5),
    lr=st.floats(allow_nan=True, allow_infinity=True),
)
@settings(max_examples=100, deadline=None)
def test_validation_accepts_exactly_the_valid_values(rounds, steps, clients, lr):
    valid = rounds > 0 and steps > 0 and clients > 0 and lr > 0 and lr != float("inf")
    try:
        RunConfig(rounds=rounds, local_steps=steps, num_clients=clients, lr=lr)
    except ConfigError:
        assert not valid
    else:
        assert valid


def test_the_methods_are_the_sharing_policies():
    """config.METHODS spares the option table (and --help) torch; it names the same methods."""
    from secure_fedsa.config import METHODS
    from secure_fedsa.model.sharing import POLICIES

    assert tuple(POLICIES) == METHODS
