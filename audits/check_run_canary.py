"""Check (P4, empirical, of the run itself): the canaries each client trained in its own DP-SGD.

A run made with ``--canaries M`` has, in each client's directory, ``canaries.json``: M secret
bits (each picks the sign of one Dirac gradient canary on one coordinate of the shared tensors),
the salt of their commitment, and the client's own released update on the M coordinates in every
round it trained (secure_fedsa/privacy/canaries.py). This check

1. recomputes the commitment, SHA-256("secure_fedsa.canaries:" + salt + ":" + bits as 0/1), and
   requires it to equal the ``canary_commitment`` of the client's ledger identity, which was
   written before the first round (so the bits were fixed before anything was trained);
2. requires the coordinates to be the M evenly spread coordinates of the shared vector
   (floor(j · size / M)), one release per round the ledger charged, M finite values each;
3. scores each canary by minus the sum of its coordinate's released updates (a canary with bit 1
   has a positive gradient, which the client's descent turns into a negative update) and gives
   the scores, with bit 1 as "in", to :func:`audits.canary_audit.audit_scores`: both one-run
   analyses (Steinke, Nasr & Jagielski 2023; the Gaussian f-DP analysis of Mahloujifar, Melis &
   Chaudhuri 2025), each over several sets of guesses, at 95 % confidence per client;
4. gives each client the verdict of :func:`audits.canary_audit.verdict`: FAIL where the lower
   bound exceeds the ε its ledger claims, INCONCLUSIVE where the claim is above what M canaries
   can certify, PASS otherwise ("this run's releases are consistent with its claim at 95 %
   confidence").

Why sign pairs fit the analysis. Both analyses assume m canaries whose secret bits are
independent fair coins, fixed before training, and a mechanism that is ε-DP between the two
inputs one bit chooses; they never use what the two inputs are. Here bit j chooses between the
canary +g_j and −g_j: two datasets that differ by replacing one record, the neighbouring relation
under which the ledger's ε is accounted (replace-one). "Included" in the analyses' words is
bit 1 (the + canary); the score ranks "+" over "−" and is computed from the releases alone. So
the claim under test is exactly the ledger's (ε, δ) under replace-one neighbours, not an
add/remove ε.

Unlike the mechanism test (:mod:`audits.check_canary`, which trains canaries in the auditor's
process), this audits what the run's own processes did: its sampler, clipping, noise and
accounting, as run. It restates the file format and formulas; it imports nothing of secure_fedsa.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from audits.canary_audit import CONFIDENCE, audit_scores
from audits.check_accounting import reported_epsilon
from audits.check_canary import judge_client
from audits.evidence import CANARY_FILE, RunEvidence
from audits.result import CheckResult

NAME = "run-canary-audit"
STATEMENT = (
    "Run-level audit: the Dirac gradient canaries each client trained inside its own DP-SGD "
    "(bits committed in its ledger before training) give an empirical ε lower bound at 95 % "
    "confidence, from the client's own released updates, that does not exceed the ε its "
    "ledger claims, and the claim is within what the number of canaries can certify."
)
# the subject of the verdict sentences (audits.canary_audit.verdict_sentence)
SUBJECT = "this run's releases"

FORMAT = "secure_fedsa.canaries"
FORMAT_VERSION = 1
SALT_HEX = 32


def commitment(bits: list[int], salt: str) -> str:
    """The canary commitment, as the client computes it before training."""
    text = f"{FORMAT}:{salt}:" + "".join("1" if b else "0" for b in bits)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def coordinates(size: int, m: int) -> list[int]:
    """The M canary coordinates of a shared vector of ``size`` values."""
    return [(j * size) // m for j in range(m)]


def canary_scores(releases: list[list[float]], m: int) -> list[float]:
    """Minus the sum of the released updates on each canary's coordinate."""
    totals = [0.0] * m
    for update in releases:
        for j, value in enumerate(update):
            totals[j] -= float(value)
    return totals


