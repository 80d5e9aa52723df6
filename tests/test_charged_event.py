"""Privacy is charged from what DP-SGD executed, not from the plan (issue 32).

``train_dp`` returns the DP event its mechanism ran (the optimizer's σ, the sampler's q, the
noisy steps it took); the client's ledger records exactly that, before anything of the round
leaves the client. A mechanism that runs fewer (or more) steps than planned is charged what it
ran: the ledger, ε in metrics.jsonl and the steps the round reports all agree with it.
"""

from __future__ import annotations

import json

import pytest
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.privacy.accounting import DPEvent, epsilon
from secure_fedsa.site import client as client_module
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration


def test_a_round_is_charged_the_steps_train_dp_ran_not_the_planned_ones(tmp_path, monkeypatch):
    real = client_module.train_dp
    planned = []

    def runs_one_step(model, data, **kwargs):  # noqa: ANN001, ANN003, ANN202
        planned.append(kwargs["steps"])
        return real(model, data, **{**kwargs, "steps": 1, "lr_factors": kwargs["lr_factors"][:1]})

    monkeypatch.setattr(client_module, "train_dp", runs_one_step)
    config = RunConfig(**{**TINY_DP, "rounds": 1, "encryption": False, "masking": False})
    run_dir = tmp_path / "run"
    run_federation(config, run_dir)
    assert planned == [TINY_DP["local_steps"]] * config.num_clients and planned[0] > 1
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for cid in ("client-0", "client-1"):
        ledger = json.loads((run_dir / "clients" / cid / "privacy_ledger.json").read_text())
        (entry,) = ledger["entries"]
        assert entry["steps"] == 1  # what ran, not the plan's 2
        ran = DPEvent(entry["noise_multiplier"], entry["sample_rate"], 1)
        delta = ledger["identity"]["delta"]
        assert entry["epsilon"] == epsilon([ran], delta=delta, accountant=config.accountant)
        assert record["clients"][cid]["steps"] == 1
        assert record["clients"][cid]["epsilon_spent"] == entry["epsilon"]
