"""A self-contained HTML rendering of an audit report (inline CSS, SVG and image, no external
links).

The order is the reader's: the verdict; for a FAIL, what failed (before anything the run claims);
"In brief", one page for a reader who is not a programmer (what was protected, against whom, ε in
context, what a canary test can back, what left each client, what made the run); then the
details (parameters and versions, the data flow, the privacy statement, ε over rounds, every kind
of message summarised per kind and round, the trust model, the checks with their findings and
what to do); then the appendices: the SHA-256 of every file read (printed) and the evidence data
of each check (on screen only: a printed copy points to report.json, which holds the same data
and every message's row)."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from audits import messages as kinds
from audits.diagram import data_flow_svg
from audits.plot import epsilon_plot_png
from audits.provenance import COMPONENTS
from audits.result import shown_result

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:60em;
color:#1b1b1b;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.verdict{font-size:1.3em;font-weight:700;padding:.7em 1em;border-radius:6px;margin:1em 0}
.pass{background:#e3f5e1;color:#145a12}.warn{background:#fff4d6;color:#6b4b00}
.fail,.error{background:#fde2e1;color:#8a1410}
.inconclusive{background:#e8eaf0;color:#2b3550}
.consistent{background:#e6eef8;color:#1d3a66}
.badge{display:inline-block;min-width:4em;text-align:center;border-radius:4px;padding:.1em .5em;
font-weight:700;text-transform:uppercase;font-size:.85em}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.check{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
details pre{white-space:pre-wrap;font-size:.8em;background:#f8f8f8;padding:.5em;max-height:30em;
overflow:auto}.muted{color:#666}
.overview{font-size:1.05em;border-left:4px solid #888;padding:.2em 1em;margin:1em 0}
.advice{display:block;color:#333;margin:.15em 0 .4em 1em}.advice::before{content:"What to do: ";
font-weight:700}
.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.wide{overflow-x:auto}svg.flow{width:100%;height:auto;max-width:56em}
.brief th{width:11em;background:#f4f4f4}.brief td p{margin:.2em 0}
.failed{border:2px solid #b3140f;border-radius:6px;padding:.3em 1em;margin:1em 0}
.failed h2{color:#8a1410;border:none;margin-top:.4em}
.print-only{display:none}.small{font-size:.85em}
@media print{
@page{margin:14mm}
body{max-width:none;margin:0;padding:0;font-size:10pt}
.verdict,.badge,.pass,.warn,.fail,.error,.inconclusive,.consistent,th{-webkit-print-color-adjust:exact;
print-color-adjust:exact}
details::details-content{content-visibility:visible;display:block;height:auto}
details>summary{list-style:none;font-weight:700}
pre,details pre{max-height:none;overflow:visible;white-space:pre-wrap;overflow-wrap:anywhere}
.wide{overflow:visible}table{font-size:8.5pt}
tr,img,svg{break-inside:avoid}h2,h3{break-after:avoid}
a{color:inherit;text-decoration:none}
#executive{break-after:page}.screen-only{display:none}.print-only{display:block}
.brief th,.brief td{padding:.15em .4em}
.check{break-inside:avoid}
}
"""
BADGE_TITLE = {
    "error": "could not be verified: counts as FAIL in the verdict",
    "consistent": "the DP mechanism installed where the audit ran, tested in the auditor's "
    "process: not a test, and not a pass, of this run",
}
BADGE_STATUSES = ("pass", "inconclusive", "warn", "fail", "error", "note")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return "—" if value is None else str(value)


