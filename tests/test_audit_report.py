"""The compliance report as an auditor reads it, and the auditor bundle, on a real small run.

The plain-language overview, the run's parameters and versions, the SHA-256 of every file read,
the data-flow diagram, claimed against re-computed ε, one verdict word everywhere, advice for
every warning, the print stylesheet; and `secure-fedsa audit RUN --bundle OUT`: exactly the files
the audit needs, nothing secret, audited with the same results as the run directory.
"""

from __future__ import annotations

import ast
import copy as deepcopy_module
import hashlib
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime
from html import escape as html_escape
from html import unescape
from importlib import metadata
from pathlib import Path

import pytest
from audit_helpers import CHECKS, audit, edit_json, findings, results

from audits.advice import ADVICE, UNEXPLAINED
from audits.canary_audit import canaries_needed
from audits.diagram import data_flow, data_flow_svg
from audits.evidence import load_run
from audits.html import CSS, render_html
from audits.overview import overview
from audits.result import CheckResult, verdict, verdict_word
from audits.runner import audit_run, verdict_text
from secure_fedsa.errors import SecureFedsaError

pytestmark = pytest.mark.integration

AUDITS = Path(__file__).resolve().parent.parent / "audits"
VERDICT_WORDS = {"PASS", "WARN", "FAIL", "INCONCLUSIVE"}
READ_FILES = {
    "config.json",
    "setup.json",
    "metrics.jsonl",
    "summary.json",
    "clients/client-0/privacy_ledger.json",
    "clients/client-1/privacy_ledger.json",
    "egress/client-0.jsonl",
    "egress/client-1.jsonl",
    "keys/server.keys",
}
SVG = "{http://www.w3.org/2000/svg}"
BUNDLED = READ_FILES | {"keys/roster.json"}


@pytest.fixture(scope="module")
def run_dir(audited_run) -> Path:
    return audited_run


@pytest.fixture(scope="module")
def report(run_dir) -> dict:
    return audit_run(run_dir)


@pytest.fixture(scope="module")
def html(report) -> str:
    return render_html(report)


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("audit"))
    return target


def ledger(run_dir: Path, cid: str) -> dict:
    return json.loads((run_dir / "clients" / cid / "privacy_ledger.json").read_text())


def text_of(html: str) -> str:
    """The visible text of an HTML document, whitespace collapsed."""
    without_style = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", without_style)).split())


# -- 1. the opening paragraph ------------------------------------------------------------------
def test_the_report_opens_with_a_plain_language_overview(report, html, run_dir):
    parts = report["overview"]
    text = parts["text"]
    assert set(parts) == {
        "failed", "protected", "against", "spent", "verified", "not_verified", "text"
    }  # fmt: skip
    assert parts["failed"] == ""
    # who was protected, against whom
    assert "each client's training records" in parts["protected"]
    assert "record-level (ε, δ)-differential privacy" in parts["protected"]
    for who in ("honest-but-curious aggregation server", "other clients", "the run's files"):
        assert who in parts["against"]
    # what was spent: each client's ε from its ledger, δ, the budget
    for cid in ("client-0", "client-1"):
        claimed = ledger(run_dir, cid)["entries"][-1]["epsilon"]
        assert f"{cid} ε = {claimed:.3f}" in parts["spent"]
    assert "δ = 1e-05" in parts["spent"] and "budget ε = 8.0" in parts["spent"]
    assert "confirmed every ε" in parts["spent"]
    # what was verified, and what was not
    assert "7 of 8 checks passed" in parts["verified"] and "dp-hazards" in parts["verified"]
    assert "installed-mechanism test (--canary) was not run" in parts["not_verified"]
    assert "share one CKKS secret key" in parts["not_verified"]
    assert text.startswith(parts["protected"]) and parts["not_verified"] in text
    # in the HTML its parts come right after the verdict ("In brief"), before everything else
    page = text_of(html)
    brief = page.index("In brief")
    assert page.index("Verdict: WARN") < brief < page.index(parts["protected"][:60])
    assert page.index(parts["against"][:60]) < page.index("The run, and what audited it")


