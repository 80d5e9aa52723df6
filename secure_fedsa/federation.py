"""The in-process federation: the default way to run, every client and the server in one process.

Round r, as data flows (design.md section 3):

    each client: DP-SGD on (A, B, head) -> shared tensors -> weighted, encrypted bytes
    server:      validate each update, add ciphertexts -> aggregate bytes
    each client: verify the server's signature, decrypt, divide, check the values are ones
                 honest clients can produce, load as its shared tensors (or keep the round's
                 starting ones if not); B and head untouched

Transport is the :class:`InProcessTransport` below; the Flower apps use the same Client and
Aggregator with another transport.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from secure_fedsa.client import Client
from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.egress import EgressLog
from secure_fedsa.errors import BudgetExhausted
from secure_fedsa.masked_round import InProcessMasking
from secure_fedsa.model import build_model
from secure_fedsa.node import (
    PrivacyHistory,
    client_privacy,
    client_releases,
    new_aggregator,
    new_session,
    plan_client,
    privacy_history,
    shared_manifest,
    submit,
    training_plan,
)
from secure_fedsa.prepare import model_spec, prepare
from secure_fedsa.privacy.continuity import metrics_releases
from secure_fedsa.privacy.plan import PrivacyPlan
from secure_fedsa.privacy.randomness import OSRandom, RandomSource
from secure_fedsa.rundir import RunDirectory
from secure_fedsa.secagg import RoundFailed as MaskingFailed
from secure_fedsa.security import (
    Codecs,
    Identities,
    check_keys_dir,
    setup_codecs,
    setup_identities,
)
from secure_fedsa.server import Aggregator
from secure_fedsa.sharing import get_policy

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Callbacks for output; the CLI plugs in progress bars, tests leave them silent."""

    message: Callable[[str], None] = lambda text: None
    warning: Callable[[str], None] | None = None  # None: warnings go to ``message``
    round_started: Callable[[int, int], None] = lambda r, total: None
    client_done: Callable[[str], None] = lambda client_id: None
    round_done: Callable[[int], None] = lambda r: None
    client_started: Callable[[str, int], None] = lambda client_id, steps: None
    step_done: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        if self.warning is None:
            self.warning = self.message


@dataclass
class RoundRecord:
    round: int
    clients: dict[str, dict] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)
    aggregate: dict = field(default_factory=dict)
    masking: dict = field(default_factory=dict)  # who took part in the round's masking
    server_seconds: float = 0.0  # serializing the aggregate (adding is in each client's seconds)
    upload_bytes: int = 0
    download_bytes: int = 0
    seconds: float = 0.0
    mean_accuracy: float | None = None


class InProcessTransport:
    """Delivers client updates to the server in memory and records every byte that leaves."""

    name = "in-process"

    def __init__(self, egress: EgressLog, encrypted: bool) -> None:
        self.egress = egress
        self.encrypted = encrypted

    def send_update(
        self,
        client: Client,
        round_number: int,
        aggregator: Aggregator,
        mask: ChunkMask | None = None,
    ) -> tuple[int, str | None, dict[str, float]]:
        """Encrypt (and mask), record and deliver one update: (bytes, rejection reason or None,
        seconds spent encrypting and aggregating it)."""
        started = time.perf_counter()
        payload = client.make_update(round_number, aggregator.session, mask)
        encrypted = time.perf_counter()
        self.egress.record(
            client.client_id,
            round_number=round_number,
            kind="update",
            payload=payload,
            encrypted=self.encrypted,
            tensors=client.manifest.names,
            transport=self.name,
            key_fingerprint=client.codec.fingerprint,
            manifest_hash=client.manifest.digest,
            ledger_entry=client.trained_entry,
        )
        added = time.perf_counter()
        reason = submit(aggregator, payload)
        seconds = {"encrypt": encrypted - started, "aggregate": time.perf_counter() - added}
        return len(payload), reason, seconds