def _row(cells: list[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{escape(_fmt(c))}</{tag}>" for c in cells) + "</tr>"


def _verdict(report: dict) -> str:
    word = str(report.get("verdict", "FAIL"))
    off = report.get("protections_off") or []
    banner = "".join(f"<p><strong>{escape(w.upper())}</strong></p>" for w in off)
    return (
        f'<div class="verdict {escape(word.lower())}" id="verdict">Verdict: {escape(word)}'
        f"<br><span style='font-weight:400;font-size:.8em'>{escape(report.get('verdict_text', ''))}"
        f"</span></div>{banner}"
    )


def _failed(page: dict) -> str:
    """For a FAIL: every failed or unverifiable finding, with what to do, before anything
    else."""
    failures = page.get("failures") or []
    if not failures:
        return ""
    items = "".join(
        f"<li><strong>{escape(f['check'])}</strong>: {escape(f['finding'])}"
        + (f'<span class="advice">{escape(f["advice"])}</span>' if f.get("advice") else "")
        + "</li>"
        for f in failures
    )
    return (
        '<section class="failed" id="what-failed"><h2>What failed</h2><p>Do not rely on this '
        "run's privacy claims until each of these is explained; the claims below are the run's, "
        f"not established by this audit while these stand.</p><ul>{items}</ul></section>"
    )


def _b(value: Any) -> str:
    return f"{value:,}".replace(",", " ") if isinstance(value, int) else _fmt(value)


def _sizes(sizes: Any) -> str:
    if not sizes:
        return "—"
    low, high = sizes[0], sizes[-1]
    return f"{_b(low)} B" if low == high else f"{_b(low)}–{_b(high)} B"


def _count(values: list[float]) -> str:
    words = [f"{v:g}" for v in values]
    return "–".join(words[:1] + words[-1:]) if len(words) > 1 else (words[0] if words else "?")


def _epsilon_rows(epsilon: dict) -> str:
    rows = "".join(
        f"<tr><td>{m['false_positive_rate']:.1%}</td><td>{m['max_true_positive_rate']:.2%}</td></tr>"
        for m in epsilon.get("membership") or []
    )
    return (
        "<table class='small' id='membership-bound'><tr><th>attacker wrongly accuses "
        "(false-positive rate)</th><th>at most detects (true-positive rate)</th></tr>"
        f"{rows}</table>"
    )


def _versions_line(page: dict, report: dict) -> str:
    made = (report.get("versions") or {}).get("produced_the_run") or {}
    made = made if isinstance(made, dict) and "unavailable" not in made else {}
    recorded = ", ".join(f"{n} {' / '.join(v)}" for n, v in made.items()) or "nothing recorded"
    differ = page.get("versions_differ") or []
    missing = [d["component"] for d in differ if d.get("same") is None]
    other = [
        f"{d['component']} ({' / '.join(d['run'])} in the run, {d['audit']} here)"
        for d in differ
        if d.get("same") is False
    ]
    text = f"Recorded by the run: {recorded}."
    text += (
        f" Audited with different versions of {', '.join(other)}."
        if other
        else " The audit ran with the same versions of these."
    )
    if missing:
        text += f" Not recorded by the run: {', '.join(missing)}."
    return escape(text)


def _bare(finding: str) -> str:
    """A finding without its status word ("warn: ...")."""
    status, _, rest = finding.partition(": ")
    return rest if status in BADGE_STATUSES else finding


def _brief(report: dict) -> str:
    """The executive page: what a non-programmer needs, on one printed page."""
    page = report.get("executive") or {}
    if "unavailable" in page or not page:
        text = (report.get("overview") or {}).get("text") or "Summary unavailable."
        return f'<section id="executive"><h2>In brief</h2><p>{escape(str(text))}</p></section>'
    failing = bool(page.get("failures"))
    rows = [
        (
            "Verdict",
            f"<strong>{escape(page.get('verdict', ''))}</strong>: "
            f"{escape(page.get('verdict_meaning', ''))}",
        ),  # fmt: skip
        (
            "What the run claims (not established)" if failing else "What was protected",
            escape(page.get("protected", "")),
        ),  # fmt: skip
    ]
    if page.get("against"):
        rows.append(("Against whom", escape(page["against"])))
    if page.get("spent"):
        rows.append(("Privacy spent", escape(page["spent"])))
    epsilon = page.get("epsilon")
    if isinstance(epsilon, dict):
        rows.append(
            (
                "What this ε means",
                "".join(
                    f"<p>{escape(epsilon.get(k, ''))}</p>"
                    for k in ("meaning", "attacker", "reading")
                )
                + (_epsilon_rows(epsilon) if epsilon.get("max_accuracy", 1) <= 0.99 else ""),
            )
        )
    canary = page.get("canary")
    if isinstance(canary, dict):
        rows.append(("What a canary test can back", escape(canary.get("text", ""))))
    sent = page.get("messages") or []
    if sent:
        items = "".join(
            f"<li><strong>{escape(m['name'])}:</strong> {escape(m.get('carries', ''))} "
            f"({escape(_count(m['per_client_per_round']))} per round, "
            f"{escape(_sizes(m.get('bytes')))}, {escape(', '.join(m.get('forms') or []))})</li>"
            for m in sent
        )
        rows.append(
            (
                "What left each client",
                f"<ul>{items}</ul>Nothing else (why each is safe: “What was released”).",
            )
        )
    else:
        rows.append(("What left each client", "Nothing was recorded."))
    rows.append(("Verified", escape(page.get("verified", ""))))
    rows.append(("Not verified", escape(page.get("not_verified", ""))))
    act = page.get("to_act_on") or []
    if act:
        items = "".join(
            f"<li>{escape(a['check'])}: {escape('; '.join(_bare(f) for f in a['findings']))}"
            + (f'<span class="advice">{escape(a["advice"])}</span>' if a.get("advice") else "")
            + "</li>"
            for a in act
        )
        rows.append(("To act on", f"<ul>{items}</ul>"))
    rows.append(("What made the run", _versions_line(page, report)))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<section id="executive"><h2 id="overview">In brief</h2>'
        f'<table class="brief">{body}</table></section>'
    )


def _run(report: dict) -> str:
    params = report.get("run_parameters") or {}
    rows = "".join(_row([k.replace("_", " "), v], "td") for k, v in params.items())
    versions = report.get("versions") or {}
    recorded = versions.get("recorded_in") or {}
    recorded = recorded if "unavailable" not in recorded else {}
    config = recorded.get("config.json") or {}
    ledgers = recorded.get("ledgers") or {}
    audited = versions.get("audited_with") or {}
    names = list(dict.fromkeys([*COMPONENTS, *config, *ledgers, *audited]))
    vrows = "".join(
        _row(
            [
                n,
                config.get(n, "not recorded"),
                " / ".join(ledgers.get(n) or []) or "—",
                audited.get(n, "—"),
            ]
        )
        for n in names
    )
    return (
        f"<p>Audited {escape(str(report.get('audited_at')))} (UTC), report format "
        f"{escape(str(report.get('format_version')))}.</p>"
        f'<table id="run-parameters"><tr><th>parameter</th><th>value</th></tr>{rows}</table>'
        '<table id="versions"><tr><th>component</th><th>the run: config.json</th>'
        "<th>the run: privacy ledgers</th><th>audited with</th></tr>"
        f"{vrows}</table><p class='muted small'>config.json records what was installed when "
        "the run started (or was last extended), each ledger what was installed when its "
        "client started (the ledgers record secure_fedsa, torch and opacus); “not recorded”: a "
        "run made before its release recorded it.</p>"
    )


def _data_flow(flow: dict) -> str:
    if "unavailable" in flow or "shared" not in flow:
        return f"<p><strong>Data flow unavailable: {escape(_fmt(flow.get('unavailable')))}</strong>"
    sent = [
        f"{m.get('name')} ({', '.join(m.get('forms') or [])}, {_sizes(m.get('bytes'))})"
        for m in flow.get("messages") or []
    ]
    caption = (
        f"Drawn from {escape(str(flow.get('source')))} and the egress records: "
        f"{escape(_fmt(flow.get('shared')) or 'nothing')} leaves each client; "
        f"{escape(_fmt(flow.get('kept')) or 'nothing')} stays; every kind of message the clients "
        f"sent, in the order of a round: {escape('; '.join(sent) or 'none')}. What each carries "
        "and why it is safe: “What was released, and to whom”."
    )
    return f"<figure>{data_flow_svg(flow)}<figcaption class='muted'>{caption}</figcaption></figure>"


def _match(client: dict) -> str:
    if client.get("epsilon_recomputed") is None:
        return '<td class="error">NOT RE-COMPUTED</td>'
    if client.get("epsilon_matches"):
        return '<td class="pass">✓ agrees</td>'
    return '<td class="fail"><strong>✗ MISMATCH</strong></td>'


def _statement(statement: dict) -> str:
    if "unavailable" in statement:
        reason = escape(str(statement["unavailable"]))
        return f"<p><strong>Privacy statement unavailable: {reason}</strong></p>"
    if not statement.get("dp"):
        text = f"<p><strong>{escape(statement.get('text', 'No privacy claim.'))}</strong></p>"
        if statement.get("finishing"):
            text += f"<p>{escape(str(statement['finishing']))}</p>"
        return text
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(statement.get(k, '')))}</td></tr>"
        for k in ("type", "unit", "neighbouring", "mechanism", "scope", "finishing")
        if k != "finishing" or statement.get(k)
    )
    head = (
        "<tr><th>client</th><th>ε claimed (ledger)</th><th>ε re-computed (independent)</th>"
        "<th>match</th><th>δ</th><th>records n</th><th>σ</th><th>q (Poisson)</th><th>clip</th>"
        "<th>steps</th><th>rounds</th><th>accountant</th><th>gain from joining</th></tr>"
    )
    body = ""
    for cid, c in statement.get("clients", {}).items():
        if "epsilon" not in c:
            claim = {k: v for k, v in c.items() if not k.startswith("epsilon_")}
            body += f"<tr><td>{escape(cid)}</td><td colspan=12>{escape(_fmt(claim))}</td></tr>"
            continue
        cells = [escape(_fmt(x)) for x in (cid, c.get("epsilon"), c.get("epsilon_recomputed"))]
        rest = ("delta", "records", "noise_multiplier", "sample_rate", "clip", "steps", "rounds")
        after = [escape(_fmt(c.get(k))) for k in (*rest, "accountant", "gain_from_joining")]
        body += (
            "<tr>"
            + "".join(f"<td>{x}</td>" for x in cells)
            + _match(c)
            + "".join(f"<td>{x}</td>" for x in after)
            + "</tr>"
        )
    return (
        f'<table id="privacy-statement">{rows}</table>'
        f'<div class="wide"><table id="epsilon-table">{head}{body}</table></div>'
        "<p class='muted'>ε claimed: the cumulative ε the client's ledger reports. ε re-computed: "
        "the upper end of the audit's own bounds on ε for the ledger's events, under replace-one "
        "neighbours, computed independently of the library the run used. Match: whether the "
        "claim lies within those bounds. Gain from joining: the client's accuracy minus what it "
        "scores training alone without DP on the same split; it is a statistic of the client's "
        "test records, so it appears only when the run released its evaluation.</p>"
    )


