"""Check (P4, empirical, of the run itself): the canaries each client trained in its own DP-SGD.

A run made with ``--canaries M`` has, in each client's directory, ``canaries.json``: M secret
bits (each picks the sign of one Dirac gradient canary on one coordinate of the shared tensors),
the salt of their commitment, and, for every round it trained, the client's own released update
on the M coordinates and the noisy clipped sums its DP steps released there, summed over the
round's steps in units of the clip (format version 2; version 1 had the updates only;
secure_fedsa/privacy/canaries.py). This check

1. recomputes the commitment, SHA-256("secure_fedsa.canaries:" + salt + ":" + bits as 0/1), and
   requires it to equal the ``canary_commitment`` of the client's ledger identity, which was
   written before the first round (so the bits were fixed before anything was trained);
2. requires the coordinates to be the M evenly spread coordinates of the shared vector
   (floor(j · size / M)), one release (and, in version 2, one set of noisy sums) per round the
   ledger charged, M finite values each;
3. scores each canary by the sum of its coordinate's noisy sums over the rounds (a canary with
   bit 1 adds +1 in each step that samples it); a version 1 file, by minus the sum of its
   released updates (descent turns a positive gradient into a negative update). The noisy sums
   are the DP mechanism's output; the released update is AdamW's post-processing of them, which
   can only lose signal (docs/audit.md measures how much);
4. chooses, before reading any score, one set of guesses from public numbers (M, the claimed ε
   and δ, the ledger's DP events; :func:`audits.canary_audit.chosen_guesses`:
   the set most likely to refute the claim if the canaries leak twice the claimed ε) and gives
   the scores, with bit 1 as "in", to :func:`audits.canary_audit.audit_scores` with the
   Gaussian f-DP analysis of Mahloujifar, Melis & Chaudhuri 2025 alone: one test, so the whole
   5 % error is its own, 95 % confidence per client. (The installed-mechanism test keeps both
   one-run analyses over six sets of guesses; here the (ε, δ) analysis of Steinke, Nasr &
   Jagielski 2023 never gave the larger bound and its share of the error cost power:
   docs/audit.md.)
5. gives each client the verdict of :func:`audits.canary_audit.verdict`: FAIL where the lower
   bound exceeds the ε its ledger claims, INCONCLUSIVE where the claim is above what M canaries
   can certify, PASS otherwise ("this run's releases are consistent with its claim at 95 %
   confidence").

Why sign pairs fit the analysis. Both analyses assume m canaries whose secret bits are
independent fair coins, fixed before training, and a mechanism that is ε-DP between the two
inputs one bit chooses; they never use what the two inputs are. Here bit j chooses between the
canary +g_j and −g_j: two datasets that differ by replacing one record, the neighbouring relation
under which the ledger's ε is accounted (replace-one). "Included" in the analyses' words is
bit 1 (the + canary); the score ranks "+" over "−" and is computed from the mechanism's outputs
alone (never from which steps sampled a canary, which the mechanism keeps secret). So
the claim under test is exactly the ledger's (ε, δ) under replace-one neighbours, not an
add/remove ε.

Unlike the mechanism test (:mod:`audits.check_canary`, which trains canaries in the auditor's
process), this audits what the run's own processes did: its sampler, clipping, noise and
accounting, as run. It restates the file format and formulas; it imports nothing of secure_fedsa.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from typing import Any

from audits.canary_audit import CONFIDENCE, GUESSES, Analysis, audit_scores, chosen_guesses
from audits.check_accounting import reported_epsilon
from audits.check_canary import judge_client
from audits.evidence import CANARY_FILE, RunEvidence
from audits.result import CheckResult

NAME = "run-canary-audit"
STATEMENT = (
    "Run-level audit: the Dirac gradient canaries each client trained inside its own DP-SGD "
    "(bits committed in its ledger before training) give an empirical ε lower bound at 95 % "
    "confidence, from the noisy sums the client's DP-SGD released on them, that does not exceed "
    "the ε its ledger claims, and the claim is within what the number of canaries can certify."
)
# the one analysis of the run-level verdict (module docstring, step 4)
ANALYSES: tuple[Analysis, ...] = ("gaussian-fdp",)
# the subject of the verdict sentences (audits.canary_audit.verdict_sentence)
SUBJECT = "this run's releases"

FORMAT = "secure_fedsa.canaries"
FORMAT_VERSION = 2
VERSIONS = (1, 2)  # version 1: no noisy sums (scored on the released updates)
SALT_HEX = 32


def commitment(bits: list[int], salt: str) -> str:
    """The canary commitment, as the client computes it before training."""
    text = f"{FORMAT}:{salt}:" + "".join("1" if b else "0" for b in bits)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def coordinates(size: int, m: int) -> list[int]:
    """The M canary coordinates of a shared vector of ``size`` values."""
    return [(j * size) // m for j in range(m)]


def canary_scores(releases: list[list[float]], m: int) -> list[float]:
    """Minus the sum of the released updates on each canary's coordinate (version 1 files)."""
    totals = [0.0] * m
    for update in releases:
        for j, value in enumerate(update):
            totals[j] -= float(value)
    return totals


