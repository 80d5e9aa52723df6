"""The report's first page, for a reader who is not a programmer: the verdict and, for a FAIL,
what failed, before anything the run claims; what was protected and against whom; ε in context
(what (ε, δ) under replace-one neighbours bounds, for a membership attacker too); what a canary
test could or could not back; what left each client; what made the run.

Everything here is built from the report's own content (pure), except the numbers derived from
ε and δ, which follow from the definition of differential privacy and are cited:

- the definition: P[M(D) ∈ S] ≤ e^ε · P[M(D') ∈ S] + δ for every set S of outcomes and every
  neighbouring D, D' (Dwork & Roth 2014, "The Algorithmic Foundations of Differential Privacy",
  Definition 2.4);
- the hypothesis-testing region: any test of "the record was in" against "it was not" with
  false-positive rate α and false-negative rate β satisfies α + e^ε β ≥ 1 − δ and e^ε α + β ≥
  1 − δ (Kairouz, Oh & Viswanath 2015, "The Composition Theorem for Differential Privacy",
  ICML, Theorem 2.1; Wasserman & Zhou 2010): a membership attacker's true-positive rate at
  false-positive rate α is at most min(e^ε α + δ, 1 − e^−ε (1 − δ − α)), and its accuracy on a
  balanced guess at most (1 + (e^ε − 1 + 2δ) / (e^ε + 1)) / 2;
- empirical attacks: Nasr, Song, Thakurta, Papernot & Carlini 2021 ("Adversary Instantiation:
  Lower Bounds for Differentially Private Machine Learning", IEEE S&P) measured far less
  leakage than the bound with attackers who only see the final model of natural data, and
  reached it with the strongest attackers (crafted inputs, every intermediate update);
- the canary test's ceiling: :mod:`audits.canary_audit`, the larger of the one-run bounds of
  Steinke, Nasr & Jagielski 2023 ((ε, δ)) and Mahloujifar, Melis & Chaudhuri 2025 (Gaussian
  f-DP) when every guess is right.
"""

from __future__ import annotations

import math
from typing import Any

from audits import messages as kinds
from audits.canary_audit import canaries_needed, certifiable_epsilon
from audits.provenance import differing_versions
from audits.result import of_the_run, shown_result

SOURCES = {
    "definition": "Dwork & Roth 2014, The Algorithmic Foundations of Differential Privacy, "
    "Definition 2.4",
    "testing": "Kairouz, Oh & Viswanath 2015, The Composition Theorem for Differential Privacy "
    "(ICML), Theorem 2.1",
    "attacks": "Nasr, Song, Thakurta, Papernot & Carlini 2021, Adversary Instantiation: Lower "
    "Bounds for Differentially Private Machine Learning (IEEE S&P)",
    "canaries": "Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run "
    "(NeurIPS); Mahloujifar, Melis & Chaudhuri 2025, Auditing f-Differential Privacy in One Run "
    "(ICML)",
}
# the short form the report's sentences cite
CITE = {
    "definition": "Dwork & Roth 2014, Def. 2.4",
    "testing": "Kairouz, Oh & Viswanath 2015, Thm 2.1",
    "attacks": "Nasr et al. 2021",
    "canaries": "Steinke, Nasr & Jagielski 2023; Mahloujifar, Melis & Chaudhuri 2025",
}
FALSE_POSITIVE_RATES = (0.001, 0.01, 0.1)
CANARY_COUNTS = (1000, 2000, 5000, 10000, 20000)
MOST_CANARIES = 100_000  # the first page names no canary count above this
REFERENCE_EPSILON = 1.0  # the bound at ε = 1, for comparison
VERDICT_MEANING = {
    "PASS": "every check verified its claim from the run's files.",
    "WARN": "no check failed, but at least one found something to act on or accept (below).",
    "INCONCLUSIVE": "every check that could decide verified its claim; one had no power to "
    "decide (below).",
    "FAIL": "at least one check failed or could not be carried out: do not rely on this run's "
    "privacy claims until each failure below is explained.",
}
FAILED = ("fail", "error")
RAISED = ("warn", "inconclusive")
# what a passed check establishes, in a few words (the overview has the long form)
SHORT_CLAIMS = {
    "run-directory": "the files are complete",
    "configuration": "config.json matches what the run did",
    "egress": "only the allowed tensors left, encrypted, and every message is explained",
    "accounting": "ε re-computed independently, within budget",
    "ledger-integrity": "the privacy ledgers are intact and paid for every update",
    "aggregates": "clients loaded only plausible aggregates",
    "encryption": "128-bit CKKS, the server held no secret key",
    "dp-hazards": "DP on, Poisson sampling",
}
MASKED_LIMIT = (
    "a server colluding with t or more clients (t: a majority of each round's clients unless "
    "configured) could unmask one client's update; DP still holds for each update"
)
UNMASKED_LIMIT = (
    "all clients share one CKKS secret key, so a server colluding with one client could "
    "decrypt every client's update; DP still holds for each update"
)


