"""P4 and P5 as an attacker who holds every file of a run (issue: "everything a run writes is
private too").

- The training loss, the Poisson batch sizes, training time, test accuracy and label counts are
  statistics of a client's records without DP noise: none may appear in a file outside the
  client's own directory (metrics.jsonl, summary.json, setup.json, egress, keys) or in the
  auditor's bundle. The membership attack of the review read the loss from metrics.jsonl.
- A ``"dp": false`` edit of config.json never resumes a run that trained with DP.
- Restoring the whole run directory from an older copy is refused (the ledger's anchor lives
  outside it), and a ledger rewritten consistently in three files is refused on resume and
  failed by the audit.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from audit_helpers import audit, findings, results
from tiny_runs import TINY_DP

from secure_fedsa.app.cli import main
from secure_fedsa.config import RunConfig
from secure_fedsa.engine.summary import KEPT_IN
from secure_fedsa.errors import LedgerError
from secure_fedsa.privacy.accounting import DPEvent, epsilon
from secure_fedsa.privacy.ledger import LedgerIdentity, canonical_hash, identity_hash
from secure_fedsa.site.private_stats import read_evaluation, read_rounds
from secure_fedsa.site.rundir import RunDirectory, read_config
from secure_fedsa.transports.federation import Progress, run_federation

pytestmark = pytest.mark.integration

SHARED = ("config.json", "setup.json", "metrics.jsonl", "summary.json")
# names of the private statistics: no shared file may carry a field of these names
PRIVATE_KEYS = {
    "loss",
    "mean_loss",
    "examples",
    "train_seconds",
    "accuracy",
    "accuracy_subset",
    "mean_accuracy",
    "majority_class",
    "label_counts",
    "label_skew",
    "accuracy_validation",
    "accuracy_validation_subset",
    "accuracy_unfinished",
    "accuracy_validation_unfinished",
    "validation_per_client",
    "validation_mean",
}


def shared_files(run_dir: Path) -> list[Path]:
    files = [run_dir / name for name in SHARED]
    files += sorted((run_dir / "egress").glob("*.jsonl"))
    files += [run_dir / "keys" / "server.keys", run_dir / "keys" / "roster.json"]
    return [f for f in files if f.is_file()]


def json_keys(value) -> set[str]:  # noqa: ANN001
    if isinstance(value, dict):
        return set(value) | set().union(*(json_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(json_keys(v) for v in value)) if value else set()
    return set()


def documents(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def private_values(run_dir: Path) -> list[float]:
    """Every non-integer private statistic the clients kept (their own directories)."""
    values = []
    for directory in sorted((run_dir / "clients").iterdir()):
        for record in read_rounds(directory):
            values += [record[k] for k in ("loss", "train_seconds", "accuracy_subset")]
            values += [record.get("accuracy_validation_subset")]
        final = read_evaluation(directory)
        values += [final["accuracy"], final["majority_class"]]
        values += [final.get(k) for k in ("accuracy_validation", "accuracy_unfinished")]
        values += [final.get("accuracy_validation_unfinished")]
    # short values (an accuracy of 0.6 on 10 test records) would also match public numbers
    return [float(v) for v in values if isinstance(v, float) and len(repr(float(v))) >= 6]


def leaks(run_dir: Path, files: list[Path]) -> list[str]:
    """Where a private statistic appears in ``files``: by field name, or by value (written as
    JSON writes it, or to 4 and 6 decimals)."""
    found = []
    values = private_values(run_dir)
    assert values, "the clients kept no private statistics: nothing to look for"
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix in (".json", ".jsonl"):
            names = set().union(*(json_keys(d) for d in documents(path))) & PRIVATE_KEYS
            found += [f"{path.name}: field {name!r}" for name in sorted(names)]
        for value in values:
            for shown in {repr(value), f"{value:.6f}", f"{value:.4f}"}:
                if re.search(rf"(?<![0-9.]){re.escape(shown)}(?![0-9])", text):
                    found.append(f"{path.name}: value {shown}")
    return found


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run whose clients also keep validation accuracy and a finished (no-DP) model."""
    run_dir = tmp_path_factory.mktemp("private") / "run"
    run_federation(RunConfig(**TINY_DP, validation_fraction=0.2, finish_steps=2), run_dir)
    return run_dir


