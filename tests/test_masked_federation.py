"""Pairwise masking over real CKKS ciphertexts in the in-process federation (promise P8).

Written as the collusion it guards against: a server that also holds ``client.keys`` (a colluding
client gave it) takes one honest client's upload from what it received and decrypts it. With
masking, what it gets is uncorrelated with that client's update, while the round's sum still
decrypts exactly; without masking (the power check) the same attack recovers the update.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.ckks_client import CKKSClientCodec
from secure_fedsa.crypto.ckks_server import CKKSServerCodec
from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.model.sharing import Manifest, flatten
from secure_fedsa.server.aggregator import Aggregator
from secure_fedsa.site.client import WEIGHT_UNIT
from secure_fedsa.transports import inprocess
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

CONFIG = {**TINY_DP, "num_clients": 3, "max_examples": 1200, "rounds": 1}


def _manifest(setup: dict) -> Manifest:
    return Manifest(tuple((m["name"], tuple(m["shape"])) for m in setup["manifest"]))


def _captured_run(tmp_path, **overrides):
    """A one-round run; returns (run dir, the updates the server received, by client)."""
    from secure_fedsa.engine import aggregation

    received: dict[str, bytes] = {}
    real = aggregation.submit

    def capture(aggregator, payload):
        from secure_fedsa.crypto import wire

        received[wire.unpack(payload).client_id] = payload
        return real(aggregator, payload)

    run_dir = tmp_path / "run"
    patch = pytest.MonkeyPatch()
    patch.setattr(aggregation, "submit", capture)
    try:
        run_federation(RunConfig(**{**CONFIG, **overrides}), run_dir)
    finally:
        patch.undo()
    return run_dir, received


def _decrypt_alone(run_dir, payload: bytes) -> np.ndarray:
    """What a server holding client.keys reads from one upload: it sums it alone, unmasked,
    and decrypts (the weighted values: the weight itself is not sent)."""
    from secure_fedsa.crypto import wire

    setup = json.loads((run_dir / "setup.json").read_text())
    server = CKKSServerCodec.from_bundle(run_dir / "keys" / "server.keys")
    client = CKKSClientCodec.from_bundle(run_dir / "keys" / "client.keys")
    key = SigningKey.generate("server")
    roster = Roster({wire.unpack(payload).client_id: b""}, key.public_bytes)
    aggregator = Aggregator(
        server, manifest_hash=setup["manifest_hash"], round=1, n_values=setup["shared_values"],
        session=setup["session"], roster=roster, key=key,
    )  # fmt: skip
    aggregator._sum.add([server.validate_chunk(c) for c in wire.unpack(payload).chunks])
    aggregator.accepted.append("x")
    message = wire.unpack(aggregator.result())
    return client.decrypt_sum(message.chunks, setup["shared_values"])


def _true_update(run_dir, cid) -> np.ndarray:
    """What the client encrypted: its weighted shared tensors after training."""
    setup = json.loads((run_dir / "setup.json").read_text())
    manifest = _manifest(setup)
    trained = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["trained"]
    return flatten(trained, manifest) * setup["clients"][cid]["train"] / WEIGHT_UNIT


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    return _captured_run(tmp_path_factory.mktemp("masked"))


def test_one_upload_decrypted_with_client_keys_is_uncorrelated_with_the_update(masked):
    run_dir, received = masked
    assert set(received) == {"client-0", "client-1", "client-2"}
    for cid, payload in received.items():
        values = _decrypt_alone(run_dir, payload)
        truth = _true_update(run_dir, cid)
        correlation = float(np.corrcoef(values, truth)[0, 1])
        assert abs(correlation) < 0.05, (cid, correlation)


def test_the_sum_is_still_exact(masked):
    run_dir, _ = masked
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["aggregate"]["status"] == "applied"
    assert metrics[0]["masking"]["masked_with"] == ["client-0", "client-1", "client-2"]
    setup = json.loads((run_dir / "setup.json").read_text())
    manifest = _manifest(setup)
    weights = {c: setup["clients"][c]["train"] / WEIGHT_UNIT for c in setup["clients"]}
    expected = sum(_true_update(run_dir, c) for c in weights) / sum(weights.values())
    state = torch.load(run_dir / "clients" / "client-0" / "state.pt", weights_only=True)["state"]
    assert float(np.max(np.abs(flatten(state, manifest) - expected))) < 1e-7


def test_without_masking_the_same_attack_recovers_the_update(tmp_path):
    """Power check: the collusion test above fails when the masks are switched off."""
    run_dir, received = _captured_run(tmp_path, masking=False)
    values = _decrypt_alone(run_dir, received["client-1"])
    truth = _true_update(run_dir, "client-1")
    assert float(np.max(np.abs(values - truth))) < 1e-6
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any("NO PAIRWISE MASKING" in w for w in summary["protections_off"])


def _losing(monkeypatch, client_id: str, rounds: tuple[int, ...]) -> None:
    """``client_id``'s train message of ``rounds`` never arrives (after it has masked)."""
    from secure_fedsa.engine.messages import TrainRequest

    real = inprocess.InProcessTransport.deliver

    def deliver(self, address, request):  # noqa: ANN001
        if address == client_id and isinstance(request, TrainRequest) and request.round in rounds:
            raise inprocess.Lost("lost in transit (simulated dropout)")
        return real(self, address, request)

    monkeypatch.setattr(inprocess.InProcessTransport, "deliver", deliver)


