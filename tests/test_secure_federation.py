"""Federations with DP and encryption on: budgets, ledgers, restarts, and CKKS vs plaintext."""

from __future__ import annotations

import json

import pytest
import torch
from audit_helpers import SMALL as AUDITED

from secure_fedsa.config import RunConfig
from secure_fedsa.model.encoder import tensor_group
from secure_fedsa.privacy.randomness import SeededTestRandom
from secure_fedsa.transports.federation import Progress, run_federation

pytestmark = pytest.mark.integration


def same_noise(cid: str) -> SeededTestRandom:
    """Test-only reproducible DP noise, so two runs can be compared value by value."""
    return SeededTestRandom(int(cid.rsplit("-", 1)[-1]))


SMALL = dict(
    num_layers=1,
    max_examples=1200,
    num_clients=2,
    partition="iid",
    rounds=3,
    local_steps=3,
    batch_size=64,
    physical_batch_size=64,
    max_length=24,
    eval_examples_per_round=20,
    seed=0,
)


def _ledger(run_dir, cid):
    return json.loads((run_dir / "clients" / cid / "privacy_ledger.json").read_text())


def _state(run_dir, cid):
    return torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]


@pytest.fixture(scope="module")
def secure_run(shared_run):
    """The session's small DP + CKKS run, the one the audit tests read (tests/conftest.py)."""
    config = RunConfig(epsilon=8.0, **AUDITED)
    run_dir, summary = shared_run(config)
    return run_dir, config, summary


def test_budget_is_met_and_recorded_per_round(secure_run):
    run_dir, config, summary = secure_run
    for cid, privacy in summary["privacy"].items():
        assert 7.0 < privacy["epsilon"] <= 8.0  # calibrated: ends at or just under the budget
        ledger = _ledger(run_dir, cid)
        assert [e["round"] for e in ledger["entries"]] == list(range(1, config.rounds + 1))
        assert ledger["entries"][-1]["epsilon"] == pytest.approx(privacy["epsilon"])
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    eps = [m["clients"]["client-0"]["epsilon_spent"] for m in metrics]
    assert eps == sorted(eps) and len(set(eps)) == config.rounds  # grows every round


def test_only_ciphertexts_of_a_left_the_clients(secure_run):
    run_dir, config, summary = secure_run
    for cid in summary["evaluation"]["per_client"]:
        lines = [
            json.loads(x) for x in (run_dir / "egress" / f"{cid}.jsonl").read_text().splitlines()
        ]
        # besides its updates a client sends only secure aggregation's protocol messages
        protocol = [e for e in lines if e["kind"] != "update"]
        assert {e["kind"] for e in protocol} == {
            "secagg-keys", "secagg-shares", "secagg-survivors", "secagg-reveal",
        }  # fmt: skip
        assert all(e["tensors"] == [] for e in protocol)
        lines = [e for e in lines if e["kind"] == "update"]
        assert len(lines) == config.rounds
        for entry in lines:
            assert entry["form"] == "ciphertext"
            assert {tensor_group(n) for n in entry["tensors"]} == {"A"}
            assert entry["bytes"] < 8.1 * 4 * 3072 + 4096  # 4 A matrices of 8x384, compact CKKS


def test_server_files_hold_no_secret(secure_run):
    run_dir, _, _ = secure_run
    server = json.loads((run_dir / "keys" / "server.keys").read_text())
    assert "secret_key" not in server
    assert (run_dir / "keys" / "client.keys").stat().st_mode & 0o077 == 0
    client = json.loads((run_dir / "keys" / "client.keys").read_text())
    secret = client["secret_key"]
    for path in run_dir.rglob("*"):
        if path.is_file() and path.name != "client.keys" and path.suffix in (".json", ".jsonl"):
            assert secret[:64] not in path.read_text()


# two whole federations compared: on demand (the codec's own tests check CKKS against plaintext)
@pytest.mark.e2e
def test_encrypted_run_matches_plaintext_run(tmp_path):
    base = dict(SMALL, rounds=2)
    plain = run_federation(
        RunConfig(epsilon=8.0, encryption=False, **base), tmp_path / "p", dp_randomness=same_noise
    )
    secure = run_federation(
        RunConfig(epsilon=8.0, **base), tmp_path / "s", dp_randomness=same_noise
    )
    assert "NO ENCRYPTION" in " ".join(plain["protections_off"])
    for cid in plain["evaluation"]["per_client"]:
        a, b = _state(tmp_path / "p", cid), _state(tmp_path / "s", cid)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5)
    assert plain["evaluation"]["mean"] == pytest.approx(secure["evaluation"]["mean"], abs=0.02)


class _Stop(Exception):
    pass


def test_restart_continues_the_ledger_without_double_counting(tmp_path, secure_run):
    _, config, full = secure_run

    rounds = list(range(1, config.rounds + 1))

    def stop_before_the_last(number):
        if number == config.rounds - 1:
            raise _Stop

    with pytest.raises(_Stop):
        run_federation(config, tmp_path / "r", Progress(round_done=stop_before_the_last))
    for cid in full["privacy"]:
        assert [e["round"] for e in _ledger(tmp_path / "r", cid)["entries"]] == rounds[:-1]
    resumed = run_federation(config, tmp_path / "r", resume=True)
    for cid, privacy in full["privacy"].items():
        entries = _ledger(tmp_path / "r", cid)["entries"]
        assert [e["round"] for e in entries] == rounds
        assert resumed["privacy"][cid]["epsilon"] == pytest.approx(privacy["epsilon"])
        # the accounting is deterministic; the noise is not (fresh from the OS every round)
        assert resumed["privacy"][cid]["history"] == full["privacy"][cid]["history"]


def test_budget_exhaustion_stops_clients_cleanly(tmp_path):
    # a fixed noise multiplier with a budget that lasts about one round
    config = RunConfig(noise_multiplier=0.8, epsilon=2.0, **dict(SMALL, rounds=4))
    summary = run_federation(config, tmp_path / "b")
    metrics = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    statuses = [m["clients"]["client-0"]["status"] for m in metrics]
    assert "budget exhausted" in statuses
    assert len(metrics) < 4  # stopped cleanly once nobody could train
    for privacy in summary["privacy"].values():
        assert privacy["epsilon"] <= 2.0


def test_a_run_uses_keys_made_with_keys_init(tmp_path):
    from secure_fedsa.crypto.keys import load_server_keys
    from secure_fedsa.site.keys import init_keys

    config = RunConfig(epsilon=8.0, keys_dir=str(tmp_path / "keys"), **dict(SMALL, rounds=1))
    sizes = {f"client-{i}": 100 + i for i in range(8)}  # public; the weights in the roster
    paths = init_keys(tmp_path / "keys", max_clients=8, sizes=sizes)
    summary = run_federation(config, tmp_path / "run")
    assert summary["key_fingerprint"] == load_server_keys(paths["server"]).fingerprint
    assert not (tmp_path / "run" / "keys").exists()  # no second key set was made
