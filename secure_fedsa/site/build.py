"""One site and one round, shared by both transports (in-process and the Flower apps).

- :func:`training_plan`, :func:`privacy_history`, :func:`plan_client`, :func:`client_privacy`:
  a client's optimisation plan; the privacy it already spent (its ledger, checked against what it
  released); its privacy plan, calibrated against that history; its DP settings plus ledger.
- :func:`run_labels`, :func:`server_manifest`: the label vocabulary and the shared-tensor
  manifest every party derives from the run configuration alone (the server included).
- :class:`SiteSpec`, :func:`build_site`: everything one site needs, built from what that site
  alone holds (its data file or a bundled dataset partition, its ``client.keys``, its state
  directory). This is how a Flower ClientApp makes its :class:`~secure_fedsa.site.client.Client`.

Nothing here imports Flower.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.signing import load_identity
from secure_fedsa.errors import ConfigError, DataError, LedgerError
from secure_fedsa.model.sharing import Manifest, SharingPolicy, get_policy
from secure_fedsa.privacy.anchor import AnchorStore
from secure_fedsa.privacy.canaries import CanarySet, reopen_canaries
from secure_fedsa.privacy.continuity import Release, egress_releases, open_history
from secure_fedsa.privacy.ledger import LedgerIdentity, PrivacyLedger
from secure_fedsa.privacy.plan import PrivacyPlan, plan_privacy
from secure_fedsa.privacy.randomness import OSRandom
from secure_fedsa.sampling import rounds_sampled
from secure_fedsa.site.client import Client, ClientData, ClientPrivacy, TrainingPlan, saved_release
from secure_fedsa.site.egress import EgressLog
from secure_fedsa.site.training import DPSettings

LEDGER_FILE = "privacy_ledger.json"


# --------------------------------------------------------------------------- per client
def training_plan(config: RunConfig) -> TrainingPlan:
    """The local optimisation every client of ``config`` runs each round."""
    return TrainingPlan(
        local_steps=config.local_steps,
        batch_size=config.batch_size,
        physical_batch_size=config.physical_batch_size,
        lr=config.lr,
        clipping=config.clipping,
        optimizer_state=config.optimizer_state,
        rounds=config.rounds,
        lr_schedule=config.lr_schedule,
    )


def ledger_identity(
    config: RunConfig,
    client_id: str,
    plan: PrivacyPlan,
    fingerprint: str | None,
    canary_commitment: str | None = None,
) -> LedgerIdentity:
    return LedgerIdentity.create(
        client_id=client_id,
        key_fingerprint=fingerprint,
        delta=config.delta,
        accountant=config.accountant,
        dataset_size=plan.dataset_size,
        target_epsilon=config.epsilon,
        noise_multiplier=plan.noise_multiplier,
        clip=config.clip,
        canary_commitment=canary_commitment,
    )


@dataclass(frozen=True)
class PrivacyHistory:
    """What a client has spent before this process: its verified ledger (None for a client that
    has never trained) and the rounds whose training it kept (``state.pt``)."""

    ledger: PrivacyLedger | None = None
    rounds_done: int = 0


def client_releases(directory: Path, egress: Sequence[dict] = ()) -> list[Release]:
    """What a client kept (``state.pt``) and sent (its egress records), as releases."""
    saved = saved_release(directory)
    return ([saved] if saved is not None else []) + egress_releases(egress)


def privacy_history(
    directory: Path, releases: Sequence[Release], anchors: AnchorStore
) -> PrivacyHistory:
    """The client's ledger in ``directory``, checked against ``releases`` and its anchor.

    Raises :class:`~secure_fedsa.errors.LedgerError` (and changes nothing) when the ledger is
    missing, corrupt, rolled back, or does not pay for every release: a client that has trained
    never gets a fresh ledger.
    """
    ledger = open_history(directory / LEDGER_FILE, releases, anchors)
    saved = saved_release(directory)
    return PrivacyHistory(ledger=ledger, rounds_done=0 if saved is None else saved.round)


def refuse_without_dp(directory: Path, egress: Sequence[dict] = ()) -> None:
    """Raise :class:`~secure_fedsa.errors.LedgerError` if ``directory`` holds a privacy ledger
    or any record of a DP release: a client that trained with DP never trains without it (a
    ``"dp": false`` edit must not resume it)."""
    evidence = []
    if (directory / LEDGER_FILE).exists():
        evidence.append(f"a privacy ledger ({directory / LEDGER_FILE})")
    if any(isinstance(r, dict) and r.get("ledger_entry") for r in egress):
        evidence.append("egress records of updates paid for by a ledger")
    saved = saved_release(directory)
    if saved is not None and saved.ledger_entry is not None:
        evidence.append("a training state paid for by a ledger entry")
    if evidence:
        raise LedgerError(
            f"{directory}: this client trained with differential privacy ({evidence[0]}), but "
            "the configuration turns DP off. A client that has released DP results never "
            'trains without DP: restore "dp": true in the configuration, or start a new run '
            "directory"
        )


def plan_client(
    config: RunConfig,
    client_id: str,
    dataset_size: int,
    history: PrivacyHistory,
    *,
    candidates: Sequence[str] | None = None,
) -> PrivacyPlan:
    """The client's privacy plan: σ calibrated for the rounds left, against its history.

    With ``candidates`` (every client of the run, in order) and ``config.clients_per_round``,
    the rounds left are those after its last trained round in which the client is drawn
    (:mod:`secure_fedsa.sampling`); without (a Flower site cannot know the server's draw, which
    is over the connected nodes), every round left is planned for: σ is then larger than needed
    and the client ends below its budget, never above it."""
    rounds_left = None
    if candidates is not None and config.clients_per_round is not None:
        rounds_left = rounds_sampled(
            candidates,
            client_id,
            config.clients_per_round,
            seed=config.seed,
            rounds=range(history.rounds_done + 1, config.rounds + 1),
        )
    if history.ledger is None:
        return plan_privacy(
            config, client_id=client_id, dataset_size=dataset_size, rounds_left=rounds_left
        )
    return plan_privacy(
        config,
        client_id=client_id,
        dataset_size=dataset_size,
        prior=history.ledger.events,
        rounds_done=history.rounds_done,
        planned_sigma=history.ledger.identity.noise_multiplier,
        retrying=history.ledger.last_round > history.rounds_done,
        rounds_left=rounds_left,
    )


def client_privacy(
    config: RunConfig,
    client_id: str,
    plan: PrivacyPlan | None,
    directory: Path,
    fingerprint: str | None,
    history: PrivacyHistory | None,
    anchors: AnchorStore,
    *,
    shared_size: int = 0,
) -> ClientPrivacy | None:
    """DP settings and the client's ledger (``history``'s, or a new one for a client that has
    never trained) in ``directory``; None without DP. The budget is the ledger's.

    With ``config.canaries`` (the run-level audit), a new ledger commits to canaries drawn now
    on a shared vector of ``shared_size`` values; an existing one must hold the commitment of
    the canaries saved in ``directory``."""
    if not config.dp or plan is None:
        return None
    settings = DPSettings(
        noise_multiplier=plan.noise_multiplier,
        clip=config.clip,
        sample_rate=plan.sample_rate,
    )
    existing = history.ledger if history is not None else None
    if existing is not None:
        existing.require_identity(ledger_identity(config, client_id, plan, fingerprint))
        canaries = reopen_canaries(directory, config.canaries, existing.identity.canary_commitment)
        ledger = existing
    else:
        directory.mkdir(parents=True, exist_ok=True)
        canaries = (
            CanarySet.draw(directory, config.canaries, shared_size, OSRandom())
            if config.canaries
            else None
        )
        commitment = None if canaries is None else canaries.commitment
        identity = ledger_identity(config, client_id, plan, fingerprint, commitment)
        ledger = PrivacyLedger.open(directory / LEDGER_FILE, identity=identity, anchors=anchors)
    return ClientPrivacy(
        settings=settings,
        ledger=ledger,
        budget=ledger.identity.target_epsilon,
        canaries=canaries,
    )


def shared_manifest(initial: dict[str, torch.Tensor], policy: SharingPolicy) -> Manifest:
    """The manifest of the tensors ``policy`` shares (A for FedSA), from the initial state."""
    return Manifest.from_state(initial, policy.shared_names(list(initial)))


# --------------------------------------------------------------------------- one site
@dataclass(frozen=True)
class SiteSpec:
    """What one site holds: its data (a file, or a bundled dataset partition), keys and state.

    ``data_file`` is a CSV/JSONL file with the run's text and label columns. Without it,
    ``partition_id`` of ``num_partitions`` selects this site's part of ``config.dataset``
    exactly as the in-process federation would split it (for trials and tests).
    """

    state_dir: Path
    keys: Path | None = None
    identity: Path | None = None
    data_file: Path | None = None
    partition_id: int | None = None
    num_partitions: int | None = None
    client_id: str | None = None
    # where the site's ledger anchors live, outside its state directory (None: the user's
    # default, privacy/anchor.py)
    anchors: Path | None = None

    @property
    def name(self) -> str:
        if self.client_id:
            return self.client_id
        if self.data_file is not None:
            return self.data_file.stem
        return f"client-{self.partition_id}"

    @property
    def number(self) -> int:
        """A stable per-site number for seeding local randomness."""
        if self.partition_id is not None:
            return self.partition_id
        return int(hashlib.sha256(self.name.encode()).hexdigest()[:6], 16) % 1000


@dataclass
class Site:
    client: Client
    label_names: tuple[str, ...]
    privacy_plan: PrivacyPlan | None
    manifest: Manifest


def _site_data_from_file(config: RunConfig, spec: SiteSpec) -> tuple[ClientData, tuple[str, ...]]:
    from secure_fedsa.data import carve_validation, load_file, restrict_labels, train_test_split
    from secure_fedsa.model.encoder import load_tokenizer
    from secure_fedsa.site.prepare_data import model_spec, tensors

    if not config.labels:
        raise DataError(
            "sites with their own data files must number labels alike: give the run's label "
            'vocabulary (run config labels="a,b,...")'
        )
    if spec.data_file is None or not spec.data_file.is_file():
        raise DataError(f"{spec.name}: data file {str(spec.data_file)!r} not found")
    if config.client_sizes != "partition" or config.test_examples is not None:
        raise DataError(
            f"{spec.name} has its own data file, split by test-fraction: client-sizes and "
            "test-examples apply to a partitioned dataset (partition-id and num-partitions)"
        )
    dataset = load_file(
        spec.data_file, text_column=config.text_column, label_column=config.label_column
    )
    dataset = restrict_labels(dataset, config.labels)
    indices = np.arange(len(dataset))
    if config.max_examples is not None and config.max_examples < len(dataset):
        rng = np.random.default_rng(config.seed)
        indices = np.sort(rng.choice(indices, size=config.max_examples, replace=False))
    seed = int(np.random.SeedSequence([config.seed, spec.number]).generate_state(1)[0])
    train_idx, test_idx = train_test_split(
        indices,
        test_fraction=config.test_fraction,
        seed=seed,
        labels=dataset.labels,
        client=spec.number,
    )
    train_idx, validation_idx = carve_validation(
        train_idx,
        fraction=config.validation_fraction,
        seed=int(np.random.SeedSequence([config.seed, spec.number, 1]).generate_state(1)[0]),
        labels=dataset.labels,
        client=spec.number,
    )
    tokenizer = load_tokenizer(model_spec(config))
    data = ClientData(
        train=tensors(tokenizer, dataset, train_idx, config.max_length),
        test=tensors(tokenizer, dataset, test_idx, config.max_length),
        validation=tensors(tokenizer, dataset, validation_idx, config.max_length),
    )
    return data, tuple(dataset.label_names)


def _site_data_from_partition(
    config: RunConfig, spec: SiteSpec
) -> tuple[ClientData, tuple[str, ...]]:
    from secure_fedsa.site.prepare_data import prepare

    if spec.partition_id is None or spec.num_partitions is None:
        raise DataError("a site needs data-file, or partition-id and num-partitions")
    if not 0 <= spec.partition_id < spec.num_partitions:
        raise DataError(f"partition-id {spec.partition_id} is outside 0..{spec.num_partitions - 1}")
    prepared = prepare(config.replace(num_clients=spec.num_partitions))
    return prepared.clients[f"client-{spec.partition_id}"], prepared.label_names


def site_data(config: RunConfig, spec: SiteSpec) -> tuple[ClientData, tuple[str, ...]]:
    """This site's tokenized train and test split and the run's label names."""
    if spec.data_file is not None:
        return _site_data_from_file(config, spec)
    return _site_data_from_partition(config, spec)


def client_codec(config: RunConfig, keys: Path | None):  # noqa: ANN201 - a client codec
    """The site's codec: CKKS from its ``client.keys``, or plaintext with encryption off."""
    from secure_fedsa.crypto.plaintext import PlaintextCodec

    if not config.encryption:
        return PlaintextCodec()
    from secure_fedsa.crypto.ckks_client import CKKSClientCodec

    if keys is None:
        raise DataError("encryption is on: the site needs its client.keys (node config keys=...)")
    return CKKSClientCodec.from_bundle(keys)