def _releases(releases: dict) -> str:
    if "unavailable" in releases:
        return f"<p><strong>Unavailable: {escape(str(releases['unavailable']))}</strong></p>"
    parts = [
        f"<p>Method <strong>{escape(str(releases.get('method')))}</strong>: tensor groups that may "
        f"leave a client: <strong>{escape(_fmt(releases.get('shared_groups_allowed')) or 'none')}"
        f"</strong>; never released: {escape(_fmt(releases.get('never_released')) or 'nothing')}. "
        f"Recipient: {escape(str(releases.get('recipient')))}.</p>",
        "<table id='message-kinds'><tr><th>message</th><th>what it carries</th><th>to whom</th>"
        "<th>form</th><th>why it is safe</th></tr>",
    ]
    for kind in releases.get("kinds") or []:
        name = f"{kind.get('name')} ({kind.get('kind')})"
        cells = [name, kind.get("carries"), kind.get("to"), kind.get("form"), kind.get("why_safe")]
        parts.append(_row(cells))
    parts.append("</table>")
    parts.append(
        "<table id='messages-per-round'><tr><th>message</th><th>rounds</th><th>per round</th>"
        "<th>clients</th><th>bytes each</th><th>bytes in all</th><th>form</th></tr>"
    )
    for row in releases.get("summary") or []:
        first, last = row.get("rounds") or [None, None]
        rounds = f"{first}" if first == last else f"{first}–{last}"
        unknown = row.get("kind") not in kinds.KINDS
        name = f"{row.get('name')} ({row.get('kind')})" + (" — NOT EXPLAINED" if unknown else "")
        cells = [
            name,
            rounds,
            row.get("messages_per_round"),
            row.get("clients"),
            _sizes(row.get("bytes_each")),
            _b(row.get("bytes_total")),
            row.get("forms"),
        ]
        parts.append(_row(cells))
    if not releases.get("summary"):
        parts.append("<tr><td colspan=7>No message was recorded.</td></tr>")
    total = sum(len(v or []) for v in (releases.get("per_client") or {}).values())
    parts.append(
        f"</table><p class='muted small'>Rounds alike in every column are merged. Each of the "
        f"{_b(total)} messages, with its SHA-256, is listed in report.json "
        "(<code>releases.per_client</code>) and in the egress check's evidence (Appendix B).</p>"
    )
    return "".join(parts)