def test_the_overview_follows_the_evidence(report):
    """Each part changes with what the report holds (the builder is pure)."""

    def variant(change) -> dict:
        changed = deepcopy_module.deepcopy(report)
        change(changed)
        return overview(changed)

    def canary(result):
        check = {"name": "installed-mechanism-test", "result": result}
        return lambda r: r["checks"].append({**check, "scope": "installed-mechanism"})

    assert "was inconclusive" in variant(canary("inconclusive"))["not_verified"]
    passed = variant(canary("pass"))
    assert "not a replay of this run" in passed["not_verified"]
    # its pass is not one of the run's: the count and the claims are the run's checks only
    assert passed["verified"] == variant(lambda r: None)["verified"]
    assert "installed-mechanism-test" not in passed["verified"]
    assert "FAILED: the DP-SGD installed" in variant(canary("fail"))["not_verified"]

    def fail_and_error(r):
        by_name = {c["name"]: c for c in r["checks"]}
        by_name["accounting"]["result"], by_name["encryption"]["result"] = "fail", "error"

    parts = variant(fail_and_error)
    assert "FAILED: accounting" in parts["verified"]
    assert "Could not be verified" in parts["verified"] and "encryption" in parts["verified"]
    # a FAIL leads with the failure, and the guarantee follows as a claim
    assert parts["text"].startswith(
        "FAIL: accounting failed; encryption could not be verified. Do not rely"
    )
    claim = "What the run claims, not established while these failures stand: "
    assert parts["text"].index(claim) < parts["text"].index(parts["protected"])

    def mismatch(r):
        r["privacy_statement"]["clients"]["client-1"]["epsilon_matches"] = False

    assert "did NOT confirm ε for client-1" in variant(mismatch)["spent"]

    def plaintext(r):
        r["protections_off"] = ["no encryption"]

    parts = variant(plaintext)
    assert "left the clients in plaintext" in parts["protected"]
    assert "CKKS secret key" not in parts["not_verified"]

    def no_dp(r):
        r["privacy_statement"] = {"dp": False}
        r["protections_off"] = ["no differential privacy"]

    parts = variant(no_dp)
    assert "makes no privacy claim" in parts["protected"]
    assert parts["spent"] == "" and parts["against"] == ""


