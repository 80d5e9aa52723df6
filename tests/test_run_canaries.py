"""The run-level canary audit (issue 34.1): canaries in each client's own DP-SGD, committed in its
ledger, kept in its own directory, scored and bounded by ``secure-fedsa audit``."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from planted_bugs import clip_not_applied
from tiny_runs import TINY_AUDIT
from torch import nn
from torch.utils.data import TensorDataset

from audits import check_run_canary as audit_side
from audits.canary_audit import audit_scores, certifiable_epsilon, chosen_guesses
from audits.runner import audit_run
from secure_fedsa.config import DEFAULT_CANARIES, RunConfig
from secure_fedsa.errors import ConfigError, PrivacyError
from secure_fedsa.privacy import canaries as core
from secure_fedsa.privacy.randomness import SeededTestRandom
from secure_fedsa.site.training import DPSettings, PoissonSampler, train_dp

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- pure functions
@given(size=st.integers(1, 10_000), data=st.data())
def test_canary_coordinates_are_distinct_sorted_and_inside_the_shared_vector(size, data):
    m = data.draw(st.integers(1, size))
    coords = core.canary_coordinates(size, m)
    assert len(coords) == m == len(set(coords))
    assert list(coords) == sorted(coords) and coords[0] >= 0 and coords[-1] < size
    assert list(coords) == audit_side.coordinates(size, m)  # the audit's own formula agrees


@given(
    size=st.one_of(st.integers(-5, 10), st.booleans(), st.floats()),
    m=st.one_of(st.integers(-5, 20), st.booleans(), st.floats(), st.none()),
)
def test_canary_coordinates_refuse_what_cannot_hold_the_canaries(size, m):
    valid = (
        isinstance(m, int) and not isinstance(m, bool) and m >= 1
        and isinstance(size, int) and not isinstance(size, bool) and size >= m
    )  # fmt: skip
    if valid:
        assert len(core.canary_coordinates(size, m)) == m
    else:
        with pytest.raises(PrivacyError):
            core.canary_coordinates(size, m)


@given(
    bits=st.lists(st.booleans(), min_size=1, max_size=64), salt=st.binary(min_size=16, max_size=16)
)
def test_the_commitment_binds_every_bit_and_the_audit_recomputes_it(bits, salt):
    salt = salt.hex()
    committed = core.commitment(bits, salt)
    assert committed == audit_side.commitment([int(b) for b in bits], salt)
    for j in range(len(bits)):
        flipped = [*bits[:j], not bits[j], *bits[j + 1 :]]
        assert core.commitment(flipped, salt) != committed


# m canaries and up to 4 rounds of m values each (released updates or noisy sums)
ROUND_ROWS = st.integers(1, 8).flatmap(
    lambda m: st.lists(
        st.lists(st.floats(-1e3, 1e3), min_size=m, max_size=m), min_size=0, max_size=4
    ).map(lambda rows: (m, rows))
)


@given(ROUND_ROWS)
def test_scores_are_minus_the_summed_releases_in_the_client_and_the_audit(case):
    m, rows = case
    ours, theirs = core.scores(rows, m), audit_side.canary_scores(rows, m)
    assert ours == pytest.approx(theirs)
    assert ours == pytest.approx([-sum(r[j] for r in rows) for j in range(m)])


@given(ROUND_ROWS)
def test_noisy_sum_scores_are_the_summed_rows_in_the_client_and_the_audit(case):
    m, rows = case
    ours, theirs = core.noisy_sum_scores(rows, m), audit_side.noisy_sum_scores(rows, m)
    assert ours == pytest.approx(theirs)
    assert ours == pytest.approx([sum(r[j] for r in rows) for j in range(m)])


def _released(bits: list[bool], signal: float, noise: list[float]) -> list[list[float]]:
    """One round's releases on the canary coordinates: descent turns the + canary (bit 1) into
    a negative update, the − canary into a positive one."""
    return [[(-signal if b else signal) + z for b, z in zip(bits, noise, strict=True)]]


def test_bit_one_is_the_analysis_included_so_a_perfect_separation_reaches_the_ceiling():
    bits = [j % 3 == 0 for j in range(2000)]
    scores = audit_side.canary_scores(_released(bits, 1.0, [0.0] * 2000), 2000)
    audit = audit_scores(scores, bits, delta=1e-5)
    assert audit.lower_bound == pytest.approx(audit.ceiling)
    assert audit.lower_bounds["gaussian-fdp"] > 8 > audit.lower_bounds["epsilon-delta"]
    # read the other way round (bit 0 as "in"), the same releases certify nothing
    flipped = audit_scores(scores, [not b for b in bits], delta=1e-5)
    assert flipped.lower_bound == 0


def test_releases_that_ignore_the_bits_certify_almost_nothing():
    bits = [j % 2 == 0 for j in range(2000)]
    noise = torch.randn(2000, generator=torch.Generator().manual_seed(0)).tolist()
    scores = audit_side.canary_scores(_released(bits, 0.0, noise), 2000)
    assert audit_scores(scores, bits, delta=1e-5).lower_bound < 0.5


def test_the_default_canaries_can_certify_epsilon_8_at_the_default_delta():
    ceilings = certifiable_epsilon(DEFAULT_CANARIES, delta=RunConfig.delta)
    assert ceilings["gaussian-fdp"] >= 8.0 > ceilings["epsilon-delta"]
    # and so can the one set of guesses the run-level audit chooses for a claim of 8
    history = [(4.0, 1.0, 2), (4.0, 1.0, 2)]  # the tiny run: q = 1, 2 rounds of 2 steps
    chosen = chosen_guesses(
        DEFAULT_CANARIES, history, claimed=8.0, delta=RunConfig.delta, analyses=("gaussian-fdp",)
    )
    one = certifiable_epsilon(
        DEFAULT_CANARIES, delta=RunConfig.delta, fractions=(chosen,), analyses=("gaussian-fdp",)
    )
    assert one["gaussian-fdp"] > 10.0


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    )
)
def test_a_malformed_canary_file_is_described_never_crashes(doc):
    assert isinstance(core.document_problems(doc), list)
    assert core.document_problems(doc) or isinstance(doc, dict)


# --------------------------------------------------------------------------- in DP-SGD
class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.linear(input_ids)


def _one_step(model: nn.Module, data: TensorDataset, canaries=None):  # noqa: ANN001, ANN202
    dp = DPSettings(noise_multiplier=0.0, clip=0.5, sample_rate=1.0)
    source = SeededTestRandom(0)
    return train_dp(
        model,
        data,
        steps=1,
        dp=dp,
        physical_batch_size=3,  # two pieces: canaries join the last one
        lr=1.0,
        randomness=source,
        optimizer="sgd",
        canaries=canaries,
    )


def _setup():  # noqa: ANN202
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(5, 4), torch.ones(5, 4), torch.tensor([0, 1, 0, 1, 1]))
    model = _Linear()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    gradients = core.CanaryGradients(
        targets=((model.linear.weight, 1), (model.linear.weight, 6), (model.linear.bias, 0)),
        signs=(1.0, -1.0, 1.0),
        norm=core.GRADIENT_FACTOR * 0.5,
    )
    return data, model, start, gradients


def _canary_effect(planted=None) -> torch.Tensor:  # noqa: ANN001
    """Weights after one σ = 0 SGD step with canaries minus those without (q = 1: every record
    and every canary in the batch), flattened (weight then bias); ``planted`` acts on both."""
    data, model, start, gradients = _setup()
    with planted() if planted else contextlib.nullcontext():
        _one_step(model, data)
        without = torch.cat([p.detach().flatten() for p in model.parameters()])
        model.load_state_dict(start)
        _one_step(model, data, gradients)
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - without


def test_a_canary_is_clipped_summed_and_scaled_like_a_record():
    effect = _canary_effect()
    # the update is -lr * (sum of clipped gradients) / (q * n): each canary moves its own
    # coordinate by -sign * clip / 5, nothing else moves
    expected = torch.zeros(10)
    expected[1], expected[6], expected[8] = -0.1, 0.1, -0.1
    torch.testing.assert_close(effect, expected, atol=1e-6, rtol=0)


def test_the_noisy_sums_are_each_canarys_sign_plus_the_records_in_units_of_the_clip():
    # σ = 0: the noisy sum on a canary's coordinate is the records' clipped sum there plus the
    # canary's clipped gradient (its sign times the clip), divided here by the clip
    data, model, start, gradients = _setup()
    _one_step(model, data)
    records = [-(p.detach() - start[name]).flatten() * 5 for name, p in model.named_parameters()]
    model.load_state_dict(start)
    ran = _one_step(model, data, gradients)
    flat = torch.cat(records)  # SGD at lr 1: the update is −(clipped sum) / (q·n = 5)
    expected = [flat[1] / 0.5 + 1.0, flat[6] / 0.5 - 1.0, flat[8] / 0.5 + 1.0]
    assert ran.canary_sums == pytest.approx([float(v) for v in expected], abs=1e-5)
    assert _one_step(model, data).canary_sums is None


def test_many_canaries_are_clipped_in_pieces_like_all_at_once(monkeypatch):
    from secure_fedsa.site import training as engine

    data, model, start, gradients = _setup()
    _one_step(model, data, gradients)
    at_once = torch.cat([p.detach().flatten() for p in model.parameters()])
    model.load_state_dict(start)
    monkeypatch.setattr(engine, "CANARY_PIECE", 1)  # one canary per piece
    ran = _one_step(model, data, gradients)
    torch.testing.assert_close(
        torch.cat([p.detach().flatten() for p in model.parameters()]), at_once
    )
    assert len(ran.canary_sums) == 3


def test_without_clipping_a_canary_moves_its_coordinate_ten_times_more():
    effect = _canary_effect(clip_not_applied)
    assert effect[1] == pytest.approx(-0.1 * core.GRADIENT_FACTOR, rel=1e-4)


def test_canaries_need_per_sample_gradients_and_a_sampler_over_records_and_canaries():
    data, model, _, gradients = _setup()
    dp = DPSettings(noise_multiplier=1.0, clip=0.5, sample_rate=1.0)
    source = SeededTestRandom(0)
    common = dict(steps=1, dp=dp, physical_batch_size=8, lr=1.0, randomness=source)
    with pytest.raises(PrivacyError, match="hooks"):
        train_dp(model, data, mode="ghost", canaries=gradients, **common)
    with pytest.raises(PrivacyError, match="sampler"):
        sampler = PoissonSampler(len(data), 1.0, source)
        train_dp(model, data, sampler=sampler, canaries=gradients, **common)
    frozen = core.CanaryGradients(((nn.Parameter(torch.zeros(3)), 0),), (1.0,), 1.0)
    with pytest.raises(PrivacyError, match="not on a trained parameter"):
        train_dp(model, data, canaries=frozen, **common)


# --------------------------------------------------------------------------- configuration
def test_the_canaries_option_needs_dp_hooks_and_a_shared_tensor():
    assert RunConfig().canaries == 0
    assert RunConfig(canaries=5).canaries == 5
    for bad in (dict(canaries=-1), dict(canaries=True), dict(canaries=5, dp=False)):
        with pytest.raises(ConfigError):
            RunConfig(**bad)
    with pytest.raises(ConfigError, match="hooks"):
        RunConfig(canaries=5, clipping="ghost")
    with pytest.raises(ConfigError, match="shares"):
        RunConfig(canaries=5, method="local")


def test_the_flag_alone_asks_for_the_default_number_of_canaries():
    import argparse

    from secure_fedsa.options import add_run_options, explicit_values, flower_options

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    assert explicit_values(parser.parse_args(["--canaries"]))["canaries"][1] == DEFAULT_CANARIES
    assert explicit_values(parser.parse_args(["--canaries", "50"]))["canaries"][1] == 50
    assert "canaries" not in explicit_values(parser.parse_args([]))
    assert "canaries" in flower_options()


# --------------------------------------------------------------------------- a run and its audit
@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    from secure_fedsa.transports.federation import run_federation

    run_dir = tmp_path_factory.mktemp("canaries") / "run"
    config = RunConfig(**{**TINY_AUDIT, "epsilon": 1.0, "canaries": 300, "encryption": False})
    run_federation(config, run_dir)
    return run_dir


def _copy(run_dir, tmp_path):  # noqa: ANN001, ANN202
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def _canary_check(run_dir) -> dict:  # noqa: ANN001
    report = audit_run(run_dir)
    return next(c for c in report["checks"] if c["name"] == "run-canary-audit")


def test_an_honest_run_passes_with_its_commitment_and_releases_verified(canary_run):
    check = _canary_check(canary_run)
    assert check["result"] == "pass", check["findings"]
    for cid in ("client-0", "client-1"):
        entry = check["evidence"]["clients"][cid]
        assert entry["rounds"] == [1, 2]
        assert entry["epsilon_lower_bound"] < entry["claimed_epsilon"] <= 1.0
        doc = json.loads((canary_run / "clients" / cid / "canaries.json").read_text())
        ledger = json.loads((canary_run / "clients" / cid / "privacy_ledger.json").read_text())
        assert ledger["identity"]["canary_commitment"] == doc["commitment"]
        assert len(doc["bits"]) == 300 and 0 < sum(doc["bits"]) < 300
        assert entry["scored_on"] == "noisy sums" and len(entry["guesses"]) == 1
        assert [r["round"] for r in doc["noisy_sums"]] == [1, 2]


def test_the_bits_and_releases_stay_in_the_clients_own_directory(canary_run):
    bits_file = "canaries.json"
    for path in canary_run.rglob("*"):
        if path.is_file() and path.name != bits_file and path.suffix in (".json", ".jsonl"):
            text = path.read_text()
            assert '"bits"' not in text and '"salt"' not in text, path
    shared = [p for p in canary_run.rglob(bits_file) if p.parent.parent.name != "clients"]
    assert shared == []


def test_bits_changed_after_training_fail_the_audit(canary_run, tmp_path):
    run = _copy(canary_run, tmp_path)
    path = run / "clients" / "client-0" / "canaries.json"
    doc = json.loads(path.read_text())
    doc["bits"][0] = 1 - doc["bits"][0]
    path.write_text(json.dumps(doc))
    check = _canary_check(run)
    assert check["result"] == "fail"
    assert any("commitment" in f and "client-0" in f for f in check["findings"])


@pytest.mark.parametrize(
    "damage",
    ["missing", "release-removed", "sums-removed", "coordinates", "not-a-number", "nan-sum"],
)
def test_missing_or_damaged_canary_evidence_cannot_pass(canary_run, tmp_path, damage):
    run = _copy(canary_run, tmp_path)
    path = run / "clients" / "client-1" / "canaries.json"
    doc = json.loads(path.read_text())
    if damage == "missing":
        path.unlink()
    else:
        if damage == "release-removed":
            doc["releases"].pop()
        elif damage == "sums-removed":
            doc["noisy_sums"].pop()
        elif damage == "nan-sum":
            doc["noisy_sums"][1]["sums"][3] = "NaN"
        elif damage == "coordinates":
            doc["coordinates"][0] += 1
        else:
            doc["releases"][0]["update"][0] = "0.1"
        path.write_text(json.dumps(doc))
    check = _canary_check(run)
    assert check["result"] == "error"
    assert any("client-1" in f for f in check["findings"])


def test_a_version_1_canary_file_is_still_audited_on_its_released_updates(canary_run, tmp_path):
    run = _copy(canary_run, tmp_path)
    for cid in ("client-0", "client-1"):
        path = run / "clients" / cid / "canaries.json"
        doc = json.loads(path.read_text())
        del doc["noisy_sums"]
        path.write_text(json.dumps({**doc, "format_version": 1}))
    check = _canary_check(run)
    assert check["result"] == "pass", check["findings"]
    assert {e["scored_on"] for e in check["evidence"]["clients"].values()} == {"released updates"}
    # the client itself does not resume from a version 1 file
    with pytest.raises(PrivacyError, match="version 1"):
        core.CanarySet.load(run / "clients" / "client-0")


def test_a_resumed_client_keeps_the_canaries_its_ledger_committed_to(canary_run, tmp_path):
    run = _copy(canary_run, tmp_path)
    path = run / "clients" / "client-0" / "canaries.json"
    doc = json.loads(path.read_text())
    doc["salt"] = "0" * 32
    path.write_text(json.dumps(doc))
    with pytest.raises(PrivacyError, match="commitment"):
        core.reopen_canaries(path.parent, 300, doc["commitment"])
    with pytest.raises(PrivacyError, match="commits to canaries"):
        core.reopen_canaries(path.parent, 0, doc["commitment"])
    with pytest.raises(PrivacyError, match="commits to none"):
        core.reopen_canaries(path.parent, 300, None)
    assert core.reopen_canaries(path.parent, 0, None) is None


def test_a_ledger_without_canaries_is_written_and_hashed_as_before(tmp_path):
    from secure_fedsa.privacy.ledger import LedgerIdentity, PrivacyLedger, identity_hash

    fields = dict(
        client_id="c",
        key_fingerprint=None,
        delta=1e-5,
        accountant="pld",
        dataset_size=10,
        target_epsilon=1.0,
        noise_multiplier=1.0,
        clip=1.0,
    )
    plain = LedgerIdentity.create(**fields)
    PrivacyLedger.open(tmp_path / "a.json", identity=plain)
    written = json.loads((tmp_path / "a.json").read_text())["identity"]
    assert "canary_commitment" not in written
    assert PrivacyLedger.read(tmp_path / "a.json").identity == plain
    committed = LedgerIdentity.create(**fields, canary_commitment="ab" * 32)
    PrivacyLedger.open(tmp_path / "b.json", identity=committed)
    assert PrivacyLedger.read(tmp_path / "b.json").identity.canary_commitment == "ab" * 32
    assert identity_hash(committed) != identity_hash(plain)
    with pytest.raises(PrivacyError, match="canary_commitment"):
        LedgerIdentity.create(**fields, canary_commitment="not a hash")


def test_the_auditor_bundle_carries_the_canaries_and_audits_alike(canary_run, tmp_path):
    from audits.bundle import write_bundle

    write_bundle(canary_run, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "clients" / "client-0" / "canaries.json").is_file()
    ours, theirs = _canary_check(canary_run), _canary_check(tmp_path / "bundle")
    assert theirs["result"] == ours["result"] == "pass"
    assert theirs["evidence"]["clients"] == {
        cid: {**entry, "seconds": theirs["evidence"]["clients"][cid]["seconds"]}
        for cid, entry in ours["evidence"]["clients"].items()
    }


# --------------------------------------------------------------------------- the report
def test_the_first_page_summarises_the_run_level_audit_as_the_runs_own(canary_run):
    report = audit_run(canary_run)
    check = next(c for c in report["checks"] if c["name"] == "run-canary-audit")
    assert check["scope"] == "run"
    canary = report["executive"]["canary"]
    assert canary["this_run"] == "pass" and canary["this_report"] == "not run"
    assert "This run trained 300 canaries inside each client's own DP-SGD" in canary["text"]
    assert "this run's releases are consistent with its claim at 95 % confidence" in canary["text"]
    assert "No canaries were trained" not in canary["text"]
    verified = report["overview"]["verified"]
    assert "the canaries each client trained inside this run's own DP-SGD" in verified


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ("pass", "PASS, this run's releases are consistent with its claim at 95 % confidence"),
        ("fail", "FAILED: this run's releases leak more than its ledger claims"),
        ("inconclusive", "INCONCLUSIVE, the claimed ε is above what they can certify"),
        ("error", "could not be carried out"),
    ],
)
def test_the_run_level_summary_says_each_verdict_in_its_own_words(result, words):
    from audits.executive import run_canary_summary

    entry = {"claimed_epsilon": 1.0, "epsilon_lower_bound": 2.5, "max_certifiable_epsilon": 8.2}
    check = {"result": result, "evidence": {"canaries": 2000, "clients": {"client-0": entry}}}
    text = run_canary_summary(check)
    assert words in text
    if result != "error":
        assert "2 000 canaries" in text and "ε lower bound 2.50" in text