def _badge(status: str) -> str:
    title = BADGE_TITLE.get(status)
    attr = f' title="{escape(title)}"' if title else ""
    return f'<span class="badge {escape(status)}"{attr}>{escape(status)}</span>'


def _findings(check: dict) -> str:
    advice = {a.get("finding"): a.get("advice") for a in check.get("advice") or []}
    items = ""
    for finding in check.get("findings", []):
        what = advice.get(finding)
        extra = f'<span class="advice">{escape(what)}</span>' if what else ""
        items += f"<li>{escape(finding)}{extra}</li>"
    return f"<ul>{items}</ul>" if items else "<p class='muted'>No findings.</p>"


def _checks(checks: list[dict]) -> str:
    summary = "<table><tr><th>check</th><th>result</th><th>what it verifies</th></tr>"
    details = ""
    for c in checks:
        status = str(c.get("result", "error"))
        badge = _badge(shown_result(c))  # an installed-mechanism test never shows "pass"
        unverified = (
            " <span class='muted'>(could not be verified: counts as FAIL)</span>"
            if status == "error"
            else ""
        )
        summary += (
            f"<tr><td><a href='#check-{escape(c['name'])}'>{escape(c['name'])}</a></td>"
            f"<td>{badge}</td><td>{escape(c.get('statement', ''))}</td></tr>"
        )
        details += (
            f'<div class="check" id="check-{escape(c["name"])}"><h3>{escape(c["name"])} {badge}'
            f"{unverified}</h3>"
            + _findings(c)
            + f"<p class='muted small'>Evidence: <a href='#evidence-{escape(c['name'])}'>"
            "Appendix B</a> and report.json.</p></div>"
        )
    return summary + "</table>" + details


