"""Finishing (``--finish-steps``, issue 31) and validation evaluation, as a skeptic checks them,
against the real encoder, Opacus and TenSEAL.

Finishing trains, after a client's last release, the tensors it keeps to itself without DP. The
claims checked here: it changes nothing that was or will be released (the ledger, the anchors,
``state.pt``, the egress records, metrics.jsonl are byte-identical before and after it; what a
finished run sent looks exactly like what an unfinished run sent), the shared tensors stay the
federation's, the finished model is written into the client's own directory only, and a run
extended with more rounds goes on from the DP-trained state, never from the finished one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import TINY_DP

from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.model.sharing import flatten
from secure_fedsa.privacy.anchor import default_anchor_dir
from secure_fedsa.site.client import FINISHED_ADAPTER, FINISHING_FILE
from secure_fedsa.site.private_stats import read_evaluation, read_rounds
from secure_fedsa.transports import federation
from secure_fedsa.transports.federation import Federation, Progress, load_summary, run_federation

pytestmark = pytest.mark.integration

STEPS = 3
CONFIG = {**TINY_DP, "rounds": 1, "finish_steps": STEPS, "validation_fraction": 0.2}
# what finishing may write; every other file of the run must not change
FINISH_WRITES = ("summary.json", "adapters/", "evaluation.json", f"{FINISHED_ADAPTER}/")


def _snapshot(*roots: Path) -> dict[str, str]:
    return {
        f"{root.name}/{p.relative_to(root)}": hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(w in str(p.relative_to(root)) for w in FINISH_WRITES)
    }


def _egress_shape(run_dir: Path) -> dict[str, list]:
    """What each client sent, without the bytes themselves (ciphertexts are randomised)."""
    out = {}
    for path in sorted((run_dir / "egress").glob("*.jsonl")):
        records = [json.loads(x) for x in path.read_text().splitlines()]
        out[path.stem] = [
            (r["round"], r["kind"], r["form"], r["bytes"], r["tensors"]) for r in records
        ]
    return out


def _adapter(directory: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(directory / "adapter_model.safetensors"),
        **{f"head.{k}": v for k, v in load_file(directory / "head.safetensors").items()},
    }


def _by_group(tensors: dict[str, torch.Tensor], group: str) -> list[torch.Tensor]:
    key = {"A": "lora_A", "B": "lora_B", "head": "head."}[group]
    return [tensors[k] for k in sorted(tensors) if key in k]


def _equal(one: dict, other: dict, group: str) -> list[bool]:
    """Per tensor of ``group``, whether ``one`` and ``other`` hold the same values."""
    pairs = zip(_by_group(one, group), _by_group(other, group), strict=True)
    return [torch.equal(a, b) for a, b in pairs]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run, with every file (and the ledger anchors) hashed just before finishing."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    anchors = default_anchor_dir()  # the session's (conftest), when a module fixture runs
    before: dict[str, str] = {}
    real = Federation.finish

    def snapshot_then_finish(self, seconds):  # noqa: ANN001
        before.update(_snapshot(run_dir, anchors))
        return real(self, seconds)

    patch = pytest.MonkeyPatch()
    patch.setattr(Federation, "finish", snapshot_then_finish)
    try:
        summary = run_federation(RunConfig(**CONFIG), run_dir)
    finally:
        patch.undo()
    return run_dir, summary, before, _snapshot(run_dir, anchors), anchors.name


# -- refused before anything is written ------------------------------------------------------
def test_finishing_with_nothing_to_finish_or_negative_steps_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="nothing to train"):
        RunConfig(method="fedit", head="shared", finish_steps=2)
    with pytest.raises(ConfigError, match="nothing to train"):
        RunConfig(method="ffa", head="shared", finish_steps=2)
    RunConfig(method="fedsa", head="shared", finish_steps=2)  # B is still the client's own
    out = tmp_path / "run"
    assert main(["run", "--finish-steps", "-1", "--out", str(out), "--quiet"]) == 2
    assert "finish-steps must be" in capsys.readouterr().err and not out.exists()


# -- what finishing leaves alone ---------------------------------------------------------------
def test_finishing_changes_no_ledger_no_state_and_nothing_that_was_sent(finished):
    run_dir, _, before, after, anchors = finished
    assert before == after
    for cid in ("client-0", "client-1"):  # the files that matter most, named
        for name in ("privacy_ledger.json", "state.pt", "rounds.jsonl"):
            assert f"run/clients/{cid}/{name}" in before
        assert f"run/egress/{cid}.jsonl" in before
    assert "run/metrics.jsonl" in before and "run/setup.json" in before
    assert sum(key.startswith(f"{anchors}/") for key in before) >= 2  # the ledgers' anchors


def test_a_finished_run_sent_exactly_what_an_unfinished_one_sends(finished, tmp_path):
    run_dir, *_ = finished
    plain = tmp_path / "plain"
    run_federation(RunConfig(**{**CONFIG, "finish_steps": 0}), plain)
    assert _egress_shape(run_dir) == _egress_shape(plain)
    assert not list(plain.rglob(FINISHED_ADAPTER))
    summary = json.loads((plain / "summary.json").read_text())
    assert summary["finish_steps"] == 0 and summary["finishing"].startswith("none")


def test_the_finished_model_keeps_the_shared_tensors_and_stays_in_the_clients_directory(finished):
    run_dir, *_ = finished
    for cid in ("client-0", "client-1"):
        own = run_dir / "clients" / cid / FINISHED_ADAPTER
        dp = _adapter(run_dir / "adapters" / cid)  # the DP model, the release, as before
        done = _adapter(own)
        state = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]
        assert all(_equal(dp, done, "A"))  # the aggregate, as the federation left it
        assert not any(_equal(dp, done, "B")) and not any(_equal(dp, done, "head"))
        head = sorted(k for k in state if k.startswith("head."))
        assert head and all(torch.equal(state[k], dp[k]) for k in head)  # the DP state
        note = json.loads((own / FINISHING_FILE).read_text())
        assert note["differentially_private"] is False and note["finish_steps"] == STEPS
        assert note["finished_tensors"] == ["B", "head"]
        # the finished tensors appear in no file outside the client's own directory
        needle = _by_group(done, "B")[0].numpy().tobytes()[:64]
        for path in run_dir.rglob("*"):
            if path.is_file() and not path.is_relative_to(run_dir / "clients" / cid):
                assert needle not in path.read_bytes(), path


def test_the_summary_the_evaluation_and_the_audit_say_what_finishing_means(finished, tmp_path):
    from audit_helpers import audit

    from audits.runner import audit_run

    run_dir, summary, *_ = finished
    shared = json.loads((run_dir / "summary.json").read_text())
    assert shared["finish_steps"] == STEPS
    assert "WITHOUT DP" in shared["finishing"] and "finished-adapter" in shared["finishing"]
    for cid in ("client-0", "client-1"):
        evaluation = read_evaluation(run_dir / "clients" / cid)
        assert evaluation["finish_steps"] == STEPS
        assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["accuracy_unfinished"] <= 1
        assert evaluation["accuracy"] == summary["evaluation"]["per_client"][cid]
    report = audit_run(run_dir)
    statement = report["privacy_statement"]
    assert "WITHOUT differential privacy" in statement["finishing"]
    # nothing was sent by finishing: the release tables list exactly the round's messages
    for rows in report["releases"]["per_client"].values():
        assert {r["round"] for r in rows} == {1}
        assert {r["kind"] for r in rows} == {
            "secagg-keys",
            "secagg-shares",
            "update",
            "secagg-survivors",
            "secagg-reveal",
        }
    bundle = tmp_path / "bundle"
    assert audit([str(run_dir), "--bundle", str(bundle)]) == 0
    assert not list(bundle.rglob(FINISHED_ADAPTER)) and not list(bundle.rglob("*.safetensors"))


def test_what_finishing_trains_per_method(tmp_path):
    """fedsa: B and head; --head shared: B only (the head is the federation's); ffa: the head
    (its B is shared, its A frozen); local: everything, since nothing is shared."""
    cases = {
        ("fedsa", "local"): {"B", "head"},
        ("fedsa", "shared"): {"B"},
        ("ffa", "local"): {"head"},
        ("local", "local"): {"A", "B", "head"},
    }
    for (method, head), groups in cases.items():
        config = RunConfig(**{**TINY_DP, "method": method, "head": head, "finish_steps": 2})
        fed = Federation(config, tmp_path / f"{method}-{head}", progress=Progress())
        client = fed.clients["client-0"]
        assert client.finished_groups() == groups
        generator = client.generator.get_state()
        saved = (client.directory / "state.pt").exists()
        before = {k: v.clone() for k, v in client.state.items()}
        done = client.finish(2)
        from secure_fedsa.model.encoder import tensor_group

        for name, value in done.items():
            changed = not torch.equal(value, before[name])
            if tensor_group(name) not in groups:
                assert not changed, (method, head, name)
        assert any(
            not torch.equal(done[n], before[n]) for n in done if tensor_group(n) in groups - {"A"}
        )
        assert all(torch.equal(client.state[k], before[k]) for k in before)  # state untouched
        assert torch.equal(client.generator.get_state(), generator)
        assert (client.directory / "state.pt").exists() == saved


@pytest.mark.e2e  # a whole federation no attacker story needs: on demand and in CI
def test_an_extended_run_trains_on_from_the_dp_state_and_finishes_again(tmp_path):
    config = RunConfig(**{**CONFIG, "validation_fraction": 0.0})
    run_dir = tmp_path / "run"
    run_federation(config, run_dir)
    dp_after_one = {
        cid: torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["state"]
        for cid in ("client-0", "client-1")
    }
    finished_one = _adapter(run_dir / "clients" / "client-0" / FINISHED_ADAPTER)
    seen: dict[str, dict] = {}
    real = federation.Client.train

    def train(self, round_number, on_step=None):  # noqa: ANN001
        seen[self.client_id] = {k: v.clone() for k, v in self.state.items()}
        return real(self, round_number, on_step=on_step)

    patch = pytest.MonkeyPatch()
    patch.setattr(federation.Client, "train", train)
    try:
        run_federation(config.replace(rounds=2), run_dir, resume=True)
    finally:
        patch.undo()
    for cid, state in dp_after_one.items():  # round 2 started from the DP state of round 1
        assert all(torch.equal(seen[cid][k], state[k]) for k in state)
    assert not any(_equal(finished_one, seen["client-0"], "B"))  # not the finished B
    # and the run finished again, at its new end, from round 2's DP state
    again = _adapter(run_dir / "clients" / "client-0" / FINISHED_ADAPTER)
    assert not any(_equal(again, finished_one, "A"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["finish_steps"] == STEPS


# -- validation evaluation -------------------------------------------------------------------
def test_validation_accuracy_is_kept_with_the_test_accuracy_and_read_back(finished):
    run_dir, summary, *_ = finished
    for cid in ("client-0", "client-1"):
        for record in read_rounds(run_dir / "clients" / cid):
            assert 0 <= record["accuracy_validation_subset"] <= 1
        evaluation = read_evaluation(run_dir / "clients" / cid)
        assert 0 <= evaluation["accuracy_validation"] <= 1
        assert evaluation["validation_examples"] > 0
        assert "accuracy_validation_unfinished" in evaluation
    loaded = load_summary(run_dir)["evaluation"]
    per_client = loaded["validation_per_client"]
    assert set(per_client) == {"client-0", "client-1"}
    assert loaded["validation_mean"] == pytest.approx(sum(per_client.values()) / 2)
    assert summary["evaluation"]["validation_per_client"] == per_client
    # private, like test accuracy: not in the run's shared files
    for name in ("metrics.jsonl", "summary.json", "setup.json"):
        assert "validation" not in (run_dir / name).read_text().replace("validation_fraction", "")


def test_without_a_validation_split_there_is_no_validation_accuracy(shared_run):
    run_dir, _ = shared_run(RunConfig(**{**TINY_DP, "rounds": 1}))  # test_dp_soundness's too
    loaded = load_summary(run_dir)["evaluation"]
    assert loaded["validation_per_client"] is None and loaded["validation_mean"] is None
    for cid in ("client-0", "client-1"):
        assert "accuracy_validation_subset" not in read_rounds(run_dir / "clients" / cid)[0]
        assert "accuracy_validation" not in read_evaluation(run_dir / "clients" / cid)


def test_evaluate_takes_a_split_and_refuses_an_unknown_one(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished[0], run_dir)
    fed = Federation(RunConfig(**CONFIG), run_dir, progress=Progress(), resume=True)
    client = fed.clients["client-0"]
    validation = client.evaluate(split="validation")
    evaluation = read_evaluation(run_dir / "clients" / "client-0")
    assert validation == evaluation["accuracy_validation_unfinished"]  # the DP model's
    assert client.evaluate() == evaluation["accuracy_unfinished"]
    finished_state = client.finish(STEPS)
    assert (
        client.evaluate(split="validation", state=finished_state)
        == evaluation["accuracy_validation"]
    )
    from secure_fedsa.errors import SecureFedsaError

    with pytest.raises(SecureFedsaError, match="unknown split"):
        client.evaluate(split="train")
    assert (
        flatten(finished_state, client.manifest).tolist()
        == flatten(client.state, client.manifest).tolist()
    )