class Federation:
    """Set up once (all checks first), then :meth:`run` the rounds.

    ``dp_randomness`` (client id -> source of DP noise and sampling) exists for tests that need
    reproducible noise; left out, as by the CLI, every client draws from the OS CSPRNG.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        progress: Progress | None = None,
        resume: bool = False,
        dp_randomness: Callable[[str], RandomSource] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or Progress()
        self.policy = get_policy(config.method, config.head)
        # 1. every check that can fail on user input, before anything is written
        self.prepared = prepare(config)
        check_keys_dir(config, list(self.prepared.clients))
        torch.manual_seed(config.seed)
        self.model = build_model(
            model_spec(config), num_labels=len(self.prepared.label_names), seed=config.seed
        )
        existing = RunDirectory.resume(run_dir, config) if resume else None
        histories = self._histories(existing)
        self.plans = {
            cid: plan_client(config, cid, data.num_train, histories[cid])
            for cid, data in self.prepared.clients.items()
            if config.dp
        }
        self.warnings = setup_warnings(config, self.prepared.label_counts)
        if config.keys_dir is not None:  # given keys are loaded before anything is written
            self._load_keys(run_dir / "keys")
        # 2. the run directory, keys and clients; a failed set-up leaves nothing behind
        self.rundir = existing or RunDirectory.create(run_dir, config)
        try:
            self._set_up(config, existing, histories, dp_randomness)
        except BaseException:
            if existing is None:
                self.rundir.discard()
            raise

    def _load_keys(self, keys_dir: Path) -> None:
        self.codecs: Codecs = setup_codecs(self.config, keys_dir)
        self.identities: Identities = setup_identities(
            self.config, keys_dir, list(self.prepared.clients)
        )

    def _set_up(
        self,
        config: RunConfig,
        existing: RunDirectory | None,
        histories: dict[str, PrivacyHistory],
        dp_randomness: Callable[[str], RandomSource] | None,
    ) -> None:
        self.rundir.save_config(config)
        if config.keys_dir is None:
            self._load_keys(self.rundir.path / "keys")
        self.session = (existing and existing.stored_session()) or new_session()
        initial = self.model.adapter_state()
        self.manifest = shared_manifest(initial, self.policy)
        self.egress = EgressLog(self.rundir.path / "egress")
        self.transport = InProcessTransport(self.egress, encrypted=config.encryption)
        plan = training_plan(config)
        self.clients: dict[str, Client] = {}
        for number, (cid, data) in enumerate(self.prepared.clients.items()):
            self.clients[cid] = Client(
                cid,
                data,
                model=self.model,
                policy=self.policy,
                manifest=self.manifest,
                plan=plan,
                initial_state=initial,
                directory=self.rundir.client_dir(cid),
                privacy=client_privacy(
                    config,
                    cid,
                    self.plans.get(cid),
                    self.rundir.client_dir(cid),
                    self.codecs.fingerprint,
                    histories[cid],
                ),
                codec=self.codecs.client,
                seed=config.seed * 1000 + number,
                identity=self.identities.clients[cid],
                randomness=dp_randomness(cid) if dp_randomness else OSRandom(),
            )
        self.rundir.write_json(
            "setup.json",
            {
                "manifest": self.manifest.to_list(),
                "manifest_hash": self.manifest.digest,
                "shared_values": self.manifest.size,
                "label_names": list(self.prepared.label_names),
                "label_counts": self.prepared.label_counts,
                "label_skew": self.prepared.label_skew,
                "clients": {
                    cid: {"train": len(d.train), "test": len(d.test)}
                    for cid, d in self.prepared.clients.items()
                },
                "privacy": {cid: _plan_dict(p) for cid, p in self.plans.items()},
                "key_fingerprint": self.codecs.fingerprint,
                "roster_digest": self.identities.roster.digest,
                "session": self.session,
                "aggregate_bounds": {
                    "round_change": next(iter(self.clients.values())).bounds.round_change,
                    "max_weight": self.codecs.client.value_bound,
                },
                "protections_off": config.protections,
                "warnings": self.warnings,
            },
        )

    def _histories(self, existing: RunDirectory | None) -> dict[str, PrivacyHistory]:
        """Each client's spent privacy, checked against everything the run shows it released
        (its state, its egress records, metrics.jsonl); empty for a new run."""
        if existing is None or not self.config.dp:
            return {cid: PrivacyHistory() for cid in self.prepared.clients}
        egress = EgressLog(existing.path / "egress")
        metrics = existing.metrics()
        return {
            cid: privacy_history(
                existing.client_dir(cid),
                client_releases(existing.client_dir(cid), egress.read(cid))
                + metrics_releases(metrics, cid),
            )
            for cid in self.prepared.clients
        }

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.time()
        for warning in [*self.config.protections, *self.warnings]:
            self.progress.warning(f"WARNING: {warning}")
        for cid, plan in self.plans.items():
            for hazard in plan.hazards:
                self.progress.warning(f"DP {hazard.severity} ({cid}): {hazard.message}")
            if plan.prior_steps:
                client = self.clients[cid]
                budget = client.privacy.budget if client.privacy else None
                self.progress.message(
                    f"{cid}: ε = {client.epsilon_spent:.3f} already spent "
                    f"({plan.prior_steps} steps in its ledger); σ = {plan.noise_multiplier:.4g} "
                    f"for the rounds left, planned ε = {plan.planned_epsilon:.3f}"
                    + (f" of the budget {budget:g}" if budget is not None else "")
                )
        first = self.rundir.completed_rounds() + 1
        for round_number in range(first, self.config.rounds + 1):
            self.progress.round_started(round_number, self.config.rounds)
            record = self.run_round(round_number)
            self.rundir.append_metrics(record.__dict__)
            self.progress.round_done(round_number)
            self.progress.message(_round_line(record, self.config.rounds))
            if not any(c.get("status") == "trained" for c in record.clients.values()):
                self.progress.message("no client can train within its budget: stopping")
                break
        summary = self.finish(time.time() - start)
        return summary

    def run_round(self, round_number: int) -> RoundRecord:
        record = RoundRecord(round=round_number)
        started = time.time()
        aggregator = new_aggregator(
            self.codecs.server,
            self.manifest,
            round_number,
            session=self.session,
            roster=self.identities.roster,
            key=self.identities.server.key,
        )
        masking = self._masking(round_number, record) if aggregator is not None else None
        if masking is False:  # too few clients to unmask a round: nobody trains it
            return self._skipped(record, started)
        contributors = []
        for cid, client in self.clients.items():
            entry: dict = {"seconds": dict.fromkeys(PHASES, 0.0)}
            self.progress.client_started(cid, self.config.local_steps)
            started_training = time.perf_counter()
            try:
                result = client.train(round_number, on_step=self.progress.step_done)
            except BudgetExhausted as exc:
                entry.update(status="budget exhausted", reason=str(exc))
                record.clients[cid] = entry
                self.progress.client_done(cid)
                continue
            finally:
                entry["seconds"]["train"] = time.perf_counter() - started_training
            entry.update(
                status="trained",
                resumed=result.resumed,
                loss=None if result.stats is None else result.stats.mean_loss,
                examples=None if result.stats is None else result.stats.examples,
                steps=None if result.stats is None else result.stats.steps,
                epsilon=result.epsilon,
                clamped=result.clamped,
            )
            if aggregator is not None:
                mask = masking.mask_for(cid) if masking else None
                sent, reason, seconds = self.transport.send_update(
                    client, round_number, aggregator, mask
                )
                entry["seconds"].update(seconds)
                record.upload_bytes += sent
                if reason is not None:
                    record.rejected.append({"client": cid, "reason": reason})
                else:
                    contributors.append(cid)
            record.clients[cid] = entry
            self.progress.client_done(cid)
        if aggregator is not None and aggregator.accepted:
            started_result = time.perf_counter()
            try:
                offsets = (
                    masking.offsets(
                        aggregator.accepted, self.codecs.server.mask_shape(aggregator.n_values)
                    )
                    if masking
                    else None
                )
            except MaskingFailed as exc:
                record.aggregate = {"status": "failed", "reason": str(exc)}
                self.progress.warning(f"round {round_number}: no aggregate: {exc}")
                for client in self.clients.values():
                    client.keep_round_start()
                return self._evaluate(record, started)
            aggregate = aggregator.result(offsets)
            record.server_seconds = time.perf_counter() - started_result
            rejected_by: dict[str, list[str]] = {}
            for cid, client in self.clients.items():
                started_decrypt = time.perf_counter()
                problems = client.apply_aggregate(aggregate, round_number, self.session)
                record.clients[cid]["seconds"]["decrypt"] = time.perf_counter() - started_decrypt
                record.download_bytes += len(aggregate)
                record.clients[cid]["aggregate"] = "rejected" if problems else "applied"
                if problems:
                    rejected_by[cid] = problems
                    self.progress.warning(
                        f"round {round_number}: {cid} REJECTED the aggregate and kept its "
                        f"previous shared tensors: {problems[0]}"
                    )
            record.aggregate = {
                "contributors": list(aggregator.accepted),
                "status": "rejected" if rejected_by else "applied",
                "rejected_by": rejected_by,
            }
        return self._evaluate(record, started)

    def _masking(self, round_number: int, record: RoundRecord) -> InProcessMasking | None | bool:
        """The round's secure-aggregation set-up among the clients that will send an update;
        None when masking is off, False when too few take part to unmask the round."""
        if not (self.config.masking and self.config.encryption):
            return None
        participants = {
            cid: self.identities.clients[cid].key
            for cid, client in self.clients.items()
            if client.will_train(round_number)
        }
        if not participants:
            return None
        try:
            masking = InProcessMasking(
                self.identities.roster,
                self.session,
                round_number,
                participants,
                self.egress,
                threshold=self.config.masking_threshold,
            )
        except MaskingFailed as exc:
            record.aggregate = {"status": "failed", "reason": str(exc)}
            self.progress.warning(f"round {round_number}: not trained: {exc}")
            return False
        record.masking = {
            "participants": sorted(participants),
            "masked_with": sorted(masking.masked_with),
            "threshold": masking.server.threshold,
        }
        return masking

    def _skipped(self, record: RoundRecord, started: float) -> RoundRecord:
        for cid in self.clients:
            record.clients[cid] = {"status": "not trained (secure aggregation impossible)"}
        return self._evaluate(record, started)

    def _evaluate(self, record: RoundRecord, started: float) -> RoundRecord:
        accuracies = []
        for cid, client in self.clients.items():
            record.clients.setdefault(cid, {}).setdefault("seconds", dict.fromkeys(PHASES, 0.0))
            started_evaluation = time.perf_counter()
            acc = client.evaluate(self.config.eval_examples_per_round)
            record.clients[cid]["seconds"]["evaluate"] = time.perf_counter() - started_evaluation
            record.clients[cid]["accuracy_subset"] = acc
            record.clients[cid]["epsilon_spent"] = client.epsilon_spent
            accuracies.append(acc)
        record.mean_accuracy = float(np.mean(accuracies))
        record.seconds = time.time() - started
        return record

    def finish(self, seconds: float) -> dict:
        self.progress.message("final evaluation on each client's full test split ...")
        started_final = time.perf_counter()
        per_client = {cid: c.evaluate() for cid, c in self.clients.items()}
        final_seconds = time.perf_counter() - started_final
        sizes = {cid: len(c.data.test) for cid, c in self.clients.items()}
        majority = {cid: majority_rate(c.data.test.tensors[2]) for cid, c in self.clients.items()}
        total = sum(sizes.values())
        for cid, client in self.clients.items():
            client.export(self.rundir.path / "adapters" / cid, list(self.prepared.label_names))
        phases = phase_seconds(self.rundir.metrics(), final_evaluation=final_seconds)
        self.progress.message(_phase_line(phases))
        summary = {
            "method": self.config.method,
            "dataset": self.prepared.dataset_name,
            "rounds_completed": self.rundir.completed_rounds(),
            "differential_privacy": self.config.dp,
            "encryption": self.config.encryption,
            "protections_off": self.config.protections,
            "accuracy": {
                "per_client": per_client,
                "mean": float(np.mean(list(per_client.values()))),
                "weighted_mean": sum(per_client[c] * sizes[c] for c in sizes) / max(total, 1),
                "test_examples": sizes,
                # what always predicting the client's most frequent test label scores
                "majority_class": majority,
                "not_above_majority": [c for c in per_client if per_client[c] <= majority[c]],
            },
            "privacy": {
                cid: _privacy_summary(c, self.config.delta)
                for cid, c in self.clients.items()
                if c.privacy is not None
            }
            if self.config.dp
            else "no differential privacy",
            "key_fingerprint": self.codecs.fingerprint,
            "rejected_aggregates": [
                {"round": m["round"], "rejected_by": m["aggregate"]["rejected_by"]}
                for m in self.rundir.metrics()
                if (m.get("aggregate") or {}).get("status") == "rejected"
            ],
            "seconds": seconds,
            "seconds_by_phase": phases,
        }
        self.rundir.write_json("summary.json", summary)
        return summary


def majority_rate(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent of ``labels`` (pure)."""
    if len(labels) == 0:
        return 0.0
    return float(torch.bincount(labels).max()) / len(labels)