def _evidence(checks: list[dict]) -> str:
    """Appendix B: each check's evidence data, on screen only (report.json holds the same)."""
    blocks = "".join(
        f'<details id="evidence-{escape(c["name"])}"><summary>{escape(c["name"])}</summary>'
        f"<pre>{escape(json.dumps(c.get('evidence', {}), indent=1, default=str))}</pre></details>"
        for c in checks
    )
    return (
        '<section class="screen-only" id="evidence"><h2>Appendix B. The evidence of each '
        f"check</h2><p>The data each check decided on (also in report.json).</p>{blocks}"
        '</section><section class="print-only" id="evidence-note"><h2>Appendix B. The evidence '
        "of each check</h2><p>Not printed: the data each check decided on is in report.json, "
        "written with this report, and in this file's last section on screen.</p></section>"
    )


def _files(report: dict) -> str:
    files = report.get("evidence_files") or {}
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(_fmt(f.get('bytes')))}</td>"
        f"<td class='hash'>{escape(str(f.get('sha256')))}</td></tr>"
        for name, f in files.items()
    )
    bundle = report.get("bundle")
    note = (
        f"<p>Audited from an auditor bundle: {escape(str(bundle.get('files')))} files listed in "
        f"{escape(str(bundle.get('manifest')))} (SHA-256 {escape(str(bundle.get('sha256')))}); "
        f"problems: {escape(_fmt(bundle.get('problems')) or 'none')}.</p>"
        if isinstance(bundle, dict)
        else ""
    )
    return (
        f"{note}<table id='evidence-files'><tr><th>file</th><th>bytes</th><th>SHA-256</th></tr>"
        f"{rows}</table>"
    )


def render_html(report: dict) -> str:
    """The report as one HTML document with no external resources."""
    series = report.get("epsilon_over_rounds")
    series = (
        {k: v for k, v in series.items() if isinstance(v, list)} if isinstance(series, dict) else {}
    )
    png = epsilon_plot_png(series, report.get("epsilon_budget"))
    plot = (
        f'<img id="epsilon-plot" alt="cumulative epsilon per client over rounds" '
        f'src="data:image/png;base64,{png}">'
        if png
        else "<p class='muted'>No ledger entries to plot.</p>"
    )
    trust = report.get("trust_model", {})
    trust_html = "".join(
        f"<tr><th>{escape(k.replace('_', ' '))}</th><td>{escape(v)}</td></tr>"
        for k, v in trust.items()
    )
    checks = report.get("checks") or []
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>secure_fedsa audit: {escape(str(report.get("verdict", "FAIL")))}</title>
<style>{CSS}</style></head><body>
<h1>Privacy audit of a secure_fedsa run</h1>
<p class="muted">Run directory: {escape(str(report.get("run_directory")))} · audited
{escape(str(report.get("audited_at")))}</p>
{_verdict(report)}
{_failed(report.get("executive") or {})}
{_brief(report)}
<h2 id="run">The run, and what audited it</h2>{_run(report)}
<h2>One round: what moves where</h2>{_data_flow(report.get("data_flow") or {})}
<h2>Privacy statement</h2>{_statement(report.get("privacy_statement") or {})}
<h2>Privacy spent over rounds</h2>{plot}
<h2>What was released, and to whom</h2>{_releases(report.get("releases") or {})}
<h2>Trust model and its known limit</h2><table id="trust-model">{trust_html}</table>
<h2>Checks</h2>{_checks(checks)}
<h2>Appendix A. Evidence files</h2><p>The SHA-256 of every file this audit read: the report
describes these exact bytes.</p>{_files(report)}
{_evidence(checks)}
</body></html>
"""