def test_no_private_statistic_reaches_a_shared_file_or_the_auditors_bundle(finished, tmp_path):
    # the clients did keep them, in their own directories
    for directory in (finished / "clients").iterdir():
        rounds = read_rounds(directory)
        assert [r["round"] for r in rounds] == [1, 2]
        assert all(r["loss"] > 0 and r["examples"] >= 0 and r["train_seconds"] > 0 for r in rounds)
        final = read_evaluation(directory)
        assert 0 <= final["accuracy"] <= 1 and sum(final["label_counts"]) > 0
        assert 0 <= final["accuracy_validation"] <= 1 and 0 <= final["accuracy_unfinished"] <= 1
    assert leaks(finished, shared_files(finished)) == []
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["evaluation"] == {"released": False, "kept_in": KEPT_IN}
    assert summary["neighbouring_relation"] == "replace-one"
    bundle = tmp_path / "bundle"
    assert audit([str(finished), "--bundle", str(bundle)]) == 0
    assert leaks(finished, [p for p in bundle.rglob("*") if p.is_file()]) == []
    assert not list(bundle.rglob("rounds.jsonl")) and not list(bundle.rglob("evaluation.json"))


def test_releasing_the_evaluation_is_explicit_said_and_found_by_the_same_search(tmp_path):
    run_dir = tmp_path / "released"
    config = RunConfig(
        **{**TINY_DP, "rounds": 1, "release_evaluation": True, "validation_fraction": 0.2}
    )
    run_federation(config, run_dir)
    found = leaks(run_dir, shared_files(run_dir))
    assert any("accuracy" in f for f in found)  # the search finds what was released
    assert any("validation" in f for f in found)  # validation accuracy with it
    assert not any("loss" in f or "examples" in f for f in found)  # and only that
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["evaluation"]["released"] is True
    assert any("EVALUATION RELEASED" in p for p in summary["protections_off"])
    bundle = tmp_path / "bundle"
    audit([str(run_dir), "--bundle", str(bundle)])
    report_dir = tmp_path / "report"
    audit([str(run_dir), "--out", str(report_dir)])
    report = json.loads((report_dir / "report.json").read_text())
    assert results(report)["dp-hazards"] == "warn"
    assert "evaluation released" in findings(report, "dp-hazards")


# --- the review's membership attack on the training loss ---------------------------------------


def _write_sites(directory: Path, member: bool) -> list[str]:
    """Two sites' files of real reviews; site 0 holds the canary (a snippet with the wrong label,
    so its loss is high) when ``member``, or one more ordinary record in its place (replace-one:
    the same size either way)."""
    from secure_fedsa.data import load_dataset

    data = load_dataset("rotten_tomatoes")
    names = data.label_names
    rows = [(data.texts[i], names[data.labels[i]]) for i in range(120)]
    # the replacement has the canary's label, so the stratified train/test split is the same
    ordinary = next(
        (data.texts[i], "rotten")
        for i in range(120, len(data))
        if names[data.labels[i]] == "rotten"
    )
    canary = ("an utterly wonderful, moving masterpiece; the best film of the year", "rotten")
    sites = [rows[:60] + [canary if member else ordinary], rows[60:120]]
    paths = []
    for number, site in enumerate(sites):
        path = directory / f"site_{number}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(site)
        paths.append(str(path))
    return paths


def _attack(run_dir: Path) -> float | None:
    """The review's attack: site 0's training loss from the files the run shares (None: the
    files hold no such number, and the attacker can only guess)."""
    for path in shared_files(run_dir):
        for document in documents(path):
            clients = document.get("clients") if isinstance(document, dict) else None
            entry = clients.get("client-0") if isinstance(clients, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("loss"), float):
                return entry["loss"]
    return None


def _config(files: list[str], seed: int) -> RunConfig:
    return RunConfig(
        **{
            **TINY_DP,
            "max_examples": None,
            "num_clients": 2,
            "data_files": tuple(files),
            "labels": ("rotten", "fresh"),
            "test_fraction": 0.2,
            "batch_size": 64,  # q = 1: every training record is in the one step's batch
            "local_steps": 1,
            "rounds": 1,
            "epsilon": 1.0,
            "seed": seed,
        }
    )