def build_site(config: RunConfig, spec: SiteSpec) -> Site:
    """A :class:`Client` for one site; its state and ledger live in ``spec.state_dir``."""
    from secure_fedsa.model.encoder import build_model
    from secure_fedsa.site.prepare_data import model_spec

    codec = client_codec(config, spec.keys)
    if spec.identity is None:
        raise DataError(
            f"{spec.name}: the site needs its signing identity (node config "
            "identity=PATH/identities/<client-id>.key from `secure-fedsa keys init`)"
        )
    identity = load_identity(spec.identity)
    data, label_names = site_data(config, spec)
    expected = run_labels(config)
    if expected and tuple(label_names) != expected:
        raise DataError(
            f"{spec.name}: its data has the labels {', '.join(label_names)}; the run's label "
            f"vocabulary is {', '.join(expected)} (every site must number labels alike)"
        )
    policy = get_policy(config.method, config.head)
    torch.manual_seed(config.seed)
    model = build_model(model_spec(config), num_labels=len(label_names), seed=config.seed)
    plan = history = None
    anchors = AnchorStore(spec.anchors)
    records = EgressLog(spec.state_dir / "egress").read(spec.name)
    if not config.dp:
        refuse_without_dp(spec.state_dir, records)
    else:
        history = privacy_history(spec.state_dir, client_releases(spec.state_dir, records), anchors)
        plan = plan_client(config, spec.name, data.num_train, history)
    initial = model.adapter_state()
    manifest = shared_manifest(initial, policy)
    client = Client(
        spec.name,
        data,
        model=model,
        policy=policy,
        manifest=manifest,
        plan=training_plan(config),
        initial_state=initial,
        directory=spec.state_dir,
        privacy=client_privacy(
            config,
            spec.name,
            plan,
            spec.state_dir,
            codec.fingerprint,
            history,
            anchors,
            shared_size=manifest.size,
        ),
        codec=codec,
        seed=config.seed * 1000 + spec.number,
        identity=identity,
        randomness=OSRandom(),
    )
    return Site(client=client, label_names=label_names, privacy_plan=plan, manifest=manifest)