def _document_problem(doc: Any, m: int, size: Any) -> str | None:
    if not isinstance(doc, dict):
        return f"{CANARY_FILE} is missing or unreadable"
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        return f"{CANARY_FILE} is not a {FORMAT} version {FORMAT_VERSION} document"
    bits, salt = doc.get("bits"), doc.get("salt")
    if not isinstance(bits, list) or any(b not in (0, 1) or isinstance(b, float) for b in bits):
        return "the bits are not a list of 0 and 1"
    if len(bits) != m:
        return f"{len(bits)} canaries in {CANARY_FILE}, config.json says {m}"
    if not isinstance(salt, str) or len(salt) != SALT_HEX:
        return "the salt is not 32 hex characters"
    if not isinstance(size, int) or doc.get("shared_size") != size or size < m:
        return (
            f"the canaries were placed on {doc.get('shared_size')} values, setup.json shares {size}"
        )
    if doc.get("coordinates") != coordinates(size, m):
        return "the canary coordinates are not the evenly spread ones"
    if not isinstance(doc.get("releases"), list):
        return "no list of releases"
    return None


def _releases(doc: dict[str, Any], rounds: list[int], m: int) -> list[list[float]] | str:
    """The released updates, one per charged round, or why they cannot be used."""
    by_round: dict[int, list[float]] = {}
    for item in doc["releases"]:
        round_number = item.get("round") if isinstance(item, dict) else None
        update = item.get("update") if isinstance(item, dict) else None
        if not isinstance(round_number, int) or not isinstance(update, list) or len(update) != m:
            return "a release lacks its round or one value per canary"
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in update
        ):
            return f"the release of round {round_number} holds a value that is not a number"
        by_round[round_number] = update
    if sorted(by_round) != rounds:
        return (
            f"releases recorded for rounds {sorted(by_round)}, the ledger charged rounds {rounds}"
        )
    return [by_round[r] for r in rounds]


def check_run_canary(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    m = run.cfg("canaries")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        result.error("config.json names no canaries: this run was not made in audit mode")
        return result
    if run.cfg("dp") is not True:
        result.fail("no differential privacy: there is no claimed ε to audit")
        return result
    size = (run.setup or {}).get("shared_values")
    result.evidence = {"canaries": m, "confidence": CONFIDENCE, "clients": {}}
    for cid in run.client_ids:
        started = time.time()
        ledger = run.ledgers.get(cid) or {}
        identity = ledger.get("identity") if isinstance(ledger, dict) else None
        entries = ledger.get("entries") if isinstance(ledger, dict) else None
        if not isinstance(identity, dict) or not isinstance(entries, list) or not entries:
            result.error(f"{cid}: no usable privacy ledger: nothing to audit")
            continue
        doc = run.canaries.get(cid)
        problem = _document_problem(doc, m, size)
        if problem:
            result.error(f"{cid}: {problem}")
            continue
        committed = identity.get("canary_commitment")
        if committed != commitment(doc["bits"], doc["salt"]):
            result.fail(
                f"{cid}: the canary bits do not match the commitment in the ledger, written "
                "before training: they were changed afterwards (or belong to another run)"
            )
            continue
        rounds = sorted({e.get("round") for e in entries if isinstance(e, dict)})
        releases = _releases(doc, rounds, m)
        if isinstance(releases, str):
            result.error(f"{cid}: {releases}")
            continue
        claimed = reported_epsilon(entries[-1])
        delta = identity.get("delta")
        if claimed is None or not isinstance(delta, float):
            result.error(f"{cid}: the ledger's ε or δ is not a number")
            continue
        bits = [b == 1 for b in doc["bits"]]
        audit = audit_scores(canary_scores(releases, m), bits, delta=delta)
        outcome = {**audit.to_dict(), "claimed_epsilon": claimed, "rounds": rounds}
        judge_client(result, cid, outcome, claimed=outcome["claimed_epsilon"], canaries=m,
                     subject=SUBJECT, tails=(". The run's training leaked more than its ledger "
                                             "accounts", "", ""))  # fmt: skip
        outcome["seconds"] = round(time.time() - started, 3)
        result.evidence["clients"][cid] = outcome
    return result
