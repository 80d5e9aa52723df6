"""Fast checks of the Flower app wiring: pyproject as a Flower app, run/node config, one site."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import tomli as tomllib

pytestmark = pytest.mark.integration

pytest.importorskip("flwr")

from secure_fedsa.config import RunConfig  # noqa: E402
from secure_fedsa.errors import ConfigError, DataError, SecureFedsaError  # noqa: E402
from secure_fedsa.transports.flower import protocol as p  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_is_a_valid_flower_app():
    from flwr.common.config import validate_config

    valid, errors, _ = validate_config(_pyproject(), check_module=True, project_dir=REPO)
    assert valid, errors


def test_default_run_config_is_the_cli_default():
    config = _pyproject()["tool"]["flwr"]["app"]["config"]
    deployment = p.Deployment.from_run_config(config)
    assert deployment.config == RunConfig(num_clients=config["clients"])
    assert deployment.config.masking and not deployment.config.protections
    assert set(config) == set(p.RUN_KEYS) | set(p.DEPLOYMENT_KEYS)


def test_pyproject_app_config_is_the_generated_one():
    """[tool.flwr.app.config] is made from the option tables: `make app-config` rewrites it."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    start, end = p.app_config_span(text)
    assert text[start:end] == p.app_config_block(), "run `make app-config`"
    lines = p.app_config_block().splitlines()
    at = lines.index('target-modules = "query,value"')
    assert lines[at - 1].startswith("# comma-separated module names that get LoRA")
    assert 'client-column = ""' in lines and "release-evaluation" not in p.app_config_block()


def test_run_config_conversions_and_errors():
    d = p.Deployment.from_run_config(
        {"dp": False, "epsilon": 3.0, "num-layers": 1, "labels": "a, b", "min-clients": 1}
    )
    assert not d.config.dp and d.config.epsilon is None and d.config.num_layers == 1
    assert d.config.labels == ("a", "b") and d.min_clients == 1
    d = p.Deployment.from_run_config(
        {"target-modules": "q_lin, v_lin", "client-column": "site", "report-accuracy": True}
    )
    assert d.config.target_modules == ("q_lin", "v_lin") and d.config.client_column == "site"
    assert d.report_accuracy and d.config.release_evaluation
    assert p.Deployment.from_run_config({"client-column": ""}).config.client_column is None
    assert p.Deployment.from_run_config({"adapter-layers": 0}).config.adapter_layers is None
    assert p.Deployment.from_run_config({"adapter-layers": 3}).config.adapter_layers == 3
    d = p.Deployment.from_run_config({"optimizer-state": "kept", "lr-schedule": "linear"})
    assert d.config.optimizer_state == "kept" and d.config.lr_schedule == "linear"
    with pytest.raises(ConfigError, match="lr schedule"):
        p.Deployment.from_run_config({"lr-schedule": "exponential"})
    d = p.Deployment.from_run_config({"noise-multiplier": 1.2, "epsilon": 0})
    assert d.config.epsilon is None and d.config.noise_multiplier == 1.2
    with pytest.raises(ConfigError, match="unknown run config"):
        p.Deployment.from_run_config({"epochs": 3})
    with pytest.raises(ConfigError, match="integer"):
        p.Deployment.from_run_config({"rounds": 2.5})
    with pytest.raises(ConfigError, match="min-clients"):
        p.Deployment.from_run_config({"min-clients": 4, "clients": 3})


def test_node_config():
    spec = p.site_spec(
        {"data-file": "/d/site-a.csv", "keys": "/k/client.keys", "state-dir": "/s",
         "identity": "/k/identities/site-a.key"}
    )  # fmt: skip
    assert spec.name == "site-a" and spec.keys == Path("/k/client.keys")
    assert spec.identity == Path("/k/identities/site-a.key")
    spec = p.site_spec({"partition-id": 1, "num-partitions": 3, "state-dir": "/s"})
    assert spec.name == "client-1" and spec.number == 1
    with pytest.raises(ConfigError, match="state-dir"):
        p.site_spec({"data-file": "x.csv"})
    with pytest.raises(ConfigError, match="unknown node config"):
        p.site_spec({"state-dir": "/s", "datafile": "x.csv"})


