"""`secure-fedsa audit` on a real (small) federation, and on incomplete or tampered copies of it."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from audit_helpers import CHECKS, SMALL, audit, edit_json, edit_lines, findings, results

from audits.html import render_html
from audits.result import shown_result
from audits.runner import audit_run
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import SecureFedsaError
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_dir(audited_run) -> Path:
    return audited_run


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("audit"))
    return target


# -- a correct run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_report(run_dir) -> tuple[int, dict, str]:
    code = audit([str(run_dir)])
    out = run_dir / "audit"
    return code, json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def test_a_correct_run_passes_every_check(cli_report):
    code, report, _ = cli_report
    assert code == 0
    got = results(report)
    assert list(got) == list(CHECKS)
    assert {got[n] for n in CHECKS if n != "dp-hazards"} == {"pass"}
    # 480 records per client: a warning, not a failure; the noise came from the OS CSPRNG
    assert got["dp-hazards"] == "warn" and "480 training records" in findings(report, "dp-hazards")
    assert "torchcsprng" not in json.dumps(report)
    assert report["verdict"] == "WARN"


def test_the_report_states_the_privacy_claim_and_releases(cli_report):
    _, report, _ = cli_report
    statement = report["privacy_statement"]
    assert statement["unit"] == "one training record of one client"
    assert statement["neighbouring"].startswith("replace-one")
    assert "test accuracy" in statement["not_covered"]
    for cid, claim in statement["clients"].items():
        assert 0 < claim["epsilon"] <= 8.0 and claim["delta"] == 1e-5
        assert claim["accountant"] == "pld" and "opacus" in claim["versions"]
        assert claim["neighbouring_relation"] == "replace-one"
        assert claim["steps"] == 4 and claim["rounds"] == 2
        sent = [r for r in report["releases"]["per_client"][cid] if r["kind"] == "update"]
        assert [r["round"] for r in sent] == [1, 2]
        protocol = [r for r in report["releases"]["per_client"][cid] if r["kind"] != "update"]
        assert {r["kind"] for r in protocol} == {
            "secagg-keys", "secagg-shares", "secagg-survivors", "secagg-reveal"
        }  # fmt: skip
        assert all(r["groups"] == [] for r in protocol)  # masking messages carry no tensor
        assert all(r["form"] == "ciphertext" and r["groups"] == ["A"] for r in sent)
    # the run was masked: a coalition below the threshold cannot read one client's update
    assert "colluding with fewer than t clients" in report["trust_model"]["known_limit"]


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag in ("link", "script"):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_the_html_report_is_self_contained_and_complete(cli_report):
    _, report, html = cli_report
    page = _Structure()
    page.feed(html)
    text = " ".join(page.text)
    assert {"verdict", "privacy-statement", "epsilon-plot", "trust-model"} <= page.ids
    assert "Verdict: WARN" in text
    assert text.index("Verdict") < text.index("Privacy statement")  # verdict first
    for name in CHECKS:
        assert f"check-{name}" in page.ids
    assert "one training record of one client" in text
    assert page.images and page.images[0].startswith("data:image/png;base64,")
    assert page.external == []


CHROMIUM = Path("/usr/bin/chromium")
PDFTOTEXT = shutil.which("pdftotext")  # poppler-utils; .ci/run installs it with chromium


def _evidence_lines(check: dict) -> list[str]:
    """The "key": value lines of a check's evidence, as the HTML prints them."""
    evidence = json.dumps(check["evidence"], indent=1, default=str)
    pairs = [line.strip().rstrip(",") for line in evidence.splitlines() if '": ' in line]
    return [line for line in pairs if not line.endswith(("{", "["))]


