"""The in-process federation: the default way to run, every client and the server in one process.

Round r, as data flows (design.md section 3):

    each client: DP-SGD on (A, B, head) -> shared tensors -> weighted, encrypted bytes
    server:      validate each update, add ciphertexts -> aggregate bytes
    each client: verify the server's signature, decrypt, divide, check the values are ones
                 honest clients can produce, load as its shared tensors (or keep the round's
                 starting ones if not); B and head untouched

Transport is the :class:`InProcessTransport` below; the Flower apps use the same Client and
Aggregator with another transport.

What is written where (secure_fedsa/private_stats.py, docs/threat-model.md): the run's shared
files (config.json, setup.json, metrics.jsonl, summary.json, egress/) hold DP releases and public
configuration only; statistics of a client's records that are not DP (training loss, Poisson
batch sizes, training seconds, test accuracy, label counts) go to that client's own directory,
unless ``release_evaluation`` releases the evaluation explicitly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from secure_fedsa.client import Client, finish_export
from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.egress import EgressLog
from secure_fedsa.errors import BudgetExhausted, LedgerError
from secure_fedsa.frozen_prefix import FrozenPrefix
from secure_fedsa.masked_round import InProcessMasking
from secure_fedsa.model import build_model
from secure_fedsa.node import (
    LEDGER_FILE,
    PrivacyHistory,
    client_privacy,
    client_releases,
    ledger_heads_from_metrics,
    new_aggregator,
    new_session,
    plan_client,
    privacy_history,
    refuse_without_dp,
    shared_manifest,
    submit,
    training_plan,
)
from secure_fedsa.prepare import model_spec, prepare
from secure_fedsa.privacy.accounting import NEIGHBOURING_RELATION
from secure_fedsa.privacy.anchor import AnchorStore
from secure_fedsa.privacy.continuity import metrics_releases
from secure_fedsa.privacy.plan import PrivacyPlan
from secure_fedsa.privacy.randomness import OSRandom, RandomSource
from secure_fedsa.private_stats import (
    append_round,
    read_evaluation,
    read_rounds,
    write_evaluation,
)
from secure_fedsa.rundir import RunDirectory
from secure_fedsa.sampling import sampled
from secure_fedsa.secagg import RoundFailed as MaskingFailed
from secure_fedsa.security import (
    Codecs,
    Identities,
    check_keys_dir,
    setup_codecs,
    setup_identities,
)
from secure_fedsa.server import Aggregator
from secure_fedsa.sharing import flatten, get_policy

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
    """One round. ``clients`` and the fields below it are shared (metrics.jsonl); ``private``
    (client id -> statistics of its records that are not DP) goes to each client's own
    directory only, and ``seconds`` (the round's wall time, which includes training) only to the
    console."""

    round: int
    sampled: list[str] | None = None  # the clients drawn this round (None: no sampling)
    clients: dict[str, dict] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)
    aggregate: dict = field(default_factory=dict)
    masking: dict = field(default_factory=dict)  # who took part in the round's masking
    server_seconds: float = 0.0  # serializing the aggregate (adding is in each client's seconds)
    upload_bytes: int = 0
    download_bytes: int = 0
    mean_accuracy: float | None = None  # only with release_evaluation
    private: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def shared(self) -> dict:
        """What metrics.jsonl holds of this round."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("private", "seconds")
            and not (k in ("mean_accuracy", "sampled") and v is None)
        }


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
        self.anchors = AnchorStore()
        histories = self._histories(existing)
        # with clients per round, each client's σ is planned for the rounds it is drawn in
        candidates = list(self.prepared.clients)
        self.plans = {
            cid: plan_client(config, cid, data.num_train, histories[cid], candidates=candidates)
            for cid, data in self.prepared.clients.items()
            if config.dp
        }
        self.warnings = setup_warnings(config)
        # about the clients' own data (label counts): private, so the console only
        self.data_warnings = data_warnings(self.prepared.label_counts)
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
        # the server's memory of each client's ledger head (from its own round records)
        self.ledger_heads = ledger_heads_from_metrics(self.rundir.metrics())
        plan = training_plan(config)
        # shared by every client, as the model is: each record's frozen-layer hidden states are
        # kept once (clients' test splits drawn from one pool overlap), and one initial vector
        prefix = FrozenPrefix(self.model)
        initial_shared = flatten(initial, self.manifest)
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
                    self.anchors,
                    shared_size=self.manifest.size,
                ),
                codec=self.codecs.client,
                seed=config.seed * 1000 + number,
                identity=self.identities.clients[cid],
                randomness=dp_randomness(cid) if dp_randomness else OSRandom(),
                prefix=prefix,
                initial_shared=initial_shared,
            )
        self.rundir.write_json(
            "setup.json",
            {
                "manifest": self.manifest.to_list(),
                "manifest_hash": self.manifest.digest,
                "shared_values": self.manifest.size,
                "label_names": list(self.prepared.label_names),
                "clients": {
                    cid: {"train": len(d.train), "test": len(d.test)}
                    for cid, d in self.prepared.clients.items()
                },
                "privacy": {cid: _plan_dict(p) for cid, p in self.plans.items()},
                "neighbouring_relation": NEIGHBOURING_RELATION if config.dp else None,
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
        (its state, its egress records, metrics.jsonl) and against its ledger's anchor; empty
        for a new run. A run that trained with DP never resumes without it."""
        if existing is None:
            return {cid: PrivacyHistory() for cid in self.prepared.clients}
        egress = EgressLog(existing.path / "egress")
        metrics = existing.metrics()
        if not self.config.dp:
            refuse_resume_without_dp(existing, metrics)
            for cid in self.prepared.clients:
                refuse_without_dp(existing.client_dir(cid), egress.read(cid))
            return {cid: PrivacyHistory() for cid in self.prepared.clients}
        return {
            cid: privacy_history(
                existing.client_dir(cid),
                client_releases(existing.client_dir(cid), egress.read(cid))
                + metrics_releases(metrics, cid),
                self.anchors,
            )
            for cid in self.prepared.clients
        }

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.time()
        for warning in [*self.config.protections, *self.warnings, *self.data_warnings]:
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
            for cid, private in record.private.items():
                append_round(self.rundir.client_dir(cid), {"round": round_number, **private})
            self.rundir.append_metrics(record.shared())
            self.progress.round_done(round_number)
            self.progress.message(_round_line(record, self.config.rounds))
            if not any(c.get("status") == "trained" for c in record.clients.values()) and not (
                record.sampled is not None
                and any(c.will_train(round_number + 1) for c in self.clients.values())
            ):  # (with sampling, the clients not drawn this round may still train later)
                self.progress.message("no client can train within its budget: stopping")
                break
        summary = self.finish(time.time() - start)
        return summary

    def sampled(self, round_number: int) -> list[str]:
        """The clients drawn for ``round_number`` (all of them without clients per round)."""
        return sampled(
            list(self.clients),
            self.config.clients_per_round,
            seed=self.config.seed,
            round_number=round_number,
        )

    def run_round(self, round_number: int) -> RoundRecord:
        drawn = self.sampled(round_number)
        record = RoundRecord(
            round=round_number,
            sampled=drawn if self.config.clients_per_round is not None else None,
        )
        started = time.time()
        aggregator = new_aggregator(
            self.codecs.server,
            self.manifest,
            round_number,
            session=self.session,
            roster=self.identities.roster,
            key=self.identities.server.key,
            dp=self.config.dp,
            ledger_heads=self.ledger_heads,
        )
        masking = self._masking(round_number, record, drawn) if aggregator is not None else None
        if masking is False:  # too few clients to unmask a round: nobody trains it
            return self._skipped(record, started, drawn)
        contributors = []
        for cid, client in self.clients.items():
            entry: dict = {"seconds": dict.fromkeys(PHASES, 0.0)}
            if cid not in drawn:  # trains nothing, spends nothing, sends nothing this round
                record.clients[cid] = {"status": NOT_SAMPLED, **entry}
                continue
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
                # how long training took follows the Poisson batch sizes: private
                record.private.setdefault(cid, {})["train_seconds"] = (
                    time.perf_counter() - started_training
                )
            entry.update(
                status="trained",
                resumed=result.resumed,
                steps=None if result.stats is None else result.stats.steps,
                clamped=result.clamped,
            )
            record.private[cid].update(
                loss=None if result.stats is None else result.stats.mean_loss,
                examples=None if result.stats is None else result.stats.examples,
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
                    head = aggregator.accepted_heads.get(cid)
                    if head is not None:  # the ledger head the server accepted (P5)
                        entry["ledger"] = head.to_json()
                        self.ledger_heads[cid] = (round_number, head)
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
                    client.keep_round_start(round_number)
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

    def _masking(
        self, round_number: int, record: RoundRecord, drawn: list[str]
    ) -> InProcessMasking | None | bool:
        """The round's secure-aggregation set-up among the clients that will send an update
        (drawn this round, within budget; the threshold is computed for them); None when
        masking is off, False when too few take part to unmask the round."""
        if not (self.config.masking and self.config.encryption):
            return None
        participants = {
            cid: self.identities.clients[cid].key
            for cid, client in self.clients.items()
            if cid in drawn and client.will_train(round_number)
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

    def _skipped(self, record: RoundRecord, started: float, drawn: list[str]) -> RoundRecord:
        for cid in self.clients:
            record.clients[cid] = {
                "status": "not trained (secure aggregation impossible)"
                if cid in drawn
                else NOT_SAMPLED
            }
        return self._evaluate(record, started)

    def _evaluate(self, record: RoundRecord, started: float) -> RoundRecord:
        accuracies = []
        release = self.config.release_evaluation
        for cid, client in self.clients.items():
            record.clients.setdefault(cid, {}).setdefault("seconds", dict.fromkeys(PHASES, 0.0))
            started_evaluation = time.perf_counter()
            acc = client.evaluate(self.config.eval_examples_per_round)
            private = record.private.setdefault(cid, {})
            private["accuracy_subset"] = acc
            if len(client.data.validation):  # the same number of validation records
                private["accuracy_validation_subset"] = client.evaluate(
                    self.config.eval_examples_per_round, split="validation"
                )
            record.clients[cid]["seconds"]["evaluate"] = time.perf_counter() - started_evaluation
            if release:
                record.clients[cid]["accuracy_subset"] = acc
                if "accuracy_validation_subset" in private:
                    record.clients[cid]["accuracy_validation_subset"] = private[
                        "accuracy_validation_subset"
                    ]
            record.clients[cid]["epsilon_spent"] = client.epsilon_spent
            accuracies.append(acc)
        record.mean_accuracy = float(np.mean(accuracies)) if release else None
        record.seconds = time.time() - started
        return record

    def finish(self, seconds: float) -> dict:
        """Finishing (``finish_steps``), final evaluation (into each client's own directory),
        export, and summary.json.

        Each client's DP-trained model, its release, is exported to ``adapters/<id>/``. With
        ``finish_steps``, each client then trains its own tensors further without DP
        (:meth:`Client.finish`, after its last release: nothing is sent, the ledger and
        ``state.pt`` are not touched) and keeps that model in its own directory,
        ``clients/<id>/finished-adapter/``; its final evaluation is of that model (and
        ``evaluation.json`` keeps the DP model's accuracy too).

        Returns the summary as written, plus ``evaluation`` (each client's accuracy, test size
        and majority-class rate) for the caller; summary.json holds the evaluation only with
        ``release_evaluation``, and otherwise says where each client keeps it."""
        steps = self.config.finish_steps
        labels = list(self.prepared.label_names)
        if steps:
            self.progress.message(
                f"finishing: each client trains its own tensors {steps} more step(s) without DP "
                "(its releases are done; the finished model stays in its own directory) ..."
            )
        self.progress.message("final evaluation on each client's full test split ...")
        final_seconds = 0.0
        per_client: dict[str, float] = {}
        validation: dict[str, float | None] = {}
        unfinished: dict[str, dict] = {}
        for cid, client in self.clients.items():
            # the DP model, the client's release (it also shaped every release before)
            client.export(self.rundir.path / "adapters" / cid, labels)
            final_state = None
            if steps:
                unfinished[cid] = _accuracies(client)
                final_state = client.finish(steps)
                finish_export(client, self.rundir.client_dir(cid), labels, final_state, steps)
            started_final = time.perf_counter()
            final = _accuracies(client, final_state)
            per_client[cid], validation[cid] = final["test"], final["validation"]
            final_seconds += time.perf_counter() - started_final
        evaluation = evaluation_summary(
            per_client,
            sizes={cid: len(c.data.test) for cid, c in self.clients.items()},
            majority={
                cid: majority_rate(c.data.test.tensors[2]) for cid, c in self.clients.items()
            },
            validation=validation,
        )
        for cid, client in self.clients.items():
            record = {
                "accuracy": per_client[cid],
                "test_examples": evaluation["test_examples"][cid],
                "majority_class": evaluation["majority_class"][cid],
                "label_counts": self.prepared.label_counts[cid],
                "label_names": labels,
                "finish_steps": steps,
            }
            if validation[cid] is not None:
                record["accuracy_validation"] = validation[cid]
                record["validation_examples"] = len(client.data.validation)
            if steps:  # the DP model's, before finishing (adapters/<id>/)
                record["accuracy_unfinished"] = unfinished[cid]["test"]
                if unfinished[cid]["validation"] is not None:
                    record["accuracy_validation_unfinished"] = unfinished[cid]["validation"]
            write_evaluation(self.rundir.client_dir(cid), record)
        phases = phase_seconds(self.rundir.metrics(), final_evaluation=final_seconds)
        train = sum(
            r.get("train_seconds") or 0.0
            for cid in self.clients
            for r in read_rounds(self.rundir.client_dir(cid))
        )
        self.progress.message(_phase_line({"train": train, **phases}))
        self.progress.message(f"wall time {seconds:.1f} s")
        released = self.config.release_evaluation
        summary = {
            "method": self.config.method,
            "dataset": self.prepared.dataset_name,
            "rounds_completed": self.rundir.completed_rounds(),
            "differential_privacy": self.config.dp,
            "encryption": self.config.encryption,
            "protections_off": self.config.protections,
            "evaluation": {"released": True, **evaluation}
            if released
            else {"released": False, "kept_in": "clients/<id>/evaluation.json"},
            "finish_steps": steps,
            "finishing": finishing_statement(self.config, self.clients),
            "privacy": {
                cid: _privacy_summary(c, self.config.delta)
                for cid, c in self.clients.items()
                if c.privacy is not None
            }
            if self.config.dp
            else "no differential privacy",
            "neighbouring_relation": NEIGHBOURING_RELATION if self.config.dp else None,
            "key_fingerprint": self.codecs.fingerprint,
            "rejected_aggregates": [
                {"round": m["round"], "rejected_by": m["aggregate"]["rejected_by"]}
                for m in self.rundir.metrics()
                if (m.get("aggregate") or {}).get("status") == "rejected"
            ],
            # the phases whose time does not depend on the records (training time does)
            "seconds_by_phase": phases,
        }
        self.rundir.write_json("summary.json", summary)
        return {**summary, "evaluation": {"released": released, **evaluation}}


def evaluation_summary(
    per_client: dict[str, float],
    *,
    sizes: dict[str, int],
    majority: dict[str, float],
    validation: dict[str, float | None] | None = None,
) -> dict:
    """Accuracy per client, their unweighted (the paper's) and test-size-weighted means, test
    sizes, majority-class rates and the clients at or below theirs, and validation accuracy
    per client and its mean (None where no client has a validation split) (pure)."""
    total = sum(sizes.values())
    held = {c: v for c, v in (validation or {}).items() if v is not None}
    return {
        "per_client": per_client,
        "mean": float(np.mean(list(per_client.values()))),
        "weighted_mean": sum(per_client[c] * sizes[c] for c in sizes) / max(total, 1),
        "test_examples": sizes,
        # what always predicting the client's most frequent test label scores
        "majority_class": majority,
        "not_above_majority": [c for c in per_client if per_client[c] <= majority[c]],
        "validation_per_client": held or None,
        "validation_mean": float(np.mean(list(held.values()))) if held else None,
    }


def _accuracies(client: Client, state: dict | None = None) -> dict[str, float | None]:
    """``{"test": accuracy, "validation": accuracy or None}`` of ``client``'s current model
    (or of ``state``) on its whole test and validation splits."""
    return {
        "test": client.evaluate(state=state),
        "validation": client.evaluate(split="validation", state=state)
        if len(client.data.validation)
        else None,
    }


def finishing_statement(config: RunConfig, clients: dict[str, Client]) -> str:
    """What ``finish_steps`` means for this run, in one sentence (summary.json)."""
    if not config.finish_steps:
        return (
            "none: each client's final model is its DP-trained one (adapters/<id>/), "
            "(ε, δ)-DP like everything it released"
        )
    groups = sorted(next(iter(clients.values())).finished_groups()) if clients else []
    return (
        f"after its last release each client trained its own tensors ({', '.join(groups)}) "
        f"{config.finish_steps} more step(s) on its training records WITHOUT DP, the shared "
        "tensors frozen; that finished model stays in clients/<id>/finished-adapter/, is never "
        "sent, and is no more private than a model trained alone without DP. Everything the "
        "clients released (updates, aggregates, adapters/<id>/) is (ε, δ)-DP as stated, and "
        "no ledger changed"
    )


def majority_rate(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent of ``labels`` (pure)."""
    if len(labels) == 0:
        return 0.0
    return float(torch.bincount(labels).max()) / len(labels)


def setup_warnings(config: RunConfig) -> list[str]:
    """Plain-language warnings about a run that will work but may mislead, from its public
    configuration (pure); they go into setup.json."""
    warnings = []
    if config.num_clients == 1:
        warnings.append(
            "one client: nothing is federated (this is local training, with DP and encryption "
            "as configured); use --clients 2 or more to federate"
        )
    return warnings


def data_warnings(label_counts: dict[str, list[int]]) -> list[str]:
    """Warnings from the clients' label counts (pure). Label counts are statistics of private
    records: these are shown on the console, never written to the run's shared files."""
    warnings = []
    for cid, counts in label_counts.items():
        present = [c for c in counts if c > 0]
        if len(present) == 1:
            warnings.append(
                f"{cid} holds examples of one class only: its accuracy will be 1.0 whatever "
                "the model learns, and says nothing; use a less skewed partition (a larger "
                "--alpha) or fewer clients"
            )
    return warnings


# Where a round's time goes, per client (metrics.jsonl "seconds"): encrypting and signing the
# update, the server validating and adding it, verifying, decrypting and checking the aggregate,
# and evaluating on the per-round test sample. None depends on the records. Local training's time
# does (it follows the Poisson batch sizes): it is in each client's own rounds.jsonl.
PHASES = ("encrypt", "aggregate", "decrypt", "evaluate")
# a client not drawn this round (clients per round): it trains, spends and sends nothing
NOT_SAMPLED = "not sampled"


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
        acc = record.private.get(cid, {}).get("accuracy_subset", math.nan)
        parts.append(f"{cid}: acc={acc:.3f}{eps_text} {c['status']}")
    accuracies = [p.get("accuracy_subset", math.nan) for p in record.private.values()]
    parts.append(f"mean acc={float(np.mean(accuracies)) if accuracies else math.nan:.3f}")
    if record.rejected:
        parts.append(f"rejected={len(record.rejected)}")
    if record.aggregate.get("status") == "rejected":
        parts.append(f"aggregate REJECTED by {len(record.aggregate['rejected_by'])}")
    return " | ".join(parts)


def refuse_resume_without_dp(run: RunDirectory, metrics: list[dict]) -> None:
    """Raise LedgerError if the run directory shows any DP training: a ledger in a client's
    directory, a privacy plan in setup.json, or an ε in metrics.jsonl. A run that released DP
    results never resumes without DP (a ``"dp": false`` edit of config.json must not work)."""
    clients = run.path / "clients"
    ledgers = sorted(clients.glob(f"*/{LEDGER_FILE}")) if clients.is_dir() else []
    spent = any(
        isinstance(entry, dict) and entry.get("epsilon_spent") is not None
        for record in metrics
        for entry in (record.get("clients") or {}).values()
    )
    setup = run.path / "setup.json"
    planned = False
    if setup.is_file():
        try:
            planned = bool(json.loads(setup.read_text()).get("privacy"))
        except (OSError, ValueError, AttributeError):
            planned = False
    if ledgers or spent or planned:
        where = (
            f"a privacy ledger ({ledgers[0].relative_to(run.path)})"
            if ledgers
            else "ε in metrics.jsonl"
            if spent
            else "a privacy plan in setup.json"
        )
        raise LedgerError(
            f"{run.path}: this run trained with differential privacy ({where}), but its "
            "configuration now turns DP off. A run that released DP results never resumes "
            'without DP: restore "dp": true in config.json, or start a new run directory'
        )


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
    """A finished run's summary.json, with ``evaluation`` completed from the clients' own
    directories when it was not released (for the operator, who holds those directories)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = summary.get("evaluation")
    if isinstance(evaluation, dict) and not evaluation.get("released"):
        finals = {
            d.name: read_evaluation(d)
            for d in sorted((run_dir / "clients").iterdir())
            if d.is_dir()
        }
        finals = {cid: e for cid, e in finals.items() if e is not None}
        summary["evaluation"] = {
            "released": False,
            **evaluation_summary(
                {cid: e["accuracy"] for cid, e in finals.items()},
                sizes={cid: e["test_examples"] for cid, e in finals.items()},
                majority={cid: e["majority_class"] for cid, e in finals.items()},
                validation={cid: e.get("accuracy_validation") for cid, e in finals.items()},
            ),
        }
    return summary