def _site_file(path: Path, n: int = 60) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(n):
            writer.writerow(
                [f"a {'good' if i % 2 else 'bad'} film number {i}", "pos" if i % 2 else "neg"]
            )
    return path


def test_a_site_builds_its_client_from_its_own_files(tmp_path):
    from secure_fedsa.site.build import SiteSpec, build_site, server_manifest

    config = RunConfig(
        num_layers=1, max_length=16, labels=("neg", "pos"), dp=False, epsilon=None,
        encryption=False, batch_size=8, physical_batch_size=8, local_steps=1, rounds=1,
    )  # fmt: skip
    from secure_fedsa.crypto.signing import create_identities, identity_path

    create_identities(tmp_path / "keys", ["site-x", "site-y"])
    spec = SiteSpec(
        state_dir=tmp_path / "state",
        data_file=_site_file(tmp_path / "site-x.csv"),
        identity=identity_path(tmp_path / "keys", "site-x"),
    )
    with pytest.raises(DataError, match="signing identity"):
        build_site(config, SiteSpec(state_dir=tmp_path / "s2", data_file=spec.data_file))
    with pytest.raises(SecureFedsaError, match="signing identity of site-y"):
        build_site(config, SiteSpec(
            state_dir=tmp_path / "s3", data_file=spec.data_file,
            identity=identity_path(tmp_path / "keys", "site-y"),
        ))  # fmt: skip
    site = build_site(config, spec)
    assert site.client.client_id == "site-x" and site.label_names == ("neg", "pos")
    assert site.manifest.digest == server_manifest(config).digest
    assert len(site.client.data.train) == 48 and len(site.client.data.test) == 12
    site.client.train(1)
    assert (tmp_path / "state" / "state.pt").exists()
    # the next message's process rebuilds the site from its files and sees round 1 done
    again = build_site(config, spec)
    assert again.client.trained_round == 1
    with pytest.raises(DataError, match="label vocabulary"):
        build_site(config.replace(labels=()), spec)


def test_server_app_imports_no_decryption_code():
    import subprocess
    import sys

    code = (
        "import sys, secure_fedsa.transports.flower.server_app; "
        "print(any(m.endswith('ckks_client') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_shared_head_on_three_classes_has_the_sites_manifest(tmp_path):
    """head = shared on 3-class data (tweets): the server builds the head for the run's label
    vocabulary, so its manifest hash is the sites' own and their updates are not rejected
    (the server used to assume 2 labels and refuse every update)."""
    from secure_fedsa.crypto.signing import create_identities, identity_path
    from secure_fedsa.site.build import SiteSpec, build_site, server_manifest

    config = RunConfig(
        dataset="tweets", head="shared", num_layers=1, max_length=16, max_examples=300,
        num_clients=2, dp=False, epsilon=None, encryption=False, local_steps=1, rounds=1,
    )  # fmt: skip
    create_identities(tmp_path / "keys", ["client-0", "client-1"])
    site = build_site(config, SiteSpec(
        state_dir=tmp_path / "s", partition_id=0, num_partitions=2,
        identity=identity_path(tmp_path / "keys", "client-0"),
    ))  # fmt: skip
    assert len(site.label_names) == 3 and "head.classifier.weight" in site.manifest.names
    assert site.manifest.digest == server_manifest(config).digest

    from secure_fedsa.data import BUNDLED, BUNDLED_LABELS
    from secure_fedsa.site.build import run_labels

    assert run_labels(config) == ("negative", "neutral", "positive")
    # a vocabulary the server cannot know with the head shared is refused, not guessed
    with pytest.raises(ConfigError, match="label vocabulary"):
        server_manifest(config.replace(dataset=str(tmp_path / "own.csv")))
    for name, load in BUNDLED.items():  # known without loading: exactly what loading gives
        assert BUNDLED_LABELS[name] == load().label_names