def setup_warnings(config: RunConfig, label_counts: dict[str, list[int]]) -> list[str]:
    """Plain-language warnings about a run that will work but may mislead (pure)."""
    warnings = []
    if config.num_clients == 1:
        warnings.append(
            "one client: nothing is federated (this is local training, with DP and encryption "
            "as configured); use --clients 2 or more to federate"
        )
    for cid, counts in label_counts.items():
        present = [c for c in counts if c > 0]
        if len(present) == 1:
            warnings.append(
                f"{cid} holds examples of one class only: its accuracy will be 1.0 whatever "
                "the model learns, and says nothing; use a less skewed partition (a larger "
                "--alpha) or fewer clients"
            )
    return warnings


# Where a round's time goes, per client (metrics.jsonl "seconds"): local training, encrypting and
# signing the update, the server validating and adding it, verifying, decrypting and checking the
# aggregate, and evaluating on the per-round test sample.
PHASES = ("train", "encrypt", "aggregate", "decrypt", "evaluate")


def phase_seconds(metrics: list[dict], *, final_evaluation: float = 0.0) -> dict[str, float]:
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


def _phase_line(phases: dict[str, float]) -> str:
    total = sum(phases.values()) or 1.0
    names = {"train": "training", "encrypt": "encrypting", "aggregate": "aggregating",
             "decrypt": "decrypting", "evaluate": "evaluating (per round)",
             "final_evaluation": "final evaluation"}  # fmt: skip
    parts = [f"{names[k]} {v:.1f} s ({v / total:.0%})" for k, v in phases.items()]
    return "time: " + ", ".join(parts)