# -- 2. parameters, versions, audit date, the files read ---------------------------------------
def test_the_report_states_the_runs_parameters_and_versions(report, html, run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    setup = json.loads((run_dir / "setup.json").read_text())
    params = report["run_parameters"]
    assert params["dataset"] == config["dataset"] == "rotten_tomatoes"
    assert params["method"] == "fedsa" and params["partition"] == "iid"
    assert params["rounds"] == params["rounds_completed"] == 2 and params["clients"] == 2
    assert "all-MiniLM-L6-v2" in params["model"] and params["layers"] == 1
    assert params["client_sizes"] == setup["clients"]
    recorded = ledger(run_dir, "client-0")["identity"]["versions"]
    made = report["versions"]["produced_the_run"]
    written = config["secure_fedsa"]["versions"]  # what config.json recorded at the start
    assert made == {name: sorted({version, *made[name]}) for name, version in written.items()}
    for name, version in recorded.items():
        assert version in made[name]
    assert report["versions"]["recorded_in"]["config.json"] == written
    audited = report["versions"]["audited_with"]
    components = ("secure_fedsa", "python", "torch", "opacus", "tenseal", "peft", "transformers")
    assert set(components) | {"dp_accounting", "numpy"} == set(audited) == set(written)
    for name, dist in (("tenseal", "tenseal"), ("peft", "peft"), ("secure_fedsa", "secure-fedsa")):
        assert audited[name] == metadata.version(dist) == written[name]
    assert audited["opacus"] == metadata.version("opacus")
    assert datetime.fromisoformat(report["audited_at"]).tzinfo is not None
    page = text_of(html)
    for value in ("rotten_tomatoes", "iid", audited["tenseal"], audited["peft"]):
        assert value in page
    assert f"Audited {report['audited_at']}" in page
    assert 'id="versions"' in html and 'id="run-parameters"' in html


def test_every_file_read_is_listed_with_its_sha256(report, html, run_dir):
    files = report["evidence_files"]
    assert set(files) == READ_FILES  # nothing secret, nothing the audit does not read
    for name, entry in files.items():
        data = (run_dir / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        assert entry["sha256"] in html


def test_a_changed_file_changes_its_listed_hash(copy, run_dir):
    path = copy / "metrics.jsonl"
    path.write_text(path.read_text() + "\n")
    before = load_run(run_dir).files["metrics.jsonl"]["sha256"]
    assert load_run(copy).files["metrics.jsonl"]["sha256"] != before


# -- 3. the data-flow diagram ------------------------------------------------------------------
def _svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert not any(k.endswith("href") for e in root.iter() for k in e.attrib)  # nothing external
    return [" ".join("".join(e.itertext()).split()) for e in root.iter(f"{SVG}text")]


def test_the_data_flow_is_drawn_from_the_runs_manifest(report, html, run_dir):
    flow = report["data_flow"]
    setup = json.loads((run_dir / "setup.json").read_text())
    records = [json.loads(x) for x in (run_dir / "egress" / "client-0.jsonl").open()]
    sent = next(r for r in records if r["kind"] == "update")
    assert flow["shared"] == ["A"] and flow["kept"] == ["B", "head"] and flow["encrypted"]
    assert flow["shared_tensors"] == len(setup["manifest"]) and flow["unexpected"] == []
    assert flow["update_bytes"] == sent["bytes"] and flow["forms"] == ["ciphertext"]
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    texts = _svg_texts(svg)
    assert "update: A" in texts and "keeps B, head on the client" in texts
    size = f"{sent['bytes']:,}".replace(",", " ")
    assert f"ciphertext, {size} B each" in texts
    assert "only adds: Σ_k ct(n_k·A)" in texts and "no secret key" in " ".join(texts)
    assert "sum of A, Σ n_k" in texts and not any("B" in t for t in texts if "update" in t)


def test_the_diagram_follows_the_method_and_the_protections(report):
    base = report["data_flow"]
    fedit = _svg_texts(data_flow_svg({**base, "shared": ["A", "B"], "kept": ["head"]}))
    assert "update: A, B" in fedit and "keeps head on the client" in fedit
    plain = _svg_texts(data_flow_svg({**base, "encrypted": False}))
    assert "receives PLAINTEXT updates" in plain and any("PLAINTEXT" in t for t in plain)
    local = data_flow_svg({**base, "shared": [], "kept": ["A", "B", "head"], "messages": []})
    assert "<line" not in local and "sends nothing" in _svg_texts(local)


def test_the_diagram_shows_a_group_that_should_not_have_left(copy):
    path = copy / "egress" / "client-0.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    first = next(r for r in lines if r["kind"] == "update")
    first["tensors"].append("encoder.layer.0.attention.self.query.lora_B.default.weight")
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    flow = data_flow(load_run(copy))
    assert flow["unexpected"] == ["B"]
    assert "ALSO LEFT: B (not allowed)" in _svg_texts(data_flow_svg(flow))


# -- 4. claimed and re-computed ε ----------------------------------------------------------------
def _epsilon_rows(html: str) -> dict[str, str]:
    table = html[html.index('id="epsilon-table"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr><td>(client-\d)</td>(.*?)</tr>", table)
    return {cid: text_of(row) for cid, row in rows}


def test_the_epsilon_table_shows_claimed_and_recomputed(report, html, run_dir):
    accounting = next(c for c in report["checks"] if c["name"] == "accounting")
    rows = _epsilon_rows(html)
    for cid, claim in report["privacy_statement"]["clients"].items():
        recomputed = accounting["evidence"]["clients"][cid]["independent_epsilon_upper"]
        assert claim["epsilon"] == ledger(run_dir, cid)["entries"][-1]["epsilon"]
        assert claim["epsilon_recomputed"] == recomputed != claim["epsilon"]
        assert abs(recomputed - claim["epsilon"]) < 0.05 and claim["epsilon_matches"] is True
        assert rows[cid].startswith(f"{claim['epsilon']:.4g} {recomputed:.4g} ✓ agrees")
    assert "MISMATCH" not in html


def test_an_edited_epsilon_is_marked_as_a_mismatch(copy):
    edit_json(
        copy / "clients" / "client-0" / "privacy_ledger.json",
        lambda d: d["entries"][-1].update(epsilon=d["entries"][-1]["epsilon"] / 2),
    )
    report = audit_run(copy)
    clients = report["privacy_statement"]["clients"]
    assert clients["client-0"]["epsilon_matches"] is False
    assert clients["client-1"]["epsilon_matches"] is True
    rows = _epsilon_rows(render_html(report))
    assert "✗ MISMATCH" in rows["client-0"] and "✓ agrees" in rows["client-1"]
    assert "did NOT confirm ε for client-0" in report["overview"]["spent"]
    assert "FAILED: accounting" in report["overview"]["verified"]


# -- 5. one verdict vocabulary; advice for every warning ----------------------------------------
def test_one_verdict_word_in_json_html_and_cli(copy, tmp_path, capsys):
    assert audit([str(copy), "--out", str(tmp_path / "ok")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    page = (tmp_path / "ok" / "report.html").read_text()
    assert report["verdict"] == "WARN" and report["verdict_text"].startswith("WARN: ")
    assert "verdict: WARN: " in printed and "Verdict: WARN" in page
    assert "<title>secure_fedsa audit: WARN</title>" in page
    assert "WITH WARNINGS" not in printed + page + json.dumps(report)

    (copy / "config.json").unlink()  # every other check: "error", could not be verified
    assert audit([str(copy), "--out", str(tmp_path / "bad")]) == 1
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    page = (tmp_path / "bad" / "report.html").read_text()
    assert report["verdict"] == "FAIL" and "verdict: FAIL: " in printed and "Verdict: FAIL" in page
    assert "could not be verified" in report["verdict_text"]
    assert "(could not be verified: counts as FAIL)" in text_of(page)
    assert "ERROR" in printed  # a check's badge may say ERROR; the verdict never does
    for check in report["checks"]:
        if check["result"] == "error":
            assert all(a["code"] == "could-not-verify" for a in check["advice"])


@pytest.mark.parametrize(
    "statuses, word",
    [
        (["pass"], "PASS"),
        (["pass", "warn"], "WARN"),
        (["pass", "inconclusive"], "INCONCLUSIVE"),
        (["warn", "inconclusive"], "WARN"),
        (["pass", "fail"], "FAIL"),
        (["pass", "warn", "error"], "FAIL"),
    ],
)
def test_the_verdict_text_starts_with_the_verdict_word(statuses, word):
    checks = []
    for index, status in enumerate(statuses):
        check = CheckResult(f"check-{index}", "s")
        if status != "pass":
            getattr(check, status)("why")
        checks.append(check)
    assert verdict_word(checks) == word in VERDICT_WORDS
    assert verdict_text(verdict(checks), checks).startswith(f"{word}: ")


def _status_calls() -> list[ast.Call]:
    calls = []
    for path in sorted(AUDITS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            on_result = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            if on_result and func.value.id == "result" and func.attr in ("warn", "inconclusive"):
                calls.append(node)
    return calls


def test_every_warning_in_the_audit_names_its_advice():
    calls = _status_calls()
    assert len(calls) >= 9
    for call in calls:
        code = next((k.value for k in call.keywords if k.arg == "code"), None)
        assert isinstance(code, ast.Constant) and code.value in ADVICE, ast.dump(call)[:200]
    for sentence in ADVICE.values():  # one sentence each, saying what to do
        assert sentence.endswith(".") and ". " not in sentence[:-1]


def test_each_warning_in_a_report_is_explained(report, html, copy):
    hazards = next(c for c in report["checks"] if c["name"] == "dp-hazards")
    warned = [f for f in hazards["findings"] if f.startswith("warn:")]
    assert [a["finding"] for a in hazards["advice"]] == warned and len(warned) == 2
    advice = hazards["advice"][0]["advice"]
    assert hazards["advice"][0]["code"] == "small-dataset"
    assert "merge sites" in advice and "raise the budget" in advice
    assert f'<span class="advice">{html_escape(advice)}</span>' in html
    # an interrupted run: the warnings of three checks, each with its own advice
    (copy / "summary.json").unlink()
    interrupted = audit_run(copy)
    for check in interrupted["checks"]:
        flagged = [f for f in check["findings"] if f.startswith(("warn:", "inconclusive:"))]
        explained = {a["finding"]: a["advice"] for a in check["advice"]}
        assert set(flagged) <= set(explained)
        assert UNEXPLAINED not in explained.values()
    assert "--resume" in " ".join(a["advice"] for a in interrupted["checks"][0]["advice"])


# -- 6. the print stylesheet (the PDF itself: test_audit_run.py, with Chromium) ----------------
def test_the_print_stylesheet_opens_evidence_and_scroll_boxes():
    printed = CSS[CSS.index("@media print") :]
    assert "details::details-content{content-visibility:visible" in printed
    assert re.search(r"pre[^{]*\{max-height:none;overflow:visible", printed)
    assert "max-height:30em" in CSS[: CSS.index("@media print")]  # on screen: scroll boxes


# -- 7. the auditor bundle -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "for-the-auditor"
    assert audit([str(run_dir), "--bundle", str(out)]) == 0
    return out


def _bundle_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_bundle_holds_exactly_what_the_audit_needs(bundle, run_dir):
    assert _bundle_files(bundle) == BUNDLED | {"MANIFEST.json", "SHA256SUMS"}
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["format"] == "secure_fedsa.audit_bundle" and set(manifest["files"]) == BUNDLED
    sums = {}
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    for name in BUNDLED:
        data = (bundle / name).read_bytes()
        assert data == (run_dir / name).read_bytes()
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest() == sums[name]


def test_the_bundle_holds_no_secret(bundle, run_dir):
    client_keys = json.loads((run_dir / "keys" / "client.keys").read_text())
    secrets = [client_keys["secret_key"]]
    identities = sorted((run_dir / "keys" / "identities").glob("*.key"))
    assert len(identities) == 3  # the two clients' and the server's signing keys
    secrets += [json.loads(p.read_text())["private_key"] for p in identities]
    for path in bundle.rglob("*"):
        assert path.name not in ("state.pt", "client.keys") and path.suffix != ".key"
        assert not {"adapters", "identities"} & set(path.relative_to(bundle).parts)
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret[:24].encode() not in data, path
            assert b'"secret_key"' not in data and b'"private_key"' not in data


def test_the_bundle_is_audited_like_the_run(bundle, report, tmp_path):
    assert audit([str(bundle), "--out", str(tmp_path / "audit")]) == 0
    from_bundle = json.loads((tmp_path / "audit" / "report.json").read_text())
    from_run = json.loads(json.dumps(report, default=str))
    assert from_bundle["checks"] == from_run["checks"]  # results, findings and evidence
    assert list(results(from_bundle)) == list(CHECKS)
    assert from_bundle["verdict"] == from_run["verdict"]
    assert from_bundle["bundle"]["problems"] == [] and from_bundle["bundle"]["files"] == 10
    for name, entry in from_run["evidence_files"].items():
        assert from_bundle["evidence_files"][name] == entry


def test_a_bundle_changed_after_it_was_made_fails(bundle, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    with open(changed / "metrics.jsonl", "a") as handle:
        handle.write("\n")  # the same records, other bytes
    report = audit_run(changed)
    assert results(report)["run-directory"] == "fail" and report["verdict"] == "FAIL"
    assert "metrics.jsonl: differs from the manifest" in findings(report, "run-directory")


def test_the_bundle_refuses_secrets_and_a_used_directory(copy, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(SecureFedsaError, match="not an empty directory"):
        audit([str(copy), "--bundle", str(used)])
    with pytest.raises(SecureFedsaError, match="--bundle writes only the bundle"):
        audit([str(copy), "--bundle", str(tmp_path / "b0"), "--canary"])
    secret = json.loads((copy / "keys" / "client.keys").read_text())["secret_key"]
    with open(copy / "egress" / "client-1.jsonl", "a") as handle:
        handle.write(json.dumps({"note": secret[:40]}) + "\n")
    with pytest.raises(SecureFedsaError, match="client-1.jsonl contains one of the run's secret"):
        audit([str(copy), "--bundle", str(tmp_path / "b1")])
    assert not (tmp_path / "b1").exists()  # nothing written
    edit_json(copy / "keys" / "server.keys", lambda k: k.update(secret_key="AAAA"))
    with pytest.raises(SecureFedsaError, match="server.keys has a secret_key field"):
        audit([str(copy), "--bundle", str(tmp_path / "b2")])
    assert not (tmp_path / "b2").exists()


def test_keys_made_outside_the_run_are_bundled_and_listed_where_read(copy, tmp_path):
    keys = tmp_path / "federation-keys"  # `secure-fedsa keys init DIR`, named by keys_dir
    shutil.move(copy / "keys", keys)
    edit_json(copy / "config.json", lambda c: c.update(keys_dir=str(keys)))
    from_run = audit_run(copy)
    assert str(keys / "server.keys") in from_run["evidence_files"]
    out = tmp_path / "bundle"
    assert audit([str(copy), "--bundle", str(out)]) == 0
    assert _bundle_files(out) == BUNDLED | {"MANIFEST.json", "SHA256SUMS"}
    secret = json.loads((keys / "client.keys").read_text())["secret_key"]
    assert not any(secret[:24].encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())
    from_bundle = audit_run(out)
    assert results(from_bundle) == results(from_run)
    for name in CHECKS:
        assert findings(from_bundle, name) == findings(from_run, name)


# -- 8. issue 35: versions, every message explained, a first page for non-programmers -----------
def test_config_json_records_the_versions_of_what_made_the_run(run_dir):
    from secure_fedsa.config import RunConfig
    from secure_fedsa.site.rundir import read_config

    written = json.loads((run_dir / "config.json").read_text())["secure_fedsa"]
    assert written["release"] == metadata.version("secure-fedsa")
    for name, dist in (
        ("torch", "torch"), ("opacus", "opacus"), ("tenseal", "tenseal"), ("peft", "peft"),
        ("transformers", "transformers"), ("dp_accounting", "dp-accounting"), ("numpy", "numpy"),
    ):  # fmt: skip
        assert written["versions"][name] == metadata.version(dist)
    assert written["versions"]["python"].count(".") == 2
    assert isinstance(read_config(run_dir), RunConfig)  # the field is popped: it reads back


def test_the_html_shows_the_runs_versions_next_to_the_audits(report, html):
    table = html[html.index('id="versions"') :]
    table = text_of(table[: table.index("</table>")])
    written = report["versions"]["recorded_in"]["config.json"]
    for name in ("tenseal", "peft", "transformers", "dp_accounting", "python"):
        assert f"{name} {written[name]}" in table, name
    assert "not recorded" not in table
    assert "The audit ran with the same versions of these." in text_of(html)


def _kinds_in(run_dir: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted((run_dir / "egress").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found.setdefault(record["kind"], []).append(record)
    return found


def test_every_kind_of_message_is_explained_and_summarised(report, html, run_dir):
    sent = _kinds_in(run_dir)
    assert set(sent) == {
        "update", "secagg-keys", "secagg-shares", "secagg-survivors", "secagg-reveal"
    }  # fmt: skip
    releases = report["releases"]
    assert [k["kind"] for k in releases["kinds"]] == [
        "secagg-keys", "secagg-shares", "update", "secagg-survivors", "secagg-reveal"
    ]  # fmt: skip
    table = html[html.index("id='message-kinds'") :]
    table = text_of(table[: table.index("</table>")])
    for kind in releases["kinds"]:
        for field in ("name", "carries", "to", "form", "why_safe"):
            assert kind[field] and kind[field] in table, (kind["kind"], field)
    assert "public keys are meant to be seen" in table and "128 bytes" in table
    # per kind and round: the two rounds are alike, one row per kind
    for row in releases["summary"]:
        records = sent[row["kind"]]
        assert row["rounds"] == [1, 2] and row["messages_per_round"] == 2 == row["clients"]
        assert row["bytes_total"] == sum(r["bytes"] for r in records)
        assert row["bytes_each"] == sorted({r["bytes"] for r in records})
    assert sent["secagg-keys"][0]["bytes"] == 128  # the advert the issue names
    # the raw rows: in report.json, not in the printed report
    assert sum(len(rows) for rows in releases["per_client"].values()) == sum(
        map(len, sent.values())
    )
    body = html[: html.index('id="evidence"')]
    for records in sent.values():
        for record in records:
            assert record["sha256"] not in body


def test_the_diagram_and_its_caption_show_every_kind(report, html):
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    texts = _svg_texts(svg)
    for label in ("masking key advert", "encrypted shares", "update: A", "unmasking reveal"):
        assert label in texts, label
    assert "plaintext, 128 B: 2 public keys + signature" in texts
    assert any(t.startswith("ciphertext, 188 B") for t in texts)
    assert "forwards adverts and sealed shares" in texts
    figure = text_of(html[html.index("<figure>") : html.index("</figure>")])
    assert "messages seen: ciphertext" not in figure
    for kind in report["data_flow"]["messages"]:
        assert kind["name"] in figure
    assert "masking key advert (plaintext, 128 B)" in figure


def test_an_unexplained_message_kind_is_drawn_in_red(copy):
    path = copy / "egress" / "client-0.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows.append({**rows[0], "kind": "telemetry", "sha256": hashlib.sha256(b"t").hexdigest()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = audit_run(copy)
    assert "unknown message kind 'telemetry'" in _svg_texts(data_flow_svg(report["data_flow"]))
    assert "NOT EXPLAINED" in text_of(render_html(report))
    assert report["verdict"] == "FAIL"


def test_the_first_page_puts_epsilon_and_the_canary_test_in_context(report, html):
    page = report["executive"]
    epsilon = max(c["epsilon"] for c in report["privacy_statement"]["clients"].values())
    context = page["epsilon"]
    assert context["epsilon"] == epsilon and context["relation"] == "replace-one"
    assert context["likelihood_ratio"] == pytest.approx(math.exp(epsilon))
    e = math.exp(epsilon)
    assert context["max_accuracy"] == pytest.approx((1 + (e - 1 + 2e-5) / (e + 1)) / 2)
    assert len(context["sources"]) == 3 and any("Kairouz" in s for s in context["sources"])
    canary = page["canary"]
    # ε ≈ 8: both one-run analyses, the error split between them, need 1 748 canaries or more
    assert canary["this_report"] == "not run"
    assert canary["canaries_needed"] == canaries_needed(epsilon, delta=1e-5)
    assert 1000 < canary["canaries_needed"] <= 2000
    assert round(canary["ceilings"]["1000"], 1) == 7.2 and canary["ceilings"]["2000"] > epsilon
    assert "No canaries were trained inside this run" in canary["text"]
    brief = text_of(html[html.index('id="executive"') : html.index('id="run"')])
    for text in (
        "What was protected", "Against whom", "What this ε means", "What a canary test can back",
        "only a lower bound on ε", "canaries or more could back", "What left each client",
        "Verified",
        "Not verified", "To act on", "What made the run", "Dwork & Roth 2014",
        "masking key advert: two public keys and a signature (1 per round, 128 B, plaintext)",
    ):  # fmt: skip
        assert text in brief, text
    # first on the page: the verdict, then the brief, then the details
    full = text_of(html)
    assert full.index("Verdict: WARN") < full.index("In brief") < full.index("Privacy statement")
    assert "What failed" not in full


def test_a_fail_report_leads_with_the_failure(copy):
    edit_json(copy / "config.json", lambda c: c.update(method="fedit"))
    report = audit_run(copy)
    page = text_of(render_html(report))
    assert report["verdict"] == "FAIL"
    failed = page.index("What failed")
    assert page.index("Verdict: FAIL") < failed < page.index("In brief")
    assert page.index("holds only A") < page.index("What the run claims (not established)")
    assert "What was protected" not in page
    assert report["executive"]["failures"][0]["finding"].startswith("fail: config.json says")


def test_the_printed_report_leaves_the_evidence_data_to_report_json(html):
    printed = CSS[CSS.index("@media print") :]
    assert ".screen-only{display:none}" in printed and "#executive{break-after:page}" in printed
    appendix = html.index('<section class="screen-only" id="evidence">')
    assert "<pre>" not in html[:appendix]  # every evidence block is in the appendix
    assert html[appendix:].count("<pre>") == len(CHECKS)
    note = html[html.index('id="evidence-note"') :]
    assert "print-only" in html[appendix : html.index('id="evidence-note"')]
    assert "in report.json" in note


def test_the_bundle_command_prints_the_manifests_sha256(run_dir, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert audit([str(run_dir), "--bundle", str(out)]) == 0
    printed = capsys.readouterr().out
    digest = hashlib.sha256((out / "MANIFEST.json").read_bytes()).hexdigest()
    assert f"MANIFEST.json SHA-256: {digest}" in printed and "second channel" in printed
    assert audit_run(out)["bundle"]["sha256"] == digest  # what the report shows
