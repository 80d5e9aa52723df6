"""The report's opening paragraph, in plain language, generated from the report's own content.

Who was protected, against whom, what was spent, what was verified and what was not: each part is
one or two sentences built from the privacy statement, the run's parameters and the check
results, never from fixed text about a run that might not hold for this one.
"""

from __future__ import annotations

import math
from typing import Any

from audits.result import of_the_run

# what a passed check establishes, in words a compliance reader can use
VERIFIED_CLAIMS: dict[str, str] = {
    "run-directory": "the run's files are complete and readable",
    "configuration": "config.json describes the run its other files record",
    "egress": "only the shared tensors left each client, as ciphertexts, and every other "
    "message is one of secure aggregation's, explained by the round's masking",
    "accounting": "each ledger's ε matches an independent re-computation and stays in budget",
    "ledger-integrity": "the privacy ledgers are intact and paid for every update, with noise "
    "from the OS CSPRNG",
    "aggregates": "the clients loaded only aggregates that honest clients could have produced",
    "encryption": "the encryption meets 128-bit security and the server held no secret key",
    "dp-hazards": "DP and encryption covered every round, with Poisson sampling",
}
MECHANISM_TEST = "installed-mechanism-test"
# what the installed-mechanism test (``audit --canary``) says about the run: never a pass of it
MECHANISM_SENTENCES: dict[str | None, str] = {
    None: "Not verified: no canary test backs the accounted ε; the installed-mechanism test "
    "(--canary) was not run, and it would test the installed code, not this run.",
    "inconclusive": "Not verified: the installed-mechanism test was inconclusive, because the "
    "claimed ε is above what its canaries can certify.",
    "pass": "The installed-mechanism test found the DP-SGD installed where the audit ran "
    "consistent with the claimed ε at 95 % confidence; it tests that code, not a replay of "
    "this run, so it is no evidence about this run's releases.",
    "warn": "The installed-mechanism test raised a warning (see its findings); it tests the "
    "installed code, not a replay of this run.",
    "fail": "The installed-mechanism test FAILED: the DP-SGD installed where the audit ran leaks "
    "more than it accounts.",
    "error": "The installed-mechanism test could not be carried out.",
}


def overview(report: dict[str, Any]) -> dict[str, str]:
    """The plain-language parts and the paragraph joining them (pure)."""
    checks = report.get("checks") or []
    parts = {
        "failed": _failed(checks),
        "protected": _protected(report),
        "against": _against(report),
        "spent": _spent(report),
        "verified": _verified(checks),
        "not_verified": _not_verified(report),
    }
    if parts["failed"]:  # a failure comes first, the claims after it, marked as claims
        claims = " ".join(p for p in (parts["protected"], parts["against"], parts["spent"]) if p)
        order = [parts["failed"], parts["verified"], parts["not_verified"]]
        order.append(f"What the run claims, not established while these failures stand: {claims}")
    else:
        order = [parts[k] for k in ("protected", "against", "spent", "verified", "not_verified")]
    parts["text"] = " ".join(p for p in order if p)
    return parts


def _failed(checks: list[dict[str, Any]]) -> str:
    failed = [str(c.get("name")) for c in checks if c.get("result") == "fail"]
    unverified = [str(c.get("name")) for c in checks if c.get("result") == "error"]
    why = [f"{', '.join(failed)} failed"] if failed else []
    why += [f"{', '.join(unverified)} could not be verified"] if unverified else []
    if not why:
        return ""
    return f"FAIL: {'; '.join(why)}. Do not rely on this run's privacy claims."


def _run_words(run: dict[str, Any]) -> str:
    words = [f"{run.get('method')} run", f"{run.get('clients')} clients"]
    words += [f"{run.get('rounds_completed')} rounds", f"dataset {run.get('dataset')}"]
    return ", ".join(words)


