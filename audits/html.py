"""A self-contained HTML rendering of an audit report (inline CSS and image, no external links)."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

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
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "—" if value is None else str(value)


def _verdict(report: dict) -> str:
    status = report.get("verdict", "error")
    off = report.get("protections_off") or []
    banner = "".join(f"<p><strong>{escape(w.upper())}</strong></p>" for w in off)
    return (
        f'<div class="verdict {escape(status)}" id="verdict">Verdict: {escape(status.upper())}'
        f"<br><span style='font-weight:400;font-size:.8em'>{escape(report.get('verdict_text', ''))}"
        f"</span></div>{banner}"
    )


def _statement(statement: dict) -> str:
    if "unavailable" in statement:
        reason = escape(str(statement["unavailable"]))
        return f"<p><strong>Privacy statement unavailable: {reason}</strong></p>"
    if not statement.get("dp"):
        return f"<p><strong>{escape(statement.get('text', 'No privacy claim.'))}</strong></p>"
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(statement.get(k, '')))}</td></tr>"
        for k in ("type", "unit", "neighbouring", "mechanism", "scope")
    )
    head = (
        "<tr><th>client</th><th>ε</th><th>δ</th><th>records n</th><th>σ</th><th>q (Poisson)"
        "</th><th>clip</th><th>steps</th><th>rounds</th><th>accountant</th><th>versions</th></tr>"
    )
    body = ""
    for cid, c in statement.get("clients", {}).items():
        if "epsilon" not in c:
            body += f"<tr><td>{escape(cid)}</td><td colspan=10>{escape(_fmt(c))}</td></tr>"
            continue
        cells = [cid] + [
            _fmt(c.get(k))
            for k in ("epsilon", "delta", "records", "noise_multiplier", "sample_rate", "clip")
        ]
        cells += [_fmt(c.get(k)) for k in ("steps", "rounds", "accountant", "versions")]
        body += "<tr>" + "".join(f"<td>{escape(x)}</td>" for x in cells) + "</tr>"
    return f'<table id="privacy-statement">{rows}</table><table>{head}{body}</table>'


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
            cells += [_fmt(r.get("groups")), len(r.get("tensors") or [])]
            parts.append("<tr>" + "".join(f"<td>{escape(_fmt(x))}</td>" for x in cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _checks(checks: list[dict]) -> str:
    summary = "<table><tr><th>check</th><th>result</th><th>what it verifies</th></tr>"
    details = ""
    for c in checks:
        status = escape(c.get("result", "error"))
        badge = f'<span class="badge {status}">{status}</span>'
        summary += (
            f"<tr><td><a href='#check-{escape(c['name'])}'>{escape(c['name'])}</a></td>"
            f"<td>{badge}</td><td>{escape(c.get('statement', ''))}</td></tr>"
        )
        findings = "".join(f"<li>{escape(f)}</li>" for f in c.get("findings", []))
        evidence = escape(json.dumps(c.get("evidence", {}), indent=1, default=str))
        details += (
            f'<div class="check" id="check-{escape(c["name"])}"><h3>{escape(c["name"])} {badge}'
            f"</h3><p>{escape(c.get('statement', ''))}</p>"
            + (f"<ul>{findings}</ul>" if findings else "<p class='muted'>No findings.</p>")
            + f"<details><summary>Evidence</summary><pre>{evidence}</pre></details></div>"
        )
    return summary + "</table>" + details


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
<title>secure_fedsa audit: {escape(report.get("verdict", "error"))}</title>
<style>{CSS}</style></head><body>
<h1>Privacy audit of a secure_fedsa run</h1>
<p class="muted">Run directory: {escape(str(report.get("run_directory")))} · audited
{escape(str(report.get("audited_at")))}</p>
{_verdict(report)}
<h2>Privacy statement</h2>{_statement(report.get("privacy_statement") or {})}
<h2>Privacy spent over rounds</h2>{plot}
<h2>What was released, and to whom</h2>{_releases(report.get("releases") or {})}
<h2>Trust model and its known limit</h2><table id="trust-model">{trust_html}</table>
<h2>Checks</h2>{_checks(report.get("checks") or [])}
</body></html>
"""
