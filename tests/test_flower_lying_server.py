"""A lying ServerApp over the real SuperLink (issue 33): the sites refuse.

The deployment is the one of ``test_flower_deployment.py`` (a TLS SuperLink, one SuperNode per
site on 127.0.0.1, each running the project's unmodified ClientApp from its own files), but
``flwr run`` is given a Flower app whose ServerApp lies: ``lying_server_app.py`` (written by the
test into the app directory, next to a copy of the package's code) wraps the project's ServerApp
and, when the SuperLink's environment says ``SECURE_FEDSA_LIE=1``, sends every site a roster
signed with the federation's real server key in which every peer's key is one the server holds.
Each site refuses it before it advertises anything (the roster is not the one its identity
pins): the run fails, no ledger entry, no secure-aggregation message or update leaves a site,
and the SuperNode logs say why. The power check runs the same app with the lie off: it trains.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.deployment]

pytest.importorskip("flwr")

from test_flower_deployment import (  # noqa: E402
    BIN,
    REPO,
    RUN_CONFIG,
    RUN_TIMEOUT,
    SECAGG_KINDS,
    SITES,
    _json_lines,
    _setup,
    _wait_for,
)

LIE = "SECURE_FEDSA_LIE"
REFUSAL = re.compile(r"substitutes peers' keys|not the roster this site pinned")

LYING_SERVER_APP = f'''"""The project's ServerApp, lying about the roster while ${LIE} is "1"."""

import os

from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.engine import messages as m
from secure_fedsa.engine.aggregation import ServerRound, signed_roster
from secure_fedsa.transports.flower import server_app

honest_keys_request = ServerRound.keys_request


def swapped_keys_request(self, last_applied=0):
    if os.environ.get("{LIE}") != "1":
        return honest_keys_request(self, last_applied)
    honest = self.keys.roster
    own = SigningKey.generate("server-in-disguise").public_bytes
    roster = Roster(dict.fromkeys(honest.clients, own), honest.server, weights=honest.weights)
    signed = signed_roster(roster, self.keys.identity.key)  # the federation's real server key
    return m.KeysRequest(self.number, self.session, *signed, last_applied)


ServerRound.keys_request = swapped_keys_request
app = server_app.app  # the component: the project's ServerApp, unchanged but for the roster
'''


def _lying_app(directory: Path) -> Path:
    """A Flower app: the project's pyproject with the ServerApp component swapped for
    ``lying_server_app:app``, the package's code and the lying module."""
    directory.mkdir()
    text = (REPO / "pyproject.toml").read_text()
    honest = 'serverapp = "secure_fedsa.transports.flower.server_app:app"'
    include = 'fab-include = ["secure_fedsa/**/*.py", "README.md"]'
    assert honest in text and include in text
    text = text.replace(honest, 'serverapp = "lying_server_app:app"')
    text = text.replace(include, include[:-1] + ', "lying_server_app.py"]')
    (directory / "pyproject.toml").write_text(text)
    shutil.copy2(REPO / "README.md", directory / "README.md")
    shutil.copytree(
        REPO / "secure_fedsa",
        directory / "secure_fedsa",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (directory / "lying_server_app.py").write_text(LYING_SERVER_APP)
    return directory


def _deploy(tmp_path: Path, *, lie: bool) -> tuple[dict, dict[str, dict[str, str]], dict]:
    """One round through the lying app over a real SuperLink; (summary, sites, logs)."""
    deployment, sites, server_keys = _setup(tmp_path)
    deployment.processes.env[LIE] = "1" if lie else "0"  # the SuperLink's, so its ServerApp's
    app = _lying_app(tmp_path / "lying-app")
    run_dir = tmp_path / "superlink" / "run"
    config = {**RUN_CONFIG, "rounds": 1, "keys-dir": str(server_keys), "run-dir": str(run_dir)}
    overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
    try:
        deployment.start_superlink()
        for site, node_config in sites.items():
            deployment.start_supernode(site, node_config)
        run = deployment.processes.start(
            "flwr-run",
            [str(BIN / "flwr"), "run", str(app), "local-tls", "--stream",
             "--run-config", overrides],
        )  # fmt: skip
        try:
            run.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`flwr run` did not finish within {RUN_TIMEOUT} s") from None
        _wait_for(lambda: (run_dir / "summary.json").exists(), 60)
        if lie:  # the refusals are logged by the SuperNodes' ClientApps
            _wait_for(lambda: all(REFUSAL.search(deployment.processes.log(s)) for s in SITES), 60)
    finally:
        deployment.processes.stop()
    logs = {name: deployment.processes.log(name) for name in deployment.processes.procs}
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, sites, logs


def _ledger(node_config: dict[str, str]) -> list[dict]:
    path = Path(node_config["state-dir"]) / "privacy_ledger.json"
    return json.loads(path.read_text())["entries"] if path.exists() else []


def _egress(node_config: dict[str, str]) -> list[dict]:
    directory = Path(node_config["state-dir"]) / "egress"
    return [e for f in sorted(directory.glob("*.jsonl")) for e in _json_lines(f)]


def test_a_lying_serverapp_over_the_superlink_is_refused_by_every_site(tmp_path):
    """The server signs, with its real key, a roster whose peers' keys are all its own."""
    summary, sites, logs = _deploy(tmp_path, lie=True)
    assert summary["status"] == "failed", summary
    assert summary["rounds_completed"] == 0 and summary["failed_round"] == 1
    # every site refused at the first message, the key request: no site advertised keys
    dropouts = summary["round"]["dropouts"]
    assert [d["phase"] for d in dropouts] == ["secagg-keys"] * len(SITES), dropouts
    assert all(REFUSAL.search(d["reason"]) for d in dropouts), dropouts
    assert summary["round"]["contributors"] == 0 and not summary["round"]["clients"]
    metrics = tmp_path / "superlink" / "run" / "metrics.jsonl"
    assert not metrics.exists() or not _json_lines(metrics)  # the failed round is not recorded
    for site, node_config in sites.items():
        assert _ledger(node_config) == [], site  # no DP step: nothing spent
        egress = _egress(node_config)
        sent = {e["kind"] for e in egress}
        assert not sent & {*SECAGG_KINDS, "update"}, (site, sent)  # no key advert, no share
        assert all(e["kind"] == "report" and e["tensors"] == [] for e in egress), egress
        assert REFUSAL.search(logs[site]), site  # the site's ClientApp says why
        assert "CryptoError" in logs[site], site


def test_the_same_app_with_the_lie_off_trains(tmp_path):
    """Power check: the harness, the app and its wrapper are sound; only the lie is refused."""
    summary, sites, logs = _deploy(tmp_path, lie=False)
    assert summary["status"] == "completed", summary
    assert summary["rounds_completed"] == 1
    metrics = _json_lines(tmp_path / "superlink" / "run" / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1]
    assert metrics[0]["contributors"] == len(SITES)
    for site, node_config in sites.items():
        assert [e["round"] for e in _ledger(node_config)] == [1], site
        sent = {e["kind"] for e in _egress(node_config)}
        assert {"secagg-keys", "secagg-shares", "update"} <= sent, (site, sent)
        assert not REFUSAL.search(logs[site]), site