def _privacy_summary(client: Client, delta: float) -> dict:
    """ε spent and every DP event of the client's history, from its ledger."""
    ledger = client.privacy.ledger  # type: ignore[union-attr]
    entries = ledger.entries
    return {
        "epsilon": client.epsilon_spent,
        "delta": delta,
        "budget": ledger.identity.target_epsilon,
        # one per ledger entry (a round retried after a crash appears twice)
        "history": [
            {
                "round": e.round,
                "noise_multiplier": e.noise_multiplier,
                "sample_rate": e.sample_rate,
                "steps": e.steps,
                "epsilon": e.epsilon,
            }
            for e in entries
        ],
        "noise_multipliers": sorted({e.noise_multiplier for e in entries}),
        "noise_multiplier": entries[-1].noise_multiplier if entries else None,
        "sample_rate": entries[-1].sample_rate if entries else None,
        "noise_source": sorted({e.noise_source for e in entries}),
        "ledger_head": ledger.head,
    }


def _plan_dict(plan: PrivacyPlan) -> dict:
    return {
        "dataset_size": plan.dataset_size,
        "sample_rate": plan.sample_rate,
        "noise_multiplier": plan.noise_multiplier,
        "planned_steps": plan.planned_steps,
        "prior_steps": plan.prior_steps,
        "rounds_within_budget": plan.rounds_within_budget,
        "planned_epsilon": plan.planned_epsilon,
        "hazards": [h.__dict__ if hasattr(h, "__dict__") else h._asdict() for h in plan.hazards],
    }


def _round_line(record: RoundRecord, total: int) -> str:
    parts = [f"round {record.round}/{total}"]
    for cid, c in record.clients.items():
        eps = c.get("epsilon_spent")
        eps_text = f" eps={eps:.2f}" if eps is not None else ""
        parts.append(f"{cid}: acc={c['accuracy_subset']:.3f}{eps_text} {c['status']}")
    parts.append(f"mean acc={record.mean_accuracy:.3f}")
    if record.rejected:
        parts.append(f"rejected={len(record.rejected)}")
    if record.aggregate.get("status") == "rejected":
        parts.append(f"aggregate REJECTED by {len(record.aggregate['rejected_by'])}")
    return " | ".join(parts)


def run_federation(
    config: RunConfig,
    run_dir: Path,
    progress: Progress | None = None,
    *,
    resume: bool = False,
    dp_randomness: Callable[[str], RandomSource] | None = None,
) -> dict:
    """Set up (validating everything first) and run a federation; returns the summary.

    ``dp_randomness`` is for tests only (see :class:`Federation`)."""
    return Federation(
        config, run_dir, progress=progress, resume=resume, dp_randomness=dp_randomness
    ).run()


def load_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
