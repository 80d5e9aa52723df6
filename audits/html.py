"""A self-contained HTML rendering of an audit report (inline CSS, SVG and image, no external
links), readable on screen and complete when printed (nothing cut off in scroll boxes, every
evidence block open)."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from audits.diagram import data_flow_svg
from audits.plot import epsilon_plot_png

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:60em;
color:#1b1b1b;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.verdict{font-size:1.3em;font-weight:700;padding:.7em 1em;border-radius:6px;margin:1em 0}
.pass{background:#e3f5e1;color:#145a12}.warn{background:#fff4d6;color:#6b4b00}
.fail,.error{background:#fde2e1;color:#8a1410}
.inconclusive{background:#e8eaf0;color:#2b3550}
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
.wide{overflow-x:auto}svg.flow{width:100%;height:auto;max-width:52em}
@media print{
@page{margin:14mm}
body{max-width:none;margin:0;padding:0;font-size:10pt}
.verdict,.badge,.pass,.warn,.fail,.error,.inconclusive,th{-webkit-print-color-adjust:exact;
print-color-adjust:exact}
details::details-content{content-visibility:visible;display:block;height:auto}
details>summary{list-style:none;font-weight:700}
pre,details pre{max-height:none;overflow:visible;white-space:pre-wrap;overflow-wrap:anywhere}
.wide{overflow:visible}table{font-size:8.5pt}
tr,img,svg{break-inside:avoid}h2,h3{break-after:avoid}
a{color:inherit;text-decoration:none}
}
"""
BADGE_TITLE = {"error": "could not be verified: counts as FAIL in the verdict"}


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


def _overview(overview: dict) -> str:
    text = overview.get("text") or f"Overview unavailable: {overview.get('unavailable')}"
    return f'<p class="overview" id="overview">{escape(str(text))}</p>'


def _run(report: dict) -> str:
    params = report.get("run_parameters") or {}
    rows = "".join(_row([k.replace("_", " "), v], "td") for k, v in params.items())
    versions = report.get("versions") or {}
    made, audited = versions.get("produced_the_run") or {}, versions.get("audited_with") or {}
    made = made if "unavailable" not in made else {}
    names = list(dict.fromkeys([*made, *audited]))
    vrows = "".join(_row([n, made.get(n, "not recorded"), audited.get(n, "—")]) for n in names)
    return (
        f"<p>Audited {escape(str(report.get('audited_at')))} (UTC), report format "
        f"{escape(str(report.get('format_version')))}.</p>"
        f'<table id="run-parameters"><tr><th>parameter</th><th>value</th></tr>{rows}</table>'
        '<table id="versions"><tr><th>component</th><th>produced the run (ledgers, config)</th>'
        f"<th>audited with</th></tr>{vrows}</table>"
    )


def _data_flow(flow: dict) -> str:
    if "unavailable" in flow or "shared" not in flow:
        return f"<p><strong>Data flow unavailable: {escape(_fmt(flow.get('unavailable')))}</strong>"
    caption = (
        f"Drawn from {escape(str(flow.get('source')))} and the egress records: "
        f"{escape(_fmt(flow.get('shared')) or 'nothing')} leaves each client; "
        f"{escape(_fmt(flow.get('kept')) or 'nothing')} stays; messages seen: "
        f"{escape(_fmt(flow.get('forms')) or 'none')}."
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
    parts = [
        f"<p>Method <strong>{escape(str(releases.get('method')))}</strong>: tensor groups that may "
        f"leave a client: <strong>{escape(_fmt(releases.get('shared_groups_allowed')) or 'none')}"
        f"</strong>; never released: {escape(_fmt(releases.get('never_released')))}. Recipient: "
        f"{escape(str(releases.get('recipient')))}.</p>",
        "<table><tr><th>client</th><th>round</th><th>to</th><th>form</th><th>bytes</th>"
        "<th>tensor groups</th><th>tensors</th></tr>",
    ]
    for cid, rounds in releases.get("per_client", {}).items():
        if not rounds:
            parts.append(f"<tr><td>{escape(cid)}</td><td colspan=6>nothing recorded</td></tr>")
        for r in rounds:
            cells = [cid, r.get("round"), r.get("to"), r.get("form"), r.get("bytes")]
            parts.append(_row([*cells, r.get("groups"), len(r.get("tensors") or [])]))
    parts.append("</table>")
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
        badge = _badge(status)
        unverified = (
            " <span class='muted'>(could not be verified: counts as FAIL)</span>"
            if status == "error"
            else ""
        )
        summary += (
            f"<tr><td><a href='#check-{escape(c['name'])}'>{escape(c['name'])}</a></td>"
            f"<td>{badge}</td><td>{escape(c.get('statement', ''))}</td></tr>"
        )
        evidence = escape(json.dumps(c.get("evidence", {}), indent=1, default=str))
        details += (
            f'<div class="check" id="check-{escape(c["name"])}"><h3>{escape(c["name"])} {badge}'
            f"{unverified}</h3><p>{escape(c.get('statement', ''))}</p>"
            + _findings(c)
            + f"<details><summary>Evidence</summary><pre>{evidence}</pre></details></div>"
        )
    return summary + "</table>" + details


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
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>secure_fedsa audit: {escape(str(report.get("verdict", "FAIL")))}</title>
<style>{CSS}</style></head><body>
<h1>Privacy audit of a secure_fedsa run</h1>
<p class="muted">Run directory: {escape(str(report.get("run_directory")))} · audited
{escape(str(report.get("audited_at")))}</p>
{_verdict(report)}
{_overview(report.get("overview") or {})}
<h2 id="run">The run, and what audited it</h2>{_run(report)}
<h2>One round: what moves where</h2>{_data_flow(report.get("data_flow") or {})}
<h2>Privacy statement</h2>{_statement(report.get("privacy_statement") or {})}
<h2>Privacy spent over rounds</h2>{plot}
<h2>What was released, and to whom</h2>{_releases(report.get("releases") or {})}
<h2>Trust model and its known limit</h2><table id="trust-model">{trust_html}</table>
<h2>Checks</h2>{_checks(report.get("checks") or [])}
<h2>Evidence files</h2><p>The SHA-256 of every file this audit read: the report describes these
exact bytes.</p>{_files(report)}
</body></html>
"""
