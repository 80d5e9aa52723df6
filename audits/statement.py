"""The report's plain-language parts: the privacy statement, what was released, the trust model."""

from __future__ import annotations

from typing import Any

from audits import messages as kinds
from audits.accountants import merged
from audits.check_accounting import ledger_history, reported_epsilon
from audits.evidence import RunEvidence
from audits.groups import allowed_groups, tensor_group

RECOMPUTED_WITH = (
    "the audit's own replace-one privacy-loss computation (audits/replace_one.py, numpy; "
    "independent of the dp_accounting library the run used): bounds that contain the true ε"
)

UNMASKED_LIMIT = (
    "All clients share one CKKS secret key and this run did not mask the ciphertexts. A server "
    "that colludes with one client can therefore decrypt every individual client's update. The "
    "DP guarantee (P4) still holds for each update: what a colluding server sees of a client is "
    "(ε, δ)-DP with respect to that client's records."
)
MASKED_LIMIT = (
    "All clients share one CKKS secret key, but every upload was masked with pairwise and self "
    "masks (SecAgg-style, threshold t = a majority of each round's clients unless configured): a "
    "server colluding with fewer than t clients cannot read one honest client's update, even "
    "with the key; it learns the (encrypted) sum and which clients dropped. A coalition of the "
    "server with t or more clients can unmask individual updates; DP (P4) still holds for each."
)


def trust_model(run: RunEvidence) -> dict[str, str]:
    """The trust model, with the known limit of this run (masked or not)."""
    masked = run.cfg("encryption") is True and run.cfg("masking") is True
    return {**TRUST_MODEL, "known_limit": MASKED_LIMIT if masked else UNMASKED_LIMIT}


TRUST_MODEL = {
    "parties": "K clients (data holders), one honest-but-curious aggregation server (follows the "
    "protocol, reads everything it receives), an external network observer.",
    "server": "holds only the server key bundle (parameters and a fingerprint, no secret key); "
    "it adds ciphertexts and never decrypts.",
    "known_limit": UNMASKED_LIMIT,
    "not_promised": "protection against a malicious server or poisoning clients; privacy of the "
    "number of clients and rounds, and of each client's number of training records (σ and ε "
    "are functions of it).",
}