def run_labels(config: RunConfig) -> tuple[str, ...]:
    """The run's label vocabulary, in order, from its configuration alone: ``labels``, or the
    vocabulary of the bundled dataset it names (empty when neither says: a dataset file whose
    labels only its holders know)."""
    from secure_fedsa.data import BUNDLED_LABELS

    if config.labels:
        return tuple(config.labels)
    if config.data_files:
        return ()
    return BUNDLED_LABELS.get(config.dataset, ())


def server_manifest(config: RunConfig) -> Manifest:
    """The shared-tensor manifest, built by the server from the configuration alone.

    LoRA matrices do not depend on the number of labels; the head does, so when the head is
    shared (``head = shared``) the server builds it for the run's label vocabulary
    (:func:`run_labels`), which every site checks its own data against (:func:`build_site`):
    the manifest hash the server checks each update against is then the sites' own.
    """
    from secure_fedsa.model.encoder import build_model
    from secure_fedsa.site.prepare_data import model_spec

    policy = get_policy(config.method, config.head)
    labels = run_labels(config)
    if not labels and "head" in policy.shared:
        raise ConfigError(
            "the head is shared (head = shared): the server must know the label vocabulary to "
            'build it; give it with run config labels="a,b,..."'
        )
    model = build_model(model_spec(config), num_labels=max(len(labels), 2), seed=config.seed)
    return shared_manifest(model.adapter_state(), policy)
