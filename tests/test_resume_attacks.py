"""P5 as an attacker (or a careless operator) tries it: reset the budget by editing files, resume.

Each case starts from a finished DP run, edits the run directory the way an attacker would
(delete, empty, trim or consistently rewrite a ledger; delete the state or the egress record too;
raise the budget or the rounds in config.json) and resumes. Every case must stop before any
training with a clear error and leave every file exactly as it was: the privacy a client spent is
never forgotten. Then the legitimate paths: a crash between the ledger write and the state write
is retried and charged again, and a run is extended only within its ledger's budget.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from tiny_runs import TINY_DP

from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import LedgerError
from secure_fedsa.privacy.accounting import DPEvent, epsilon
from secure_fedsa.privacy.ledger import canonical_hash, identity_hash
from secure_fedsa.site.client import Client
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

BASE = TINY_DP
LEDGER = "clients/client-0/privacy_ledger.json"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_federation(RunConfig(**BASE), run_dir)
    return run_dir


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _fingerprint(run_dir) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def _edit_json(path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=2))


def _rechain(doc) -> None:
    """Recompute every ε and every hash so the ledger is consistent in itself."""
    events, link = [], canonical_hash(doc["identity"])
    for entry in doc["entries"]:
        events.append(DPEvent(entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
        entry["epsilon"] = epsilon(events, delta=1e-5, accountant=doc["identity"]["accountant"])
        entry["previous"] = link
        entry["hash"] = canonical_hash(entry)
        link = entry["hash"]


def _delete_ledger(run_dir):
    (run_dir / LEDGER).unlink()


def _empty_entries(run_dir):
    _edit_json(run_dir / LEDGER, lambda doc: doc.update(entries=[]))


def _drop_last_entry(run_dir):
    def edit(doc):
        doc["entries"].pop()
        _rechain(doc)

    _edit_json(run_dir / LEDGER, edit)


def _forge_sigma_consistently(run_dir):
    def edit(doc):
        for entry in doc["entries"]:
            entry["noise_multiplier"] *= 3
        _rechain(doc)

    _edit_json(run_dir / LEDGER, edit)


def _delete_ledger_and_state(run_dir):
    _delete_ledger(run_dir)
    (run_dir / "clients/client-0/state.pt").unlink()


def _delete_ledger_state_and_egress(run_dir):
    _delete_ledger_and_state(run_dir)
    (run_dir / "egress/client-0.jsonl").unlink()


@pytest.mark.parametrize(
    "attack, message",
    [
        (_delete_ledger, "missing"),
        # caught first by the ledger's anchor, outside the run directory
        (_empty_entries, "rolled back"),
        (_drop_last_entry, "rolled back"),
        (_forge_sigma_consistently, "rewritten"),
        (_delete_ledger_and_state, "missing.*egress record"),
        (_delete_ledger_state_and_egress, "missing.*metrics.jsonl"),
    ],
    ids=lambda x: getattr(x, "__name__", "").lstrip("_"),
)
def test_a_reset_ledger_stops_the_resume_and_changes_nothing(run, attack, message):
    attack(run)
    before = _fingerprint(run)
    config = RunConfig(**{**BASE, "rounds": 3})  # as if more rounds were wanted
    with pytest.raises(LedgerError, match=message):
        run_federation(config, run, resume=True)
    assert _fingerprint(run) == before


@pytest.mark.parametrize(
    "attack",
    [_empty_entries, _drop_last_entry, _forge_sigma_consistently],
    ids=lambda x: x.__name__,
)
def test_without_the_anchor_the_releases_still_give_a_reset_away(run, attack):
    """The second line of defence: the state and egress records the ledger no longer explains
    (what a site whose anchors were lost still has)."""
    from secure_fedsa.privacy.continuity import open_history
    from secure_fedsa.site.build import client_releases
    from secure_fedsa.site.egress import EgressLog

    attack(run)
    directory = run / "clients" / "client-0"
    releases = client_releases(directory, EgressLog(run / "egress").read("client-0"))
    with pytest.raises(LedgerError, match="does not account for"):
        open_history(run / LEDGER, releases, anchors=None)


def test_the_forged_ledger_is_consistent_in_itself(run):
    """The forgery above passes every check a ledger can make alone; its anchor, and the
    releases it no longer explains, give it away."""
    from secure_fedsa.privacy.ledger import PrivacyLedger

    _forge_sigma_consistently(run)
    ledger = PrivacyLedger.read(run / LEDGER)
    assert ledger.entries[0].previous == identity_hash(ledger.identity)
    assert ledger.epsilon_spent < 8.0 / 2  # the forged history claims far less spent


def test_the_cli_refuses_with_exit_2_and_one_line(run, capsys):
    _delete_ledger(run)
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "privacy ledger is missing" in err[-1]


def test_raising_the_budget_in_config_json_is_refused(run):
    _edit_json(run / "config.json", lambda doc: doc.update(epsilon=16.0))
    before = _fingerprint(run)
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    with pytest.raises(LedgerError, match="budget is ε = 8.0.*authority"):
        run_federation(RunConfig(**{**BASE, "epsilon": 16.0}), run, resume=True)
    assert _fingerprint(run) == before


def test_more_rounds_in_config_json_stay_within_the_ledgers_budget(run, capsys):
    sigma = json.loads((run / LEDGER).read_text())["entries"][-1]["noise_multiplier"]
    _edit_json(run / "config.json", lambda doc: doc.update(rounds=4))
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    entries = json.loads((run / LEDGER).read_text())["entries"]
    assert [e["round"] for e in entries] == [1, 2, 3, 4]
    assert entries[-1]["epsilon"] <= 8.0  # the ledger's budget, not config.json's wishes
    more = entries[-1]["noise_multiplier"]
    assert more > 5 * sigma  # almost nothing was left: the extra rounds are mostly noise
    assert f"σ = {more:.4g} for the rounds left" in err and "unlikely to learn" in err


def test_more_rounds_than_any_noise_can_pay_for_are_refused(tmp_path, capsys):
    # σ given with a budget: two rounds spend (almost) all of it
    base = {**BASE, "rounds": 2, "noise_multiplier": 1.5, "epsilon": 2.5}
    run_dir = tmp_path / "spent"
    run_federation(RunConfig(**base), run_dir)
    before = _fingerprint(run_dir)
    assert main(["run", "--resume", str(run_dir), "--rounds", "5", "--quiet"]) == 0
    entries = json.loads((run_dir / LEDGER).read_text())["entries"]
    assert len(entries) == 2 and entries[-1]["epsilon"] <= 2.5  # nothing more fit
    assert "budget exhausted" in capsys.readouterr().err
    assert _fingerprint(run_dir) != before  # metrics record the refusals


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--epsilon", "1"], "--epsilon 1.0"),
        (["--clip", "2"], "--clip 2.0"),
        (["--no-dp"], "--no-dp"),
        (["--method", "fedit"], "--method fedit"),
        (["--out", "elsewhere"], "--out"),
    ],
)
def test_resume_flags_that_conflict_are_named(run, capsys, flags, named):
    before = _fingerprint(run)
    assert main(["run", "--resume", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "error:" in err
    assert _fingerprint(run) == before


def test_a_flag_equal_to_the_stored_value_is_accepted(run, capsys):
    # same ε as stored: no conflict; the finished run just re-exports
    assert main(["run", "--resume", str(run), "--epsilon", "8", "--quiet"]) == 0


class _Crash(Exception):
    pass


def test_a_crash_between_ledger_and_state_is_retried_and_charged_again(tmp_path, monkeypatch):
    config = RunConfig(**{**BASE, "rounds": 3})
    run_dir = tmp_path / "crash"
    real_save = Client._save

    def dies_after_charging_round_2(self):
        if self.client_id == "client-0" and self.trained_round == 2:
            raise _Crash  # the ledger has round 2; state.pt still has round 1
        real_save(self)

    monkeypatch.setattr(Client, "_save", dies_after_charging_round_2)
    with pytest.raises(_Crash):
        run_federation(config, run_dir)
    monkeypatch.setattr(Client, "_save", real_save)
    ledger = json.loads((run_dir / LEDGER).read_text())
    assert [e["round"] for e in ledger["entries"]] == [1, 2]

    summary = run_federation(config, run_dir, resume=True)  # recoverable, not refused
    entries = json.loads((run_dir / LEDGER).read_text())["entries"]
    assert [e["round"] for e in entries] == [1, 2, 2, 3]  # round 2 counted twice, never zero
    assert entries[1]["hash"] != entries[2]["hash"]
    assert summary["privacy"]["client-0"]["epsilon"] <= 8.0
    # σ for the rounds left was recalibrated against the history, not from scratch
    sigmas = [e["noise_multiplier"] for e in entries]
    assert sigmas[2] > sigmas[1] and sigmas[2] == sigmas[3]
    assert summary["privacy"]["client-0"]["noise_multipliers"] == sorted(set(sigmas))
    egress = [json.loads(x) for x in (run_dir / "egress/client-0.jsonl").read_text().splitlines()]
    assert [e["round"] for e in egress if e["kind"] == "update"] == [1, 2, 3]

    from audits.runner import audit_run

    report = audit_run(run_dir)
    results = {c["name"]: c for c in report["checks"]}
    for name in ("ledger-integrity", "accounting", "egress"):
        assert results[name]["result"] == "pass", results[name]["findings"]
    assert any("charged again" in f for f in results["ledger-integrity"]["findings"])


def test_a_run_is_extended_only_within_its_budget(tmp_path, capsys):
    # σ given with a budget: one round spends a little; extending to two fits
    base = {**BASE, "rounds": 1, "noise_multiplier": 2.0}
    run_dir = tmp_path / "extend"
    run_federation(RunConfig(**base), run_dir)
    assert main(["run", "--resume", str(run_dir), "--rounds", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "extending" in err and "σ = 2" in err
    assert json.loads((run_dir / "config.json").read_text())["rounds"] == 2
    entries = json.loads((run_dir / LEDGER).read_text())["entries"]
    assert [e["round"] for e in entries] == [1, 2]


def test_sigma_and_budget_together_say_how_many_rounds_fit(tmp_path):
    config = RunConfig(**{**BASE, "rounds": 6, "noise_multiplier": 1.5, "epsilon": 2.0})
    run_dir = tmp_path / "short"
    messages = []
    from secure_fedsa.transports.federation import Progress

    summary = run_federation(config, run_dir, Progress(message=messages.append))
    setup = json.loads((run_dir / "setup.json").read_text())
    plan = setup["privacy"]["client-0"]
    fits = plan["rounds_within_budget"]
    assert fits is not None and 0 < fits < 6
    assert any("budget-short" in str(h) for h in plan["hazards"])
    assert any(f"trains {fits} of the 6" in m for m in messages)
    ledger = json.loads((run_dir / LEDGER).read_text())
    assert len(ledger["entries"]) == fits  # the plan said it, the run did it
    assert summary["privacy"]["client-0"]["epsilon"] <= 2.0