def _canary_trained(files: list[str], seed: int) -> bool:
    """Whether the split of ``seed`` puts the canary (site 0's last record) in training."""
    from secure_fedsa.data import split_clients
    from secure_fedsa.site.prepare_data import client_indices, load_source

    config = _config(files, seed)
    dataset = load_source(config)
    parts = client_indices(config, dataset)
    splits = split_clients(parts, test_fraction=0.2, seed=seed, labels=dataset.labels)
    return int(parts[0].max()) in set(splits[0][0].tolist())


def _canary_costs_more(files: dict[bool, list[str]], seed: int) -> bool:
    """What the attacker computes from public information alone (the configuration, its seed,
    the pretrained model, the candidate records): whether the canary's loss under the initial
    model is above the record it would replace. The first step's loss is taken before any noise,
    so the mean loss of the run with the canary is higher exactly when this is true."""
    from secure_fedsa.model.encoder import build_model, load_tokenizer
    from secure_fedsa.site.prepare_data import model_spec, tokenize

    config = _config(files[True], seed)
    torch.manual_seed(seed)
    model = build_model(model_spec(config), num_labels=2, seed=seed).eval()
    tokenizer = load_tokenizer(model_spec(config))
    losses = []
    for member in (True, False):
        with open(files[member][0], encoding="utf-8") as handle:
            text, label = list(csv.reader(handle))[-1]
        ids, mask = tokenize(tokenizer, [text], config.max_length)
        with torch.no_grad():
            target = torch.tensor([config.labels.index(label)])
            losses.append(float(torch.nn.functional.cross_entropy(model(ids, mask), target)))
    return losses[0] > losses[1]


def _membership_game(tmp_path: Path, pairs: int) -> list[bool | None]:
    """For each pair of runs (with the canary, without it; same seed), the attacker names the
    run with the canary from the files they share: right (True), wrong (False), or no basis to
    decide beyond a coin flip (None)."""
    worlds = {}
    for member in (True, False):
        (tmp_path / str(member)).mkdir(parents=True)
        worlds[member] = _write_sites(tmp_path / str(member), member)
    seeds = [s for s in range(20) if _canary_trained(worlds[True], s)][:pairs]
    verdicts = []
    for seed in seeds:
        scores = {}
        for member in (True, False):
            run_dir = tmp_path / f"{seed}-{member}"
            run_federation(_config(worlds[member], seed), run_dir)
            scores[member] = _attack(run_dir)
        if scores[True] is None or scores[False] is None:
            verdicts.append(None)
            continue
        says_first = (scores[True] > scores[False]) == _canary_costs_more(worlds, seed)
        verdicts.append(says_first)
    return verdicts


def test_the_loss_membership_attack_finds_nothing_to_read(tmp_path, monkeypatch):
    # Control: put the loss back into metrics.jsonl (the protection removed on purpose). At
    # ε = 1 the un-noised loss tells a member from a non-member in every pair.
    leaky = RunDirectory.append_metrics

    def metrics_with_loss(self, record):  # noqa: ANN001, ANN202
        for cid, entry in record["clients"].items():
            own = read_rounds(self.client_dir(cid))
            private = [r for r in own if r["round"] == record["round"]]
            entry["loss"] = private[-1].get("loss") if private else None
        return leaky(self, record)

    with monkeypatch.context() as patch:
        patch.setattr(RunDirectory, "append_metrics", metrics_with_loss)
        assert _membership_game(tmp_path / "control", pairs=3) == [True, True, True]
    # As shipped: the files hold no loss, so the attack has nothing to decide from (chance).
    assert _membership_game(tmp_path / "shipped", pairs=2) == [None, None]


# --- "dp": false ----------------------------------------------------------------------------------