PRINTED_PAGES_AT_MOST = 12  # the demo-sized run prints in about 8 (docs/audit.md)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed (/usr/bin/chromium)"
)
def test_the_html_report_renders_in_headless_chromium(cli_report, run_dir, tmp_path):
    """On screen (DOM, screenshot): the verdict, and every check's evidence in the appendix.
    Printed to PDF: the verdict and "In brief" on the first page, the details after it, no
    evidence data (report.json holds it), and short."""
    import re
    import subprocess

    _, report, _ = cli_report
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (run_dir / "audit" / "report.html").as_uri()
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'id="verdict"' in dom and "Verdict: WARN" in dom
    for check in report["checks"]:  # on screen, the evidence is in the appendix
        assert f'id="evidence-{check["name"]}"' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    pdf = tmp_path / "report.pdf"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url],
        capture_output=True,
        timeout=120,
    )
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))
    assert 1 < pages <= PRINTED_PAGES_AT_MOST, pages
    if PDFTOTEXT is None:
        pytest.skip("pdftotext (poppler-utils) not installed: the PDF's text was not read")
    text = subprocess.run(
        [PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True, text=True, timeout=60
    ).stdout
    first, rest = text.split("\f", 1)
    first = " ".join(first.split())
    assert "Verdict: WARN" in first and "In brief" in first and "What this ε means" in first
    flat = " ".join(rest.split())
    assert "The run, and what audited it" in flat and "Appendix B" in flat
    assert "Not printed: the data each check decided on is in report.json" in flat
    # no evidence data in print: the longest evidence's key lines are not there
    longest = max(report["checks"], key=lambda c: len(json.dumps(c["evidence"], indent=1)))
    printed = [line for line in _evidence_lines(longest) if " ".join(line.split()) in flat]
    assert len(printed) < 3, printed


def test_the_mechanism_test_is_inconclusive_above_its_ceiling(run_dir):
    from audits.check_canary import canary_check

    report = audit_run(run_dir, extra=(canary_check(canaries=200),))
    canary = report["checks"][-1]
    # claimed ε ≈ 8 is far above what 200 canaries can certify: never a PASS badge
    assert canary["name"] == "installed-mechanism-test" and canary["result"] == "inconclusive"
    assert "not a test of this run" in canary["statement"]
    assert canary["scope"] == "installed-mechanism"
    for outcome in canary["evidence"]["clients"].values():
        assert outcome["epsilon_lower_bound"] <= outcome["claimed_epsilon"]
        assert outcome["max_certifiable_epsilon"] < outcome["claimed_epsilon"]
        assert outcome["outcome"] == "inconclusive"
    text = findings(report, "installed-mechanism-test")
    assert "ε_LB" in text and "can certify at most" in text
    assert report["verdict"] == "WARN"  # dp-hazards warns; inconclusive never reads as pass


def test_the_mechanism_test_passes_a_claim_it_can_certify(copy):
    """A history whose claimed ε is below the ceiling: the test has power, and passes."""
    from audits.accountants import pld_epsilon
    from audits.check_canary import canary_check

    def low_epsilon(doc):
        history = []
        for entry in doc["entries"]:
            entry.update(noise_multiplier=2.0, sample_rate=0.1, steps=15)
            history.append((2.0, 0.1, 15))
            entry["epsilon"] = pld_epsilon(history, 1e-5)

    for ledger in copy.glob("clients/*/privacy_ledger.json"):
        edit_json(ledger, low_epsilon)
    report = audit_run(copy, extra=(canary_check(canaries=1000),))
    canary = report["checks"][-1]
    assert canary["result"] == "pass", canary["findings"]
    for outcome in canary["evidence"]["clients"].values():
        assert outcome["claimed_epsilon"] < outcome["max_certifiable_epsilon"]
        assert set(outcome["lower_bounds"]) == {"epsilon-delta", "gaussian-fdp"}
    # never shown as a pass of the run: "consistent", named as the installed mechanism's
    assert shown_result(canary) == "consistent"
    text = findings(report, "installed-mechanism-test")
    assert "the installed mechanism's releases are consistent with its claim at 95 %" in text
    assert "not of this run" in text and "Gaussian f-DP analysis" in text
    assert "installed-mechanism-test" not in report["overview"]["verified"]
    html = render_html(report)
    assert '<span class="badge consistent"' in html


def test_the_mechanism_test_warns_when_versions_differ(copy):
    from audits.check_canary import _check_versions
    from audits.evidence import load_run
    from audits.result import CheckResult

    edit_json(
        copy / "clients" / "client-0" / "privacy_ledger.json",
        lambda d: d["identity"]["versions"].update(opacus="0.0.1"),
    )
    result = CheckResult("installed-mechanism-test", "")
    _check_versions(load_run(copy), result)
    assert result.status == "warn" and "opacus 0.0.1 in the run" in result.findings[0]


def test_a_run_with_test_only_seeded_noise_fails(tmp_path):
    from secure_fedsa.privacy.randomness import SeededTestRandom

    path = tmp_path / "seeded"
    run_federation(
        RunConfig(epsilon=8.0, **{**SMALL, "rounds": 1}),
        path,
        dp_randomness=lambda cid: SeededTestRandom(0),
    )
    report = audit_run(path)
    assert results(report)["ledger-integrity"] == "fail"
    assert "not DP against anyone who knows the seed" in findings(report, "ledger-integrity")
    assert report["verdict"] == "FAIL"


def test_a_ledger_rewritten_after_the_fact_fails(copy):
    from secure_fedsa.privacy.ledger import canonical_hash

    def rewrite(doc):  # raise σ, recompute ε and the whole chain: consistent in itself
        from audits.accountants import pld_epsilon

        history, link = [], canonical_hash(doc["identity"])
        for entry in doc["entries"]:
            entry["noise_multiplier"] *= 3
            history.append((entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
            entry.update(epsilon=pld_epsilon(history, 1e-5), previous=link)
            entry["hash"] = link = canonical_hash(entry)

    edit_json(copy / "clients" / "client-0" / "privacy_ledger.json", rewrite)
    report = audit_run(copy)
    assert results(report)["ledger-integrity"] == "fail"
    assert "names no ledger entry of that round" in findings(report, "ledger-integrity")


def test_an_edited_ledger_entry_breaks_the_chain(copy):
    edit_json(
        copy / "clients" / "client-1" / "privacy_ledger.json",
        lambda d: d["entries"][0].update(timestamp="2020-01-01T00:00:00+00:00"),
    )
    report = audit_run(copy)
    assert "hash chain broken" in findings(report, "ledger-integrity")


def test_a_resent_update_paid_by_its_ledger_entry_passes(copy):
    """After a crash the resumed client re-sends the update of a round it had already charged."""
    path = copy / "egress" / "client-0.jsonl"
    lines = path.read_text().splitlines()
    last_update = [x for x in lines if json.loads(x)["kind"] == "update"][-1]
    path.write_text("\n".join([*lines, last_update]) + "\n")  # the same round, the same entry
    # metrics.jsonl counts the update the completed round used (the re-sent one), as a resumed
    # run writes it
    report = audit_run(copy)
    assert results(report)["egress"] == "pass", findings(report, "egress")
    assert "re-sent after an interruption" in findings(report, "egress")
    assert results(report)["ledger-integrity"] == "pass"
    # without a ledger entry, the same second upload is not legitimate
    unpaid = [json.loads(x) for x in path.read_text().splitlines()]
    unpaid[-1]["ledger_entry"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in unpaid))
    report = audit_run(copy)
    assert results(report)["egress"] == "fail"
    assert results(report)["ledger-integrity"] == "fail"


def test_a_ledger_accounted_under_add_remove_is_failed(copy):
    """Add/remove-one ε (what the last release recorded, with Opacus' RDP) with n published:
    smaller than the replace-one ε of the same events, and stated in a relation that protects
    nothing here. The audit fails it, whatever the numbers."""
    from audits.accountants import rdp_epsilon

    for ledger in copy.glob("clients/*/privacy_ledger.json"):

        def to_add_remove(doc):
            doc["identity"].update(accountant="rdp", neighbouring_relation="add/remove-one")
            history = []
            for entry in doc["entries"]:
                history.append((entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
                entry.update(accountant="rdp", epsilon=rdp_epsilon(history, 1e-5))

        edit_json(ledger, to_add_remove)
    edit_json(copy / "config.json", lambda c: c.update(accountant="rdp"))
    report = audit_run(copy)
    assert results(report)["accounting"] == "fail"
    text = findings(report, "accounting")
    assert "not 'replace-one'" in text and "not replace-one PLD" in text


# -- bad input: incomplete, old, tampered --------------------------------------------------------
def test_missing_ledger_fails(copy):
    (copy / "clients" / "client-0" / "privacy_ledger.json").unlink()
    report = audit_run(copy)
    assert results(report)["accounting"] == "fail"
    assert results(report)["run-directory"] == "fail"
    assert "client-0: privacy ledger missing" in findings(report, "accounting")
    assert report["verdict"] == "FAIL"


def test_missing_egress_record_fails(copy):
    (copy / "egress" / "client-1.jsonl").unlink()
    report = audit_run(copy)
    assert results(report)["egress"] == "fail"
    assert "client-1: egress record missing" in findings(report, "egress")


def test_removed_egress_line_fails(copy):
    path = copy / "egress" / "client-0.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    report = audit_run(copy)
    assert results(report)["egress"] == "fail"
    assert "no egress record for round 2, which it trained" in findings(report, "egress")


def test_b_head_or_plaintext_in_egress_fails(copy):
    path = copy / "egress" / "client-0.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    first, second = [r for r in lines if r["kind"] == "update"][:2]
    first["tensors"].append("encoder.layer.0.attention.self.query.lora_B.default.weight")
    second["tensors"] = ["head.classifier.weight"]
    second["form"] = "plaintext"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = findings(audit_run(copy), "egress")
    assert "group(s) B left the client" in text and "group(s) head left" in text
    assert "'plaintext' message left with encryption on" in text


def test_edited_ledger_epsilon_fails(copy):
    edit_json(
        copy / "clients" / "client-0" / "privacy_ledger.json",
        lambda d: d["entries"][-1].update(epsilon=d["entries"][-1]["epsilon"] / 2),
    )
    report = audit_run(copy)
    assert results(report)["accounting"] == "fail"
    assert "below the independent replace-one bounds" in findings(report, "accounting")


def test_edited_ledger_steps_fail(copy):
    edit_json(
        copy / "clients" / "client-1" / "privacy_ledger.json",
        lambda d: d["entries"][0].update(steps=1),
    )
    text = findings(audit_run(copy), "accounting")
    assert "the ledger accounts 1 steps, metrics.jsonl shows 2 executed" in text
    assert "independent bounds" in text  # and the ε no longer matches its events


def test_older_config_version_fails(copy):
    edit_json(copy / "config.json", lambda c: c.update(version=0))
    report = audit_run(copy)
    assert results(report)["run-directory"] == "fail"
    assert "configuration version 0" in findings(report, "run-directory")


def test_a_version_2_config_is_read_as_every_layer_adapted(copy):
    """Runs made before ``adapter_layers`` existed (configuration version 2) stay auditable."""

    def downgrade(config):
        config.pop("adapter_layers")
        config.update(version=2)

    edit_json(copy / "config.json", downgrade)
    report = audit_run(copy)
    assert results(report)["run-directory"] == "pass"
    assert 'adapter"' in json.dumps(report) and '"layers": "all"' in json.dumps(report)


def test_missing_config_is_reported_not_passed(copy):
    (copy / "config.json").unlink()
    report = audit_run(copy)
    got = results(report)
    assert got["run-directory"] == "fail"
    assert {got[n] for n in CHECKS if n != "run-directory"} == {"error"}
    assert report["verdict"] == "FAIL"


def test_protections_off_fail_loudly(copy):
    edit_json(copy / "config.json", lambda c: c.update(dp=False, encryption=False))
    report = audit_run(copy)
    assert "no encryption" in findings(report, "egress")
    assert "no differential privacy" in findings(report, "accounting")
    assert "no encryption" in findings(report, "encryption")
    hazards = findings(report, "dp-hazards")
    assert "no differential privacy" in hazards and "no encryption" in hazards


def test_server_bundle_with_a_secret_or_other_key_fails(copy):
    edit_json(copy / "keys" / "server.keys", lambda k: k.update(secret_key="AAAA"))
    edit_json(
        copy / "clients" / "client-1" / "privacy_ledger.json",
        lambda d: d["identity"].update(key_fingerprint="0" * 64),
    )
    text = findings(audit_run(copy), "encryption")
    assert "holds secret_key" in text and "clients/client-1 ledger names key" in text


def test_garbage_files_never_crash(copy):
    (copy / "setup.json").write_text("{not json")
    (copy / "metrics.jsonl").write_text("[1, 2]\nnonsense\n")
    (copy / "clients" / "client-0" / "privacy_ledger.json").write_text('{"entries": 5}')
    (copy / "egress" / "client-1.jsonl").write_text('{"round": "x"}\n')
    report = audit_run(copy)
    assert report["verdict"] == "FAIL"
    assert "pass" not in {results(report)[n] for n in ("run-directory", "egress", "accounting")}


def test_an_empty_directory_is_not_a_run_and_nothing_is_written(tmp_path):
    with pytest.raises(SecureFedsaError, match="neither a run directory nor an auditor bundle"):
        audit([str(tmp_path), "--out", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []


def test_a_run_left_with_its_metrics_only_fails_without_crashing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert audit([str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verdict"] == "FAIL"
    assert (tmp_path / "out" / "report.html").read_text().count("check-") >= len(CHECKS)


def test_user_errors_raise_for_the_cli(tmp_path):
    with pytest.raises(SecureFedsaError, match="not a directory"):
        audit([str(tmp_path / "nowhere")])
    with pytest.raises(SecureFedsaError, match="--canaries"):
        audit([str(tmp_path), "--canary", "--canaries", "3"])


def test_the_cli_runs_the_audit_subcommand(tmp_path, capsys):
    from secure_fedsa.app.cli import main

    assert main(["audit", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_an_interrupted_run_is_audited_with_warnings(copy):
    # killed after round 2 was trained, recorded in the ledger and sent, before metrics/summary
    (copy / "summary.json").unlink()
    metrics = copy / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    report = audit_run(copy)
    got = results(report)
    assert got["run-directory"] == got["egress"] == got["accounting"] == "warn"
    assert "interrupted round" in findings(report, "accounting")
    assert report["verdict"] == "WARN"


def test_a_method_that_shares_nothing_must_send_nothing(copy):
    edit_json(copy / "config.json", lambda c: c.update(method="local"))
    text = findings(audit_run(copy), "egress")
    assert "group(s) A left the client" in text and "which it did not train" in text


def test_the_report_never_contains_the_secret_key(cli_report, run_dir):
    _, report, html = cli_report
    secret = json.loads((run_dir / "keys" / "client.keys").read_text())["secret_key"]
    assert secret[:64] not in json.dumps(report) and secret[:64] not in html


# -- config.json against the records that fix it (issue 35) -------------------------------------
def _failed_with(report: dict, name: str, text: str) -> None:
    assert results(report)[name] == "fail", findings(report, name)
    assert text in findings(report, name)
    assert report["verdict"] == "FAIL"


@pytest.mark.parametrize(
    "change, text",
    [
        # fedsa -> fedit would make B an allowed release: the manifest shares A only
        (
            {"method": "fedit"},
            "which shares A, B, but setup.json's manifest (what every update carried) holds only A",
        ),
        (
            {"method": "ffa"},
            "which shares B, but setup.json's manifest (what every update carried) also shares A",
        ),
        ({"head": "shared"}, "which shares A, head, but setup.json's manifest"),
        (
            {"adapter": "vera"},
            "says adapter 'vera', but setup.json's manifest shares tensors of another adapter",
        ),
        ({"lora_r": 4}, "lora_r = 4, but the shapes in setup.json's manifest give rank 8"),
        ({"target_modules": ["query"]}, "do not name module"),
        ({"target_modules": ["query", "value", "key"]}, "name key, but setup.json's manifest"),
        ({"num_layers": 3}, "the top 1 of 3 encoder layers are adapted (layers 2)"),
        ({"num_clients": 3}, "config.json says 3 clients, setup.json sets up 2"),
        ({"rounds": 1}, "config.json plans 1 rounds, metrics.jsonl records round 2"),
    ],
)
def test_a_config_that_does_not_describe_the_run_fails(copy, change, text):
    edit_json(copy / "config.json", lambda c: c.update(change))
    _failed_with(audit_run(copy), "configuration", text)


def test_fedit_in_a_fedsa_run_is_failed_before_the_report_says_b_may_leave(copy):
    edit_json(copy / "config.json", lambda c: c.update(method="fedit"))
    report = audit_run(copy)
    assert results(report)["egress"] == "pass"  # what left was A only: allowed under fedit
    assert results(report)["configuration"] == "fail"
    assert report["overview"]["text"].startswith("FAIL: configuration failed")
    assert report["executive"]["failures"][0]["check"] == "configuration"


def test_a_manifest_hash_that_is_not_the_manifests_fails(copy):
    edit_json(copy / "setup.json", lambda s: s.update(manifest_hash="ab" * 32))
    report = audit_run(copy)
    _failed_with(report, "configuration", "is not the hash of its manifest")
    # and every update names the hash the run really used, not setup.json's
    assert "the update names manifest hash" in findings(report, "egress")


def test_a_changed_shared_value_count_fails(copy):
    edit_json(copy / "setup.json", lambda s: s.update(shared_values=1))
    _failed_with(audit_run(copy), "configuration", "setup.json says 1 shared values")


def test_masking_off_in_the_config_of_a_masked_run_fails(copy):
    edit_json(copy / "config.json", lambda c: c.update(masking=False))
    report = audit_run(copy)
    _failed_with(report, "configuration", "config.json says masking off, but metrics.jsonl")
    assert "setup.json recorded: none" in findings(report, "configuration")


def test_masking_on_in_the_config_of_an_unmasked_run_fails(copy):
    """The masked run made to look unmasked (no masking in metrics, no protocol messages): a
    config that still says masking on would state a trust model the run did not have."""
    edit_lines(copy / "metrics.jsonl", lambda rows: [r.update(masking={}) for r in rows])
    for path in copy.glob("egress/*.jsonl"):
        edit_lines(
            path,
            lambda rows: rows.__setitem__(slice(None), [r for r in rows if r["kind"] == "update"]),
        )
    report = audit_run(copy)
    _failed_with(report, "configuration", "config.json says masking on, but metrics.jsonl shows")


def test_a_released_evaluation_the_files_do_not_show_fails(copy):
    edit_json(copy / "config.json", lambda c: c.update(release_evaluation=True))
    report = audit_run(copy)
    _failed_with(report, "configuration", "summary.json says the evaluation was kept private")
    assert "setup.json recorded: none" in findings(report, "configuration")


def test_a_summary_that_disagrees_with_the_config_fails(copy):
    edit_json(copy / "summary.json", lambda s: s.update(method="fedit"))
    _failed_with(
        audit_run(copy), "configuration", "config.json says method = 'fedsa', summary.json 'fedit'"
    )


# -- the egress records against the rest of the run (issue 35) -----------------------------------
def _edit_egress(copy: Path, change, cid: str = "client-0") -> None:
    edit_lines(copy / "egress" / f"{cid}.jsonl", change)


def _first(rows: list[dict], kind: str, number: int = 1) -> dict:
    return next(r for r in rows if r["kind"] == kind and r["round"] == number)


@pytest.mark.parametrize(
    "digest, text",
    [
        ("0" * 64, "is a placeholder, not a digest"),
        ("xyz", "'xyz' is not a SHA-256 digest"),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "the digest of an empty message",
        ),
    ],
)
def test_an_egress_digest_that_cannot_be_one_fails(copy, digest, text):
    _edit_egress(copy, lambda rows: _first(rows, "update").update(sha256=digest))
    _failed_with(audit_run(copy), "egress", text)


def test_two_messages_with_one_digest_fail(copy):
    def same_digest(rows):
        _first(rows, "update", 2)["sha256"] = _first(rows, "update", 1)["sha256"]

    _edit_egress(copy, same_digest)
    _failed_with(audit_run(copy), "egress", "a different message: at least one digest was not")

    def across_clients(rows):  # client-1's advert given client-0's advert digest
        rows[0]["sha256"] = json.loads((copy / "egress/client-0.jsonl").open().readline())["sha256"]

    _edit_egress(copy, across_clients, "client-1")
    assert "client-1 round 1: its secagg-keys message has the SHA-256 of client-0's" in findings(
        audit_run(copy), "egress"
    )


def test_an_update_the_server_did_not_accept_as_recorded_fails(copy):
    """metrics.jsonl holds the ledger head the server accepted (from the update's signed
    header): the egress record must name it."""

    def other_entry(rows):
        _first(rows, "update", 1)["ledger_entry"] = _first(rows, "update", 2)["ledger_entry"]

    _edit_egress(copy, other_entry)
    _failed_with(
        audit_run(copy), "egress", "the server accepted an update paid for by ledger entry"
    )


def test_an_update_naming_another_manifest_fails(copy):
    _edit_egress(copy, lambda rows: _first(rows, "update").update(manifest_hash="cd" * 32))
    _failed_with(audit_run(copy), "egress", "the update names manifest hash 'cdcd")


@pytest.mark.parametrize(
    "kind, change, text",
    [
        ("secagg-keys", {"bytes": 5000}, "a masking key advert is 128 bytes"),
        ("secagg-shares", {"bytes": 95}, "encrypted shares come in 94-byte parts"),
        ("secagg-reveal", {"bytes": 34}, "a reveal holds 33-byte shares"),
        (
            "secagg-shares",
            {"form": "plaintext"},
            "a secagg-shares message recorded as 'plaintext'",
        ),
        (
            "secagg-keys",
            {"tensors": ["encoder.layer.0.x.lora_A.default.weight"]},
            "a secure-aggregation message carried tensors",
        ),
        ("secagg-keys", {"kind": "telemetry"}, "unexpected message kind 'telemetry'"),
    ],
)
def test_a_protocol_message_that_is_not_what_its_kind_carries_fails(copy, kind, change, text):
    _edit_egress(copy, lambda rows: _first(rows, kind).update(change))
    _failed_with(audit_run(copy), "egress", text)


def test_protocol_messages_must_be_explained_by_the_rounds_masking(copy):
    def unmasked_round_1(rows):
        rows[0]["masking"] = {}

    edit_lines(copy / "metrics.jsonl", unmasked_round_1)
    text = findings(audit_run(copy), "egress")
    assert "client-0: a secagg-keys message in round 1, which metrics.jsonl shows unmasked" in text


def test_a_protocol_message_from_a_client_the_round_did_not_name_fails(copy):
    def only_client_1(rows):
        rows[0]["masking"].update(participants=["client-1"], masked_with=["client-1"])

    edit_lines(copy / "metrics.jsonl", only_client_1)
    _failed_with(
        audit_run(copy),
        "egress",
        "client-0: a secagg-keys message in round 1, whose masking does not name the client",
    )


def test_a_masked_client_without_its_shares_fails(copy):
    _edit_egress(copy, lambda rows: rows.remove(_first(rows, "secagg-shares", 2)))
    _failed_with(
        audit_run(copy),
        "egress",
        "client-0: round 2 was masked with it, but its egress record has no secagg-shares message",
    )
