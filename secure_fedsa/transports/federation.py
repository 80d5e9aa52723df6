"""The in-process federation: the default way to run, every client and the server in one process.

Set-up (:class:`Federation`: data, keys, each client's privacy plan and ledger, setup.json) is
done here; the rounds are :class:`~secure_fedsa.engine.rounds.RoundEngine`'s, the same engine the
Flower ServerApp drives, with every client a :class:`~secure_fedsa.engine.site.Participant`
reached by direct calls (:mod:`secure_fedsa.transports.inprocess`). Round r, as data flows
(docs/architecture.md, "One round, as data flows"):

    each client: DP-SGD on (A, B, head) -> shared tensors -> weighted, encrypted, masked bytes
    server:      validate each update, add ciphertexts, remove the masks -> aggregate bytes
    each client: verify the server's signature, decrypt, divide, check the values are ones
                 honest clients can produce, load as its shared tensors (or keep the round's
                 starting ones if not); B and head untouched

What is written where (secure_fedsa/site/private_stats.py, docs/threat-model.md): the run's shared
files (config.json, setup.json, metrics.jsonl, summary.json, egress/) hold DP releases and public
configuration only; statistics of a client's records that are not DP (training loss, Poisson
batch sizes, training seconds, test accuracy, label counts, why it rejected an aggregate) go to
that client's own directory, unless ``release_evaluation`` releases the evaluation explicitly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from secure_fedsa.config import RunConfig
from secure_fedsa.engine.aggregation import ServerKeys, new_session
from secure_fedsa.engine.record import RoundRecord, round_line
from secure_fedsa.engine.rounds import EngineSettings, Observer, RoundEngine
from secure_fedsa.engine.site import MemorySecrets, Participant, SiteSettings, site_policy_for
from secure_fedsa.engine.summary import evaluation_summary
from secure_fedsa.errors import LedgerError
from secure_fedsa.model.encoder import build_model
from secure_fedsa.model.frozen_prefix import FrozenPrefix
from secure_fedsa.model.sharing import get_policy
from secure_fedsa.privacy.accounting import NEIGHBOURING_RELATION
from secure_fedsa.privacy.anchor import AnchorStore
from secure_fedsa.privacy.continuity import metrics_releases
from secure_fedsa.privacy.plan import PrivacyPlan
from secure_fedsa.privacy.randomness import OSRandom, RandomSource
from secure_fedsa.site.build import (
    LEDGER_FILE,
    PrivacyHistory,
    client_privacy,
    client_releases,
    plan_client,
    privacy_history,
    refuse_without_dp,
    shared_manifest,
    training_plan,
)
from secure_fedsa.site.client import WEIGHT_UNIT, Client
from secure_fedsa.site.egress import EgressLog
from secure_fedsa.site.keys import (
    Codecs,
    Identities,
    check_keys_dir,
    setup_codecs,
    setup_identities,
)
from secure_fedsa.site.model_card import write_run_cards
from secure_fedsa.site.prepare_data import model_spec, prepare
from secure_fedsa.site.private_stats import read_evaluation, read_rounds
from secure_fedsa.site.rundir import RunDirectory
from secure_fedsa.transports.inprocess import TRANSPORT, InProcessTransport

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
        weights = {  # public (the ledger's q reveals n), fixed in the signed roster
            cid: data.num_train / WEIGHT_UNIT for cid, data in self.prepared.clients.items()
        }
        self.identities: Identities = setup_identities(
            self.config, keys_dir, list(self.prepared.clients), weights
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
        plan = training_plan(config)
        # shared by every client, as the model is: each record's frozen-layer hidden states are
        # kept once (clients' test splits drawn from one pool overlap)
        prefix = FrozenPrefix(self.model)
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
                },
                "protections_off": config.protections,
                "warnings": self.warnings,
            },
        )
        self.engine = self._engine(config)

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

    def _engine(self, config: RunConfig) -> RoundEngine:
        """The round engine over this process's clients, each a participant of its own."""
        self.sites = {
            cid: Participant(
                self.identities.clients[cid],
                SiteSettings(
                    config,
                    labels=tuple(self.prepared.label_names),
                    adapter_dir=self.rundir.path / "adapters" / cid,
                    transport=TRANSPORT,
                    policy=site_policy_for(config),
                ),
                self.egress,
                MemorySecrets(),
                client,
                on_step=self.progress.step_done,
            )
            for cid, client in self.clients.items()
        }
        transport = InProcessTransport(
            self.sites,
            client_started=self.progress.client_started,
            client_done=self.progress.client_done,
        )
        keys = ServerKeys(self.codecs.server, self.identities.roster, self.identities.server)
        settings = EngineSettings(
            config, self.session, self.manifest, dataset=self.prepared.dataset_name
        )
        observer = Observer(
            round_started=self.progress.round_started,
            round_recorded=self._recorded,
            warning=self.progress.warning,  # type: ignore[arg-type]
            message=self.progress.message,
        )
        return RoundEngine(transport, keys, self.rundir, settings, observer)

    def _recorded(self, record: RoundRecord) -> None:
        """The console's view of a round: the operator holds every client's own statistics."""
        for cid, site in self.sites.items():
            if site.private.get("problems") and site.private.get("round") == record.round:
                self.progress.warning(
                    f"round {record.round}: {cid} REJECTED the aggregate and kept its previous "
                    f"shared tensors: {site.private['problems'][0]}"
                )
        accuracies = {
            cid: site.private["accuracy_subset"]
            for cid, site in self.sites.items()
            if site.private.get("round") == record.round
        }
        self.progress.round_done(record.round)
        self.progress.message(round_line(record, self.config.rounds, accuracies))

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
        self.engine.run_rounds()
        return self.finish(time.time() - start)

    def finish(self, seconds: float) -> dict:
        """Finishing (``finish_steps``), final evaluation (into each client's own directory),
        export, and summary.json (:meth:`RoundEngine.finish`).

        Each client's DP-trained model, its release, is exported to ``adapters/<id>/``. With
        ``finish_steps``, each client then trains its own tensors further without DP
        (:meth:`Client.finish`, after its last release: nothing is sent, the ledger and
        ``state.pt`` are not touched) and keeps that model in its own directory,
        ``clients/<id>/finished-adapter/``; its final evaluation is of that model (and
        ``evaluation.json`` keeps the DP model's accuracy too).

        Returns the summary as written, with ``evaluation`` completed from the clients' own
        directories for the caller (:func:`load_summary`)."""
        steps = self.config.finish_steps
        if steps:
            self.progress.message(
                f"finishing: each client trains its own tensors {steps} more step(s) without DP "
                "(its releases are done; the finished model stays in its own directory) ..."
            )
        self.progress.message("final evaluation on each client's full test split ...")
        summary = self.engine.finish()
        write_run_cards(self.rundir.path)  # each exported adapter's README.md (model_card.py)
        train = sum(
            r.get("train_seconds") or 0.0
            for cid in self.clients
            for r in read_rounds(self.rundir.client_dir(cid))
        )
        self.progress.message(_phase_line({"train": train, **summary["seconds_by_phase"]}))
        self.progress.message(f"wall time {seconds:.1f} s")
        return load_summary(self.rundir.path)


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


def _phase_line(phases: dict[str, float]) -> str:
    total = sum(phases.values()) or 1.0
    names = {"train": "training", "encrypt": "encrypting", "aggregate": "aggregating",
             "decrypt": "decrypting", "evaluate": "evaluating (per round)",
             "final_evaluation": "final evaluation"}  # fmt: skip
    parts = [f"{names[k]} {v:.1f} s ({v / total:.0%})" for k, v in phases.items()]
    return "time: " + ", ".join(parts)


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