def noisy_sum_scores(sums: list[list[float]], m: int) -> list[float]:
    """The sum over the rounds of the noisy clipped sums on each canary's coordinate."""
    totals = [0.0] * m
    for row in sums:
        for j, value in enumerate(row):
            totals[j] += float(value)
    return totals


def _document_problem(doc: Any, m: int, size: Any) -> str | None:
    if not isinstance(doc, dict):
        return f"{CANARY_FILE} is missing or unreadable"
    if doc.get("format") != FORMAT or doc.get("format_version") not in VERSIONS:
        return f"{CANARY_FILE} is not a {FORMAT} document of version 1 or 2"
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
    if doc["format_version"] >= 2 and not isinstance(doc.get("noisy_sums"), list):
        return "no list of noisy sums"
    return None


def _per_round(
    doc: dict[str, Any], key: str, values: str, rounds: list[int], m: int
) -> list[list[float]] | str:
    """The rows of ``doc[key]`` (each ``{"round": …, values: [M numbers]}``), one per charged
    round, or why they cannot be used."""
    what = {"releases": "release", "noisy_sums": "noisy sums"}[key]
    by_round: dict[int, list[float]] = {}
    for item in doc[key]:
        round_number = item.get("round") if isinstance(item, dict) else None
        row = item.get(values) if isinstance(item, dict) else None
        if not isinstance(round_number, int) or not isinstance(row, list) or len(row) != m:
            return f"a {what} record lacks its round or one value per canary"
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in row
        ):
            return f"the {what} of round {round_number} hold a value that is not a number"
        by_round[round_number] = row
    if sorted(by_round) != rounds:
        return f"{what} recorded for rounds {sorted(by_round)}, the ledger charged rounds {rounds}"
    return [by_round[r] for r in rounds]


def _history(entries: list[Any]) -> list[tuple[float, float, int]] | None:
    """(σ, q, steps) of every ledger entry, or None when one is not a noise multiplier, a rate
    and a step count."""
    out = []
    for e in entries:
        sigma, q, steps = e.get("noise_multiplier"), e.get("sample_rate"), e.get("steps")
        number = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (sigma, q))
        valid_steps = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0
        if not (number and math.isfinite(sigma) and sigma >= 0 and 0 < q <= 1 and valid_steps):
            return None
        out.append((float(sigma), float(q), steps))
    return out if any(steps for _, _, steps in out) else None


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
        releases = _per_round(doc, "releases", "update", rounds, m)
        sums = (
            _per_round(doc, "noisy_sums", "sums", rounds, m) if doc["format_version"] >= 2 else None
        )
        problem = next((x for x in (releases, sums) if isinstance(x, str)), None)
        if problem:
            result.error(f"{cid}: {problem}")
            continue
        claimed = reported_epsilon(entries[-1])
        delta = identity.get("delta")
        history = _history([e for e in entries if isinstance(e, dict)])
        if claimed is None or not isinstance(delta, float) or history is None:
            result.error(f"{cid}: the ledger's ε, δ or DP events are not numbers")
            continue
        bits = [b == 1 for b in doc["bits"]]
        # one set of guesses, chosen from public numbers before any score is read; a claim of
        # ε = ∞ (or 0), or a noiseless event, has no leak to design for: the six fixed sets,
        # the error split over all
        fractions = GUESSES
        if 0 < claimed < math.inf and all(sigma > 0 for sigma, _, _ in history):
            with contextlib.suppress(ValueError):  # no model of these events: the six sets
                fractions = (
                    chosen_guesses(m, history, claimed=claimed, delta=delta, analyses=ANALYSES),
                )
        scores = canary_scores(releases, m) if sums is None else noisy_sum_scores(sums, m)
        audit = audit_scores(scores, bits, delta=delta, fractions=fractions, analyses=ANALYSES)
        outcome = {
            **audit.to_dict(),
            "claimed_epsilon": claimed,
            "rounds": rounds,
            "scored_on": "released updates" if sums is None else "noisy sums",
            "guesses": [list(f) for f in fractions],
        }
        judge_client(result, cid, outcome, claimed=outcome["claimed_epsilon"], canaries=m,
                     subject=SUBJECT, tails=(". The run's training leaked more than its ledger "
                                             "accounts", "", ""))  # fmt: skip
        outcome["seconds"] = round(time.time() - started, 3)
        result.evidence["clients"][cid] = outcome
    return result