def _protected(report: dict[str, Any]) -> str:
    run = report.get("run_parameters") or {}
    statement = report.get("privacy_statement") or {}
    off = report.get("protections_off") or []
    if "unknown" in off or "unavailable" in run:
        return (
            "What this run protected could not be established: its configuration is missing or "
            "unreadable."
        )
    if statement.get("dp") is not True:
        text = (
            f"This {_run_words(run)} makes no privacy claim: differential privacy was off, so "
            "nothing bounds what its releases reveal about any training record."
        )
    else:
        text = (
            f"In this {_run_words(run)}, each client's training records were protected with "
            "record-level (ε, δ)-differential privacy: everything a client released over all "
            "rounds is (ε, δ)-DP with respect to any one of its training records."
        )
    if "no encryption" in off:
        text += " Encryption was off: the updates left the clients in plaintext."
    return text


def _against(report: dict[str, Any]) -> str:
    if (report.get("privacy_statement") or {}).get("dp") is not True:
        return ""
    text = (
        "The guarantee holds against the honest-but-curious aggregation server, the other "
        "clients, and anyone holding the run's files."
    )
    if "no encryption" not in (report.get("protections_off") or []):
        text += " The server itself only ever received ciphertexts and held no key to decrypt them."
    return text


def _epsilon(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "∞" if math.isinf(value) else f"{value:.3f}"
    return "unknown"


def _spent(report: dict[str, Any]) -> str:
    statement = report.get("privacy_statement") or {}
    clients = statement.get("clients")
    if statement.get("dp") is not True or not isinstance(clients, dict) or not clients:
        return ""
    deltas = sorted({str(c.get("delta")) for c in clients.values() if c.get("delta") is not None})
    budget = report.get("epsilon_budget")
    spent = ", ".join(f"{cid} ε = {_epsilon(c.get('epsilon'))}" for cid, c in clients.items())
    text = (
        f"Privacy spent (cumulative, from each client's ledger, at δ = {', '.join(deltas) or '?'}"
        + (f"; budget ε = {budget}" if budget is not None else "")
        + f"): {spent}."
    )
    mismatched = [cid for cid, c in clients.items() if c.get("epsilon_matches") is not True]
    if mismatched:
        text += f" The independent re-computation did NOT confirm ε for {', '.join(mismatched)}."
    else:
        text += (
            " An independent re-computation (the audit's own replace-one accountant) "
            "confirmed every ε."
        )
    return text


def _verified(checks: list[dict[str, Any]]) -> str:
    by_result: dict[str, list[str]] = {}
    for check in checks:
        by_result.setdefault(str(check.get("result")), []).append(str(check.get("name")))
    run_checks = of_the_run(checks)  # a pass of the installed-mechanism test is not the run's
    passed = [str(c.get("name")) for c in run_checks if c.get("result") == "pass"]
    claims = "; ".join(VERIFIED_CLAIMS.get(n, n) for n in passed)
    text = f"Verified from the run's files ({len(passed)} of {len(run_checks)} checks passed)"
    text += f": {claims}." if passed else "."
    if by_result.get("warn"):
        text += f" Passed with warnings, each with what to do: {', '.join(by_result['warn'])}."
    if by_result.get("fail"):
        text += f" FAILED: {', '.join(by_result['fail'])}; do not rely on this run's claims."
    if by_result.get("error"):
        text += (
            f" Could not be verified (evidence missing or unreadable, counted as FAIL): "
            f"{', '.join(by_result['error'])}."
        )
    return text


def _not_verified(report: dict[str, Any]) -> str:
    checks = {c.get("name"): c.get("result") for c in report.get("checks") or []}
    sentences = []
    mechanism = checks.get(MECHANISM_TEST)
    sentences.append(MECHANISM_SENTENCES.get(mechanism, MECHANISM_SENTENCES["error"]))
    sentences.append(
        "The audit cannot see decrypted values: whether each loaded aggregate was sound rests on "
        "the clients' own checks."
    )
    if not {"no encryption", "unknown"} & set(report.get("protections_off") or []):
        limit = (report.get("trust_model") or {}).get("known_limit", "")
        sentences.append(f"Known limit: {limit}")
    return " ".join(sentences)