def finishing(run: RunEvidence) -> str | None:
    """What ``finish_steps`` means for the clients' final models (None when the run did not
    finish them): nothing is released by it, so the release tables do not change."""
    steps = run.cfg("finish_steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        return None
    return (
        f"after its last release each client trained the tensors it keeps to itself {steps} more "
        "step(s) on its own training records WITHOUT differential privacy (finish_steps). That "
        "finished model stays in the client's own directory (clients/<id>/finished-adapter/; a "
        "Flower site's finished-adapter/), is never sent and is not DP: it is no more private "
        "than a model the client trained alone without DP. It releases nothing: the claim "
        "below covers everything the clients released (their updates, the aggregates and the "
        "DP models in adapters/<id>/), and finishing writes nothing to the ledgers"
    )


def privacy_statement(run: RunEvidence) -> dict[str, Any]:
    """What guarantee the run claims, per client, from the ledgers (not from summary.json)."""
    finished = finishing(run)
    if run.cfg("dp") is not True:
        statement = {
            "dp": False,
            "text": "NO DIFFERENTIAL PRIVACY: this run makes no privacy claim.",
        }
        return {**statement, "finishing": finished} if finished else statement
    clients = {}
    evaluation = (run.summary or {}).get("evaluation") if isinstance(run.summary, dict) else None
    released = isinstance(evaluation, dict) and evaluation.get("released") is True
    gains = (evaluation or {}).get("gain_from_joining") if released else None
    for cid in run.client_ids:
        ledger = run.ledgers.get(cid)
        if not isinstance(ledger, dict):
            clients[cid] = {"ledger": "missing or unreadable: no verified claim"}
            continue
        identity = ledger.get("identity") or {}
        entries = ledger.get("entries") if isinstance(ledger.get("entries"), list) else []
        history = ledger_history(ledger) or []
        clients[cid] = {
            "epsilon": reported_epsilon(entries[-1]) if entries else 0.0,
            "delta": identity.get("delta"),
            "records": identity.get("dataset_size"),
            "accountant": identity.get("accountant"),
            "neighbouring_relation": identity.get("neighbouring_relation"),
            "versions": identity.get("versions"),
            "noise_multiplier": sorted({s for s, _, _ in history}),
            "sample_rate": sorted({q for _, q, _ in history}),
            "clip": identity.get("clip"),
            "steps": sum(s for _, _, s in merged(history)),
            "rounds": len(entries),
            "noise_source": sorted({str(e.get("noise_source")) for e in entries}),
            "gain_from_joining": (gains or {}).get(cid) if released else "not released",
        }
    return {
        "dp": True,
        "type": "record-level (ε, δ)-differential privacy",
        "unit": "one training record of one client",
        "neighbouring": "replace-one: two training sets of the same size that differ in one "
        "record of one client (each client's number of records is public: the sampling rate and "
        "the aggregation weights give it away, so the guarantee cannot rest on hiding it)",
        "not_covered": "statistics each client keeps in its own directory (training loss, "
        "batch sizes, training time, test accuracy, label counts) are not DP; they leave the "
        "client only if the operator releases them (release_evaluation)",
        "mechanism": "DP-SGD (Opacus): per-record gradients over every trainable parameter "
        "(LoRA A, B and the task head jointly) clipped to norm `clip`, Gaussian noise of standard "
        "deviation σ·clip added to their sum, batches Poisson-sampled with rate q",
        "scope": "everything a client releases over all rounds (its updates, and everything "
        "computed from them) is (ε, δ)-DP for that client's records",
        **({"finishing": finished} if finished else {}),
        "clients": clients,
    }


def releases(run: RunEvidence) -> dict[str, Any]:
    """What left each client, to whom, in what form, per round (from the egress records)."""
    method = run.cfg("method")
    allowed = sorted(allowed_groups(method, run.cfg("head")) or frozenset())
    per_client = {}
    for cid in run.client_ids:
        records = run.egress.get(cid) or []
        rounds = []
        for record in records:
            tensors = record.get("tensors") if isinstance(record.get("tensors"), list) else []
            rounds.append(
                {
                    "round": record.get("round"),
                    "to": "aggregation server",
                    "kind": record.get("kind"),
                    "form": record.get("form"),
                    "bytes": record.get("bytes"),
                    "groups": sorted({tensor_group(str(t)) for t in tensors}),
                    "tensors": tensors,
                }
            )
        per_client[cid] = rounds
    seen = sorted({str(r.get("kind")) for rows in per_client.values() for r in rows},
                  key=kinds.kind_order)  # fmt: skip
    return {
        "method": method,
        "shared_groups_allowed": allowed,
        "never_released": (["task head"] if "head" not in allowed else [])
        + (["B"] if "B" not in allowed else []),
        "recipient": "the aggregation server (which forwards the encrypted sum to the clients)",
        # what each kind of message carries, to whom, in what form, why it is safe
        "kinds": [kinds.describe(kind) for kind in seen],
        # per kind and round (consecutive rounds alike merged): counts, bytes, forms
        "summary": kinds.summary(run.egress),
        # every message, as the egress records list it (report.json only)
        "per_client": per_client,
    }


def epsilon_series(run: RunEvidence) -> dict[str, list[list[float]]]:
    """Client -> [[round, cumulative ε], ...] as the ledgers report it (finite values only)."""
    series = {}
    for cid, ledger in run.ledgers.items():
        entries = (ledger or {}).get("entries")
        if not isinstance(entries, list):
            continue
        points = []
        for entry in entries:
            eps = reported_epsilon(entry) if isinstance(entry, dict) else None
            eps = None if eps == float("inf") else eps
            if isinstance(entry, dict) and isinstance(entry.get("round"), int) and eps is not None:
                points.append([entry["round"], eps])
        series[cid] = points
    return series


def with_recomputed(statement: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The statement with each client's ε as the accounting check re-computed it, and whether
    the two agree (pure; ``epsilon_matches`` is False wherever it could not be confirmed)."""
    clients = statement.get("clients")
    if not isinstance(clients, dict):
        return statement
    accounting = next((c for c in checks if c.get("name") == "accounting"), {})
    found = (accounting.get("evidence") or {}).get("clients")
    found = found if isinstance(found, dict) else {}
    merged = {}
    for cid, claim in clients.items():
        evidence = found.get(cid) if isinstance(found.get(cid), dict) else {}
        merged[cid] = {
            **claim,
            "epsilon_recomputed": evidence.get("independent_epsilon_upper"),
            "epsilon_recomputed_lower": evidence.get("independent_epsilon_lower"),
            "epsilon_recomputed_with": RECOMPUTED_WITH,
            "epsilon_matches": evidence.get("epsilon_matches") is True,
        }
    return {**statement, "clients": merged}