def max_true_positive_rate(epsilon: float, delta: float, false_positive_rate: float) -> float:
    """The most a membership test can detect at ``false_positive_rate`` against an (ε, δ)-DP
    release (Kairouz, Oh & Viswanath 2015, Thm 2.1; pure)."""
    if math.isinf(epsilon):
        return 1.0
    alpha = false_positive_rate
    return max(
        0.0,
        min(1.0, math.exp(epsilon) * alpha + delta, 1 - (1 - delta - alpha) / math.exp(epsilon)),
    )


def max_accuracy(epsilon: float, delta: float) -> float:
    """The best accuracy of a membership guess when member and non-member are equally likely:
    (1 + max(TPR − FPR)) / 2, the corner of the testing region (pure)."""
    if math.isinf(epsilon):
        return 1.0
    advantage = (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1)
    return min(1.0, (1 + advantage) / 2)


def _percent(value: float) -> str:
    if value >= 0.9995:
        return f"{value:.2%}"
    return f"{value:.1%}" if value >= 0.01 else f"{value:.2%}"


def epsilon_in_context(epsilon: float, delta: float) -> dict[str, Any]:
    """What (ε, δ) under replace-one neighbours says, in words and numbers (pure)."""
    factor = math.inf if epsilon > 700 else math.exp(epsilon)
    accuracy = max_accuracy(epsilon, delta)
    membership = [
        {
            "false_positive_rate": a,
            "max_true_positive_rate": max_true_positive_rate(epsilon, delta, a),
        }
        for a in FALSE_POSITIVE_RATES
    ]
    times = "an unbounded number of" if math.isinf(factor) else f"{factor:,.0f}".replace(",", " ")
    meaning = (
        f"ε = {epsilon:.2f}, δ = {delta:g}, replace-one: whatever anyone concludes from "
        f"everything a client released is at most e^ε ≈ {times} times more likely with any one "
        "of its records than with that record replaced by another, except with probability δ "
        f"({CITE['definition']}). How many records a client holds is public; which records, "
        "and what they contain, is what is protected."
    )
    lowest = membership[0]["max_true_positive_rate"]
    if lowest >= 0.99:  # the table would say the same number three times
        detects = (
            f"may detect up to {_percent(lowest)} of members even while wrongly accusing only "
            f"{FALSE_POSITIVE_RATES[0]:.1%} of non-members"
        )
    else:
        detects = "can do no better than the table below"
    attacker = (
        f"A membership attacker (was this record used?) {detects}, and a guess between member "
        f"and non-member is right at most {_percent(accuracy)} of the time ({CITE['testing']})."
    )
    reference = max_accuracy(REFERENCE_EPSILON, delta)
    if accuracy > 0.9:
        reading = (
            "At this ε the worst-case bound is weak: it does not rule out an attacker who is "
            f"almost always right (at ε = {REFERENCE_EPSILON:g}: {_percent(reference)}). Attacks "
            "that see only the final model measure far less leakage, but the strongest reach "
            f"the bound ({CITE['attacks']})."
        )
    else:
        reading = (
            "The bound holds even for an attacker who knows every other record and sees every "
            f"release (at ε = {REFERENCE_EPSILON:g}: {_percent(reference)}; a coin flip: 50 %)."
        )
    return {
        "epsilon": epsilon,
        "delta": delta,
        "relation": "replace-one",
        "likelihood_ratio": factor,
        "membership": membership,
        "max_accuracy": accuracy,
        "meaning": meaning,
        "attacker": attacker,
        "reading": reading,
        "sources": [SOURCES[k] for k in ("definition", "testing", "attacks")],
    }


def canary_context(epsilon: float, delta: float, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a canary test can back at this δ, whether it could back ``epsilon``, and what this
    report's installed-mechanism test (if run) found; never a pass of the run (pure apart from
    the bounds' arithmetic)."""
    if not 0 < delta < 1:
        return {"text": f"No canary test can be sized at δ = {delta:g}.", "this_report": "n/a"}
    ceilings = {m: max(certifiable_epsilon(m, delta=delta).values()) for m in CANARY_COUNTS}
    finite = math.isfinite(epsilon) and epsilon > 0
    enough = canaries_needed(epsilon, delta=delta, most=MOST_CANARIES) if finite else None
    listed = ", ".join(f"{c:.1f} ({m:,})".replace(",", " ") for m, c in ceilings.items())
    text = (
        "A canary test gives only a lower bound on ε: it can show that the releases leak more "
        "than claimed, never less. With every guess right, at δ = "
        f"{delta:g} it can back at most ε ≈ {listed} canaries ({CITE['canaries']})."
    )
    if enough is None:
        text += (
            f" ε = {epsilon:.2f} would need more than {MOST_CANARIES:,} canaries: the claim "
            "rests on the accounting check's independent re-computation."
        ).replace(",", " ")
    else:
        text += f" {enough:,} canaries or more could back ε = {epsilon:.2f}.".replace(",", " ")
    test = next((c for c in checks if c.get("name") == "installed-mechanism-test"), None)
    if test is None:
        text += (
            " No canaries were trained inside this run, and the installed-mechanism test "
            "(--canary) was not run."
        )
        outcome = "not run"
    else:
        outcome = shown_result(test)
        text += " This report ran the installed-mechanism test (--canary), which trains " + {
            "consistent": "canaries through the code installed here, not this run: that code is "
            "consistent with the claim at 95 % confidence.",
            "inconclusive": "canaries through the code installed here: inconclusive, the claim "
            "is above its ceiling.",
            "fail": "canaries through the code installed here, and it FAILED: that mechanism "
            "leaks more than it claims.",
            "warn": "canaries through the code installed here: see its warning.",
        }.get(outcome, "canaries through the code installed here; it could not be carried out.")
    return {
        "ceilings": {str(m): c for m, c in ceilings.items()},
        "canaries_needed": enough,
        "this_report": outcome,
        "text": text,
    }


def _grouped(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Findings of one check with the same advice, together (pure)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row["check"], row["advice"]), []).append(row["finding"])
    return [
        {"check": check, "findings": found, "advice": advice}
        for (check, advice), found in groups.items()
    ]


