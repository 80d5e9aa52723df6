"""A key-holding client sends impossible updates: the federation survives (promise P7).

client-2 holds the federation's keys and its own valid signing key, and bypasses its own codec's
bound. In round 2 it sends a valid ciphertext of 1e4 per value; in round 3 its update times -10
instead of its roster weight (what a weight of -10 has become: no weight is sent, every client
divides by the roster weights of the contributors the aggregate names).
Both are accepted by the server (it cannot read ciphertexts), and every client rejects the
aggregate, keeps the shared tensors it started the round with, and goes on. Round 4 is honest
again and is loaded. The run is interrupted after round 3 and resumed, and the audit reports
the two rejected rounds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto import packing, wire
from secure_fedsa.model.sharing import flatten
from secure_fedsa.site.client import WEIGHT_UNIT, Client
from secure_fedsa.transports.federation import Progress, run_federation

pytestmark = pytest.mark.integration

CONFIG = {**TINY_DP, "num_clients": 3, "max_examples": 1200, "rounds": 4}


class _Stop(Exception):
    pass


def hostile_make_update(self: Client, round_number: int, session: str, mask=None, *, weight):  # noqa: ANN001
    """client-2's update: honest except in rounds 2 (huge values) and 3 (negated, times 10);
    it follows secure aggregation's protocol (masks its ciphertexts) like everyone else."""
    if self.client_id != "client-2" or round_number not in (2, 3):
        return HONEST(self, round_number, session, mask, weight=weight)
    assert weight == self.data.num_train / WEIGHT_UNIT  # its roster weight, in-process
    values = flatten(self.trained, self.manifest)
    if round_number == 2:
        values = np.full_like(values, 1e4)
    else:
        weight = -10.0
    checked = packing.update_floats  # the codec's own checks: bypassed, as a hostile client can

    def unchecked(values, weight, *, bound):  # noqa: ANN001, ARG001
        return weight * values

    packing.update_floats = unchecked
    try:
        return wire.encode_update(
            self.codec,
            values,
            weight,
            manifest_hash=self.manifest.digest,
            round=round_number,
            session=session,
            key=self.identity.key,
            mask=mask,
            ledger=self.ledger_head(),  # paid for, as the protocol requires
        )
    finally:
        packing.update_floats = checked


HONEST = Client.make_update


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    config = RunConfig(**CONFIG)
    patch = pytest.MonkeyPatch()
    patch.setattr(Client, "make_update", hostile_make_update)
    messages: list[str] = []

    def stop_after_three(number: int) -> None:
        if number == 3:
            raise _Stop

    try:
        with pytest.raises(_Stop):
            run_federation(config, run_dir, Progress(message=messages.append,
                                                      round_done=stop_after_three))  # fmt: skip
        summary = run_federation(config, run_dir, Progress(message=messages.append), resume=True)
    finally:
        patch.undo()
    return run_dir, summary, messages


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_server_accepts_them_but_every_client_rejects_the_aggregate(hostile_run):
    run_dir, summary, messages = hostile_run
    metrics = _metrics(run_dir)
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    statuses = [m["aggregate"]["status"] for m in metrics]
    assert statuses == ["applied", "rejected", "rejected", "applied"]
    for record in metrics:
        assert record["rejected"] == []  # the server could not tell: valid, signed ciphertexts
        assert record["aggregate"]["contributors"] == ["client-0", "client-1", "client-2"]
    round2, round3 = metrics[1]["aggregate"], metrics[2]["aggregate"]
    assert (
        set(round2["rejected_by"])
        == set(round3["rejected_by"])
        == {
            "client-0",
            "client-1",
            "client-2",
        }
    )
    # only a status code reaches the server's files (P6); each client keeps why, in its own log
    codes = set(round2["rejected_by"].values()) | set(round3["rejected_by"].values())
    assert codes == {"rejected"}
    for cid in round2["rejected_by"]:
        notes = [json.loads(x) for x in (run_dir / "clients" / cid / "aggregates.jsonl").open()]
        why = {n["round"]: n["problems"] for n in notes if n["status"] == "rejected"}
        assert "moved" in why[2][0] and "moved" in why[3][0]  # the drift bound, both times
    assert "moved" not in (run_dir / "metrics.jsonl").read_text()
    assert any("REJECTED the aggregate" in m for m in messages)
    assert [r["round"] for r in summary["rejected_aggregates"]] == [2, 3]


def test_honest_clients_kept_sane_tensors_and_finished(hostile_run):
    run_dir, summary, _ = hostile_run
    assert summary["rounds_completed"] == 4
    for cid in ("client-0", "client-1"):
        state = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]
        a = [v for k, v in state.items() if ".lora_A." in k]
        assert max(float(t.abs().max()) for t in a) < 1.0  # never loaded the 1e4 values
        assert 0.0 <= summary["evaluation"]["per_client"][cid] <= 1.0
    # every client holds the same A: round 4's aggregate was loaded by all
    states = [
        torch.load(run_dir / "clients" / c / "state.pt", weights_only=True)["state"]
        for c in ("client-0", "client-1", "client-2")
    ]
    for name in (k for k in states[0] if ".lora_A." in k):
        assert torch.equal(states[0][name], states[1][name])
        assert torch.equal(states[0][name], states[2][name])


def test_the_audit_reports_the_rejected_rounds(hostile_run):
    from audits.runner import audit_run

    run_dir, _, _ = hostile_run
    report = audit_run(run_dir)
    check = next(c for c in report["checks"] if c["name"] == "aggregates")
    assert check["result"] == "warn"
    text = " | ".join(check["findings"])
    assert "round 2: the aggregate was rejected" in text and "round 3" in text
    assert check["evidence"]["rounds"]["4"]["status"] == "applied"
    ledger = next(c for c in report["checks"] if c["name"] == "ledger-integrity")
    assert ledger["result"] == "pass"


def _last_adamw_step(gradients) -> float:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=1.0, weight_decay=0.0)
    before = 0.0
    for g in gradients:
        before = float(p)
        p.grad = torch.tensor([float(g)])
        opt.step()
    return abs(float(p) - before)


@pytest.mark.parametrize("steps", [1, 2, 6, 20])
def test_the_adam_bound_is_reached_by_the_worst_gradients_and_never_exceeded(steps):
    from secure_fedsa.site.aggregate_check import ADAM_BETA1, ADAM_BETA2, adam_ratio_bound

    t = steps
    a = np.array([(1 - ADAM_BETA1) * ADAM_BETA1 ** (t - i) for i in range(1, t + 1)])
    b = np.array([(1 - ADAM_BETA2) * ADAM_BETA2 ** (t - i) for i in range(1, t + 1)])
    bound = adam_ratio_bound(t)
    # Cauchy-Schwarz equality (g_i ∝ a_i / b_i): torch's AdamW takes exactly the bound
    assert _last_adamw_step(a / b) == pytest.approx(bound, rel=1e-5)
    rng = np.random.default_rng(steps)
    for _ in range(200):  # gradients over eight orders of magnitude: never above it
        gradients = rng.standard_normal(t) * 10 ** rng.uniform(-4, 4, t)
        assert _last_adamw_step(gradients) <= bound * (1 + 1e-6)
