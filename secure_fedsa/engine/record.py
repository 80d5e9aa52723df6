"""One line of metrics.jsonl: what the server knows of a round, in one schema for both transports.

The server knows what it did (who was drawn, who masked, which updates it accepted or rejected
and why, bytes, its own seconds) and what the sites reported (status, steps, ε, the aggregate's
status code, seconds of the phases that do not depend on the records, and accuracy only when the
run releases its evaluation). Nothing here is a private statistic of a client's records
(docs/threat-model.md, "What every file holds").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secure_fedsa.engine.messages import TRAINED, ApplyReport, TrainReport

# Where a round's time goes, per client (``seconds``): encrypting and signing the update, the
# server validating and adding it, verifying, decrypting and checking the aggregate, and
# evaluating on the per-round test sample. None depends on the records. Local training's time
# does (it follows the Poisson batch sizes): it is in each client's own rounds.jsonl only.
PHASES = ("encrypt", "aggregate", "decrypt", "evaluate")


@dataclass
class ClientEntry:
    """One client's line in a round."""

    status: str | None = None
    reason: str | None = None
    resumed: bool | None = None
    steps: int | None = None
    clamped: int | None = None
    ledger: dict | None = None  # the ledger head the server accepted with its update (P5)
    aggregate: str | None = None  # its status code about the round's aggregate
    epsilon_spent: float | None = None
    accuracy_subset: float | None = None  # only with the evaluation released
    accuracy_validation_subset: float | None = None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def trained(self, report: TrainReport) -> None:
        self.status, self.reason = report.status, report.reason
        if report.status == TRAINED:
            self.resumed, self.steps, self.clamped = report.resumed, report.steps, report.clamped
        self.seconds["encrypt"] = report.encrypt_seconds

    def applied(self, report: ApplyReport) -> None:
        self.aggregate, self.epsilon_spent = report.aggregate, report.epsilon
        self.accuracy_subset = report.accuracy
        self.accuracy_validation_subset = report.accuracy_validation
        self.seconds.update(decrypt=report.decrypt_seconds, evaluate=report.evaluate_seconds)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.status == TRAINED:
            out.update(resumed=self.resumed, steps=self.steps, clamped=self.clamped)
        if self.ledger is not None:
            out["ledger"] = self.ledger
        if self.aggregate is not None:
            out["aggregate"] = self.aggregate
        out["epsilon_spent"] = self.epsilon_spent
        if self.accuracy_subset is not None:
            out["accuracy_subset"] = self.accuracy_subset
        if self.accuracy_validation_subset is not None:
            out["accuracy_validation_subset"] = self.accuracy_validation_subset
        out["seconds"] = self.seconds
        return out


@dataclass
class RoundRecord:
    """A round as metrics.jsonl holds it (:meth:`to_json`)."""

    round: int
    sampled: list[str] | None = None  # the clients drawn (None: no clients per round)
    clients: dict[str, ClientEntry] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)  # updates the server refused, and why
    dropouts: list[dict] = field(default_factory=list)  # {client, phase, reason}
    aggregate: dict = field(default_factory=dict)
    masking: dict = field(default_factory=dict)  # who took part in the round's masking
    upload_bytes: int = 0
    download_bytes: int = 0
    server_seconds: float = 0.0  # unmasking and serializing the aggregate
    released: bool = False  # the run releases its evaluation: mean_accuracy is written

    def client(self, client_id: str) -> ClientEntry:
        return self.clients.setdefault(client_id, ClientEntry())

    def drop(self, client_id: str, phase: str, reason: str) -> None:
        self.dropouts.append({"client": client_id, "phase": phase, "reason": reason})

    @property
    def contributors(self) -> list[str]:
        return list(self.aggregate.get("contributors") or [])

    @property
    def failed(self) -> bool:
        return self.aggregate.get("status") == "failed"

    def trained(self) -> list[str]:
        return [cid for cid, entry in self.clients.items() if entry.status == TRAINED]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round}
        if self.sampled is not None:
            out["sampled"] = self.sampled
        out.update(
            clients={cid: self.clients[cid].to_json() for cid in sorted(self.clients)},
            rejected=self.rejected,
            dropouts=self.dropouts,
            aggregate=self.aggregate,
            masking=self.masking,
            contributors=len(self.contributors),
            upload_bytes=self.upload_bytes,
            download_bytes=self.download_bytes,
            server_seconds=self.server_seconds,
        )
        if self.released:
            shown = [e.accuracy_subset for e in self.clients.values()]
            shown = [a for a in shown if a is not None]
            out["mean_accuracy"] = sum(shown) / len(shown) if shown else None
        return out


def phase_seconds(metrics: Sequence[dict], *, final_evaluation: float = 0.0) -> dict[str, float]:
    """Seconds per phase summed over every round and client of ``metrics`` (pure)."""
    totals = dict.fromkeys(PHASES, 0.0)
    for record in metrics:
        for entry in (record.get("clients") or {}).values():
            for phase, value in ((entry or {}).get("seconds") or {}).items():
                if phase in totals and isinstance(value, (int, float)):
                    totals[phase] += value
        totals["aggregate"] += record.get("server_seconds") or 0.0
    totals["final_evaluation"] = final_evaluation
    return totals


def round_line(record: RoundRecord, total: int, accuracies: dict[str, float]) -> str:
    """The console's line for a round; ``accuracies`` are those its reader may see (the
    operator's own clients in-process, the released ones in Flower)."""
    parts = [f"round {record.round}/{total}"]
    for cid in sorted(record.clients):
        entry = record.clients[cid]
        text = f"{cid}: {entry.status}"
        text += f" acc={accuracies[cid]:.3f}" if cid in accuracies else ""
        text += f" eps={entry.epsilon_spent:.2f}" if entry.epsilon_spent is not None else ""
        parts.append(text)
    if accuracies:
        mean = sum(accuracies.values()) / len(accuracies)
        parts.append(f"mean acc={mean:.3f}" if math.isfinite(mean) else "mean acc=nan")
    if record.dropouts:
        parts.append(f"dropouts={len(record.dropouts)}")
    if record.rejected:
        parts.append(f"rejected={len(record.rejected)}")
    if record.aggregate.get("status") == "rejected":
        parts.append(f"aggregate REJECTED by {len(record.aggregate['rejected_by'])}")
    if record.failed:
        parts.append(f"no aggregate: {record.aggregate['reason']}")
    return " | ".join(parts)