def _verified_short(checks: list[dict[str, Any]]) -> str:
    run_checks = of_the_run(checks)  # the installed-mechanism test is not a check of the run
    passed = [str(c.get("name")) for c in run_checks if c.get("result") == "pass"]
    warned = [str(c.get("name")) for c in checks if c.get("result") == "warn"]
    claims = "; ".join(SHORT_CLAIMS.get(n, n) for n in passed)
    text = f"{len(passed)} of {len(run_checks)} checks of the run passed" + (
        f": {claims}." if passed else "."
    )
    if warned:
        text += f" Passed with warnings (below): {', '.join(warned)}."
    return text


def _not_verified_short(report: dict[str, Any]) -> str:
    text = (
        "The audit cannot see decrypted values: whether each loaded aggregate was sound rests "
        "on the clients' own checks."
    )
    off = set(report.get("protections_off") or [])
    if not {"no encryption", "unknown"} & off:
        limit = (report.get("trust_model") or {}).get("known_limit", "")
        short = MASKED_LIMIT if "every upload was masked" in limit else UNMASKED_LIMIT
        text += f" Known limit of the design: {short}."
    return text


def _findings(checks: list[dict[str, Any]], statuses: tuple[str, ...]) -> list[dict[str, str]]:
    rows = []
    for check in checks:
        advice = {a.get("finding"): a.get("advice") for a in check.get("advice") or []}
        for finding in check.get("findings") or []:
            status = finding.split(":", 1)[0]
            if status in statuses:
                rows.append(
                    {
                        "check": str(check.get("name")),
                        "finding": finding,
                        "advice": advice.get(finding) or "",
                    }
                )
    return rows


def _messages(report: dict[str, Any]) -> list[dict[str, Any]]:
    releases = report.get("releases") or {}
    summary = releases.get("summary") if isinstance(releases, dict) else None
    rows = []
    for kind in sorted({r["kind"] for r in summary or []}, key=kinds.kind_order):
        cells = [r for r in summary if r["kind"] == kind]
        sizes = sorted({b for r in cells for b in r.get("bytes_each") or []})
        per_round = sorted({r["messages_per_round"] / max(r["clients"], 1) for r in cells})
        about = kinds.describe(kind)
        rows.append(
            {
                "kind": kind,
                "name": about["name"],
                "carries": about["short"],
                "per_client_per_round": per_round,
                "bytes": [sizes[0], sizes[-1]] if sizes else None,
                "forms": sorted({f for r in cells for f in r.get("forms") or []}),
                "why_safe": about["why_safe"],
            }
        )
    return rows


def _worst_epsilon(report: dict[str, Any]) -> tuple[float, float] | None:
    clients = (report.get("privacy_statement") or {}).get("clients")
    if not isinstance(clients, dict):
        return None
    pairs = [
        (c.get("epsilon"), c.get("delta"))
        for c in clients.values()
        if isinstance(c.get("epsilon"), (int, float)) and isinstance(c.get("delta"), (int, float))
    ]
    return max(pairs) if pairs else None


def executive(report: dict[str, Any]) -> dict[str, Any]:
    """The first page's content (pure; from the report's own parts)."""
    checks = report.get("checks") or []
    word = str(report.get("verdict", "FAIL"))
    overview = report.get("overview") or {}
    worst = _worst_epsilon(report)
    dp = (report.get("privacy_statement") or {}).get("dp") is True
    page: dict[str, Any] = {
        "verdict": word,
        "verdict_meaning": VERDICT_MEANING.get(word, VERDICT_MEANING["FAIL"]),
        "failures": _findings(checks, FAILED),
        "to_act_on": _grouped(_findings(checks, RAISED)),
        "protected": overview.get("protected", ""),
        "against": overview.get("against", ""),
        "spent": overview.get("spent", ""),
        "verified": _verified_short(checks),
        "not_verified": _not_verified_short(report),
        "messages": _messages(report),
        "versions_differ": differing_versions(report),
    }
    if dp and worst is not None:
        epsilon, delta = float(worst[0]), float(worst[1])
        page["epsilon"] = epsilon_in_context(epsilon, delta)
        page["canary"] = canary_context(epsilon, delta, checks)
    return page