def test_a_client_dropping_after_masking_leaves_the_sum_exact(tmp_path, monkeypatch):
    """client-1 takes part in the set-up, masks, but its update never arrives (4 clients: the
    floor against a lying server, t = 3, tolerates one dropout; 3 clients tolerate none)."""
    _losing(monkeypatch, "client-1", (1,))
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**{**CONFIG, "num_clients": 4}), run_dir)
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["aggregate"]["status"] == "applied"
    present = ["client-0", "client-2", "client-3"]
    assert record["aggregate"]["contributors"] == present
    assert record["masking"]["masked_with"] == ["client-0", "client-1", *present[1:]]
    assert record["masking"]["dropped"] == ["client-1"]
    assert record["dropouts"] == [
        {"client": "client-1", "phase": "train", "reason": "lost in transit (simulated dropout)"}
    ]
    setup = json.loads((run_dir / "setup.json").read_text())
    manifest = _manifest(setup)
    weights = {c: setup["clients"][c]["train"] / WEIGHT_UNIT for c in present}
    expected = sum(_true_update(run_dir, c) for c in weights) / sum(weights.values())
    state = torch.load(run_dir / "clients" / "client-2" / "state.pt", weights_only=True)["state"]
    assert float(np.max(np.abs(flatten(state, manifest) - expected))) < 1e-7
    # the dropped client's mask key was revealed (by the others), never a present one's seed
    egress = [json.loads(x) for x in (run_dir / "egress" / "client-1.jsonl").open()]
    assert {e["kind"] for e in egress} == {"secagg-keys", "secagg-shares"}  # it revealed nothing


def test_fewer_than_t_survivors_fail_the_round_cleanly_and_the_run_goes_on(tmp_path, monkeypatch):
    _losing(monkeypatch, "client-1", (1,))
    run_dir = tmp_path / "run"
    summary = run_federation(RunConfig(**{**CONFIG, "rounds": 2, "masking_threshold": 3}), run_dir)
    round1, round2 = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert round1["aggregate"]["status"] == "failed" and "needed" in round1["aggregate"]["reason"]
    assert round2["aggregate"]["status"] == "applied"
    assert summary["rounds_completed"] == 2


def test_the_audit_accepts_the_protocol_messages(masked):
    from audits.runner import audit_run

    run_dir, _ = masked
    report = audit_run(run_dir)
    egress = next(c for c in report["checks"] if c["name"] == "egress")
    assert egress["result"] == "pass", egress["findings"]
    counts = egress["evidence"]["clients"]["client-0"]["secure_aggregation_messages"]
    assert counts == 4  # keys, shares, survivor-set signature, reveal
