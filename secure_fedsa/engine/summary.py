"""summary.json: one schema for both transports, built from what the server holds.

The server holds its own metrics.jsonl and each site's final report (:class:`FinalReport`): ε and
the ledger's DP events (public parameters), and the site's accuracy only when the run releases its
evaluation. Everything else about a site's records stays in its own evaluation.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from secure_fedsa.config import RunConfig
from secure_fedsa.engine.messages import FinalReport
from secure_fedsa.engine.record import phase_seconds
from secure_fedsa.model.sharing import get_policy
from secure_fedsa.privacy.accounting import NEIGHBOURING_RELATION

KEPT_IN = "each client's own evaluation.json (clients/<id>/ in-process, a Flower site's state-dir)"


def evaluation_summary(
    per_client: Mapping[str, float],
    *,
    sizes: Mapping[str, int],
    majority: Mapping[str, float],
    validation: Mapping[str, float | None] | None = None,
) -> dict:
    """Accuracy per client, their unweighted (the paper's) and test-size-weighted means, test
    sizes, majority-class rates and the clients at or below theirs, and validation accuracy
    per client and its mean (None where no client has a validation split) (pure)."""
    total = sum(sizes.values())
    held = {c: v for c, v in (validation or {}).items() if v is not None}
    return {
        "per_client": dict(per_client),
        "mean": float(np.mean(list(per_client.values()))) if per_client else None,
        "weighted_mean": sum(per_client[c] * sizes[c] for c in sizes) / max(total, 1),
        "test_examples": dict(sizes),
        # what always predicting the client's most frequent test label scores
        "majority_class": dict(majority),
        "not_above_majority": [c for c in per_client if per_client[c] <= majority[c]],
        "validation_per_client": held or None,
        "validation_mean": float(np.mean(list(held.values()))) if held else None,
    }


def finishing_statement(config: RunConfig) -> str:
    """What ``finish_steps`` means for this run, in one sentence (summary.json)."""
    if not config.finish_steps:
        return (
            "none: each client's final model is its DP-trained one (its exported adapter), "
            "(ε, δ)-DP like everything it released"
        )
    policy = get_policy(config.method, config.head)
    groups = sorted(policy.trained - policy.shared)
    return (
        f"after its last release each client trained its own tensors ({', '.join(groups)}) "
        f"{config.finish_steps} more step(s) on its training records WITHOUT DP, the shared "
        "tensors frozen; that finished model stays in the client's own directory "
        "(finished-adapter/), is never sent, and is no more private than a model trained alone "
        "without DP. Everything the clients released (updates, aggregates, their exported DP "
        "adapters) is (ε, δ)-DP as stated, and no ledger changed"
    )


def _evaluation(config: RunConfig, reports: Mapping[str, FinalReport]) -> dict:
    if not config.release_evaluation:
        return {"released": False, "kept_in": KEPT_IN}
    shown = {cid: r.evaluation for cid, r in reports.items() if r.evaluation is not None}
    return {
        "released": True,
        **evaluation_summary(
            {cid: e.accuracy for cid, e in shown.items()},
            sizes={cid: e.test_examples for cid, e in shown.items()},
            majority={cid: e.majority_class for cid, e in shown.items()},
            validation={cid: e.accuracy_validation for cid, e in shown.items()},
        ),
    }


def _privacy(config: RunConfig, reports: Mapping[str, FinalReport]) -> dict | str:
    if not config.dp:
        return "no differential privacy"
    out = {}
    for cid, report in reports.items():
        if report.privacy is not None:
            privacy = asdict(report.privacy)
            privacy["noise_multipliers"] = list(privacy["noise_multipliers"])
            privacy["noise_source"] = list(privacy["noise_source"])
            privacy["history"] = list(privacy["history"])
            out[cid] = privacy
    return out


def completed_summary(
    config: RunConfig,
    *,
    dataset: str,
    metrics: Sequence[dict],
    reports: Mapping[str, FinalReport],
    key_fingerprint: str | None,
) -> dict[str, Any]:
    """The summary of a run that reached its end (or stopped: nobody could train)."""
    reports = {cid: reports[cid] for cid in sorted(reports)}
    final = sum(r.final_evaluation_seconds for r in reports.values())
    return {
        "status": "completed",
        "method": config.method,
        "dataset": dataset,
        "rounds_completed": completed_rounds(metrics),
        "differential_privacy": config.dp,
        "encryption": config.encryption,
        "protections_off": config.protections,
        "evaluation": _evaluation(config, reports),
        "finish_steps": config.finish_steps,
        "finishing": finishing_statement(config),
        "privacy": _privacy(config, reports),
        "neighbouring_relation": NEIGHBOURING_RELATION if config.dp else None,
        "key_fingerprint": key_fingerprint,
        "rejected_aggregates": rejected_aggregates(metrics),
        # the phases whose time does not depend on the records (training time does)
        "seconds_by_phase": phase_seconds(metrics, final_evaluation=final),
    }


def failed_summary(metrics: Sequence[dict], record: dict, reason: str, resume: str) -> dict:
    """The summary of a run stopped by a round that failed (it resumes from metrics.jsonl)."""
    return {
        "status": "failed",
        "failed_round": record["round"],
        "rounds_completed": completed_rounds(metrics),
        "reason": reason,
        "round": record,
        "resume": resume,
    }


def completed_rounds(metrics: Sequence[dict]) -> int:
    return max((m["round"] for m in metrics), default=0)


def rejected_aggregates(metrics: Sequence[dict]) -> list[dict]:
    return [
        {"round": m["round"], "rejected_by": m["aggregate"]["rejected_by"]}
        for m in metrics
        if (m.get("aggregate") or {}).get("status") == "rejected"
    ]
