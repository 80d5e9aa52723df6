"""What to do about each kind of finding that is not a plain pass or fail: one sentence each.

Every ``warn`` and ``inconclusive`` a check raises names one of these codes; the report carries
the sentence next to the finding (``advice`` in each check of report.json), and the HTML shows it
under the finding. An ``error`` (the check could not be carried out) always gets
:data:`COULD_NOT_VERIFY`. Facts quoted here come from docs/privacy.md, docs/crypto.md and
docs/audit.md.
"""

from __future__ import annotations

ADVICE: dict[str, str] = {
    "no-masking": (
        "Run with pairwise masking on (the default of `secure-fedsa run`; the Flower transport "
        "does not mask yet), so that no coalition of the server with fewer than a majority of "
        "the clients can read one client's update."
    ),
    "interrupted-run": (
        "The run stopped before it finished: resume it with `secure-fedsa run --resume RUN_DIR` "
        "and audit again, or accept that the report covers only the rounds it completed."
    ),
    "interrupted-round": (
        "A round was charged and sent but never completed, and its privacy is counted: nothing "
        "to fix unless you want the round completed, which `secure-fedsa run --resume RUN_DIR` "
        "does."
    ),
    "plaintext-reports": (
        "Keep the Flower run config `report-accuracy` off (the default), because held-out "
        "accuracy in these plaintext reports is outside the DP guarantee, and treat the reports' "
        "ε and status codes as public."
    ),
    "rejected-aggregate": (
        "Find the contributor that sent an impossible update (the reasons are in metrics.jsonl, "
        "or in each Flower site's aggregates.jsonl), revoke it with `secure-fedsa keys revoke`, "
        "and make new keys for everyone if it must no longer read the federation."
    ),
    "small-dataset": (
        "Record-level DP drowns the signal of a client this small (in a measured run, clients "
        "with 279 and 1 161 records never beat the majority class at ε = 8): merge sites so each "
        "client has thousands of records, raise the budget, or leave the client out."
    ),
    "evaluation-released": (
        "Treat every accuracy in the run's shared files as a non-private statistic of each "
        "client's test records, or re-run without `--release-evaluation` (the default), which "
        "keeps it in each client's own directory."
    ),
    "fixed-size-batches": (
        "Ask the operator whether the run used the engine's Poisson sampler (each record drawn "
        "with probability q), since with fixed-size batches the accountant's ε does not "
        "describe the training."
    ),
    "versions-differ": (
        "Install the opacus, torch and secure_fedsa versions the run's ledgers record and run "
        "`secure-fedsa audit RUN --canary` again, so that the mechanism tested is the one that "
        "made the run."
    ),
    "above-canary-ceiling": (
        "Raise `--canaries` to the number the report's first page names for the claimed ε "
        "(δ = 1e-5: 1 000 canaries certify up to ε ≈ 7.2, 2 000 up to 8.2, 5 000 up to 9.4); "
        "until then the claim rests on the accounting check alone."
    ),
}

COULD_NOT_VERIFY = (
    "This could not be verified: ask the operator for the missing or damaged file the finding "
    "names (see the run-directory check) and audit again; until then treat the claim as "
    "unverified, which the verdict does (FAIL)."
)

UNEXPLAINED = (
    "Read the finding and the check's evidence, and ask the operator to explain it before "
    "relying on the run."
)


def advice_for(code: str | None) -> str:
    """The sentence for ``code``; a generic one for a finding raised without a code."""
    return ADVICE.get(code or "", UNEXPLAINED)