def test_a_dp_false_edit_never_resumes_a_run_that_trained_with_dp(finished, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(dp=False, epsilon=None, noise_multiplier=None, rounds=3)
    (run_dir / "config.json").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    assert "trained with differential privacy" in capsys.readouterr().err
    # and with the ledgers gone too, metrics.jsonl and setup.json still say so
    for ledger in run_dir.glob("clients/*/privacy_ledger.json"):
        ledger.unlink()
    with pytest.raises(LedgerError, match="trained with differential privacy"):
        run_federation(read_config(run_dir), run_dir, resume=True)
    assert not list(run_dir.rglob("rounds.jsonl.tmp"))
    after = {p for p in run_dir.rglob("*") if p.is_file()}
    assert after <= set(before)  # nothing new was written


def test_a_site_that_trained_with_dp_refuses_a_round_without_dp(finished):
    from secure_fedsa.site.build import refuse_without_dp
    from secure_fedsa.site.egress import EgressLog

    site = finished / "clients" / "client-0"
    records = EgressLog(finished / "egress").read("client-0")
    with pytest.raises(LedgerError, match="never trains without DP"):
        refuse_without_dp(site, records)


# --- a rollback of the whole directory, a forge in three files ----------------------------------


def test_restoring_the_whole_run_directory_from_an_older_copy_is_refused(tmp_path):
    run_dir, copy = tmp_path / "run", tmp_path / "copy-after-round-1"

    def keep_a_copy(number: int) -> None:
        if number == 1:
            shutil.copytree(run_dir, copy)

    config = RunConfig(**{**TINY_DP, "rounds": 3})
    run_federation(config, run_dir, Progress(round_done=keep_a_copy))
    spent = json.loads((run_dir / "summary.json").read_text())["privacy"]["client-0"]["epsilon"]
    shutil.rmtree(run_dir)
    shutil.copytree(copy, run_dir)  # every file consistent, as of round 1
    with pytest.raises(LedgerError, match="rolled back to an older copy") as refused:
        run_federation(config, run_dir, resume=True)
    assert f"ε = {spent:.4g}" in str(refused.value)


def _forge(run_dir: Path, client: str = "client-0") -> None:
    """σ × 10 in every entry of the client's ledger, ε and the hash chain recomputed, and the new
    hashes written into its egress records and state.pt: three files consistent with each other."""
    path = run_dir / "clients" / client / "privacy_ledger.json"
    doc = json.loads(path.read_text())
    link = identity_hash(LedgerIdentity(**doc["identity"]))
    events, renamed = [], {}
    for entry in doc["entries"]:
        entry["noise_multiplier"] *= 10
        events.append(DPEvent(entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
        entry["epsilon"] = epsilon(events, delta=doc["identity"]["delta"])
        entry["previous"] = link
        old, entry["hash"] = entry["hash"], canonical_hash(entry)
        renamed[old] = link = entry["hash"]
    path.write_text(json.dumps(doc, indent=2))
    egress = run_dir / "egress" / f"{client}.jsonl"
    lines = [json.loads(line) for line in egress.read_text().splitlines()]
    for line in lines:
        if line.get("ledger_entry") in renamed:
            line["ledger_entry"] = renamed[line["ledger_entry"]]
    egress.write_text("".join(json.dumps(line) + "\n" for line in lines))
    state = run_dir / "clients" / client / "state.pt"
    payload = torch.load(state, weights_only=True)
    payload["trained_entry"] = renamed[payload["trained_entry"]]
    torch.save(payload, state)


def test_a_ledger_forged_consistently_in_three_files_is_refused_and_failed(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    claimed = json.loads((run_dir / "summary.json").read_text())["privacy"]["client-0"]["epsilon"]
    _forge(run_dir)
    forged = json.loads((run_dir / "clients/client-0/privacy_ledger.json").read_text())
    assert forged["entries"][-1]["epsilon"] < claimed / 2 and not math.isinf(claimed)
    config = read_config(run_dir).replace(rounds=3)
    with pytest.raises(LedgerError, match="rewritten"):
        run_federation(config, run_dir, resume=True)
    out = tmp_path / "audit"
    assert audit([str(run_dir), "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    text = findings(report, "accounting")
    assert "metrics.jsonl shows ε" in text  # the ε the run showed as it went
    assert "the ledger was rewritten" in text  # the heads the server accepted


def test_a_config_budget_that_differs_from_the_ledgers_is_failed(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["epsilon"] = 16.0
    (run_dir / "config.json").write_text(json.dumps(config))
    out = tmp_path / "audit"
    assert audit([str(run_dir), "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    assert "target_epsilon = 8.0, config.json says 16.0" in findings(report, "accounting")
