"""One federated client: its own data, its own LoRA state, its own privacy ledger and keys.

A client's state (A, B and head) lives in memory and in ``state.pt`` under its directory; the
model object is shared between clients only as scratch space: a client loads its state into it
before each use. B and the head never leave this object except through :meth:`Client.export`,
which writes to the client's own directory. With ``optimizer_state="kept"`` the client also
keeps its AdamW state from round to round (in memory and in ``state.pt``, never sent). Either
way it clamps each round's change of its shared values to the bound a fresh optimizer obeys,
which the aggregate check assumes (a no-op for a fresh optimizer, which cannot pass it).

DP noise and Poisson sampling come from ``randomness`` (the OS CSPRNG unless a test passes
otherwise); ``seed`` only drives what is not private: the shuffling of training without DP.
Each round's privacy is recorded in the ledger before anything of the round leaves the client,
and the hash of the ledger entry that paid for the trained state is kept with it (``state.pt``)
and with every update sent from it (:attr:`Client.trained_entry`).

Updates are signed with the client's own identity; the aggregate must carry the server's signature,
and its decrypted values must be ones honest clients can produce
(:mod:`secure_fedsa.site.aggregate_check`): an aggregate that fails is not loaded, the client keeps
the shared tensors it started the round with (its B and head keep their training), and the
federation goes on.

The same class serves the in-process federation and the Flower ClientApp.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from secure_fedsa.atomic import atomic_write
from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.crypto.signing import Identity
from secure_fedsa.crypto.wire import LedgerHead, decode_aggregate, encode_update
from secure_fedsa.errors import BudgetExhausted, LedgerError, PrivacyError, SecureFedsaError
from secure_fedsa.model.encoder import LoraClassifier
from secure_fedsa.model.frozen_prefix import FrozenPrefix
from secure_fedsa.model.sharing import Manifest, SharingPolicy, flatten, unflatten
from secure_fedsa.privacy.accounting import DPEvent
from secure_fedsa.privacy.canaries import CanaryGradients, CanarySet
from secure_fedsa.privacy.continuity import Release
from secure_fedsa.privacy.ledger import PrivacyLedger, check_budget
from secure_fedsa.privacy.randomness import OSRandom, RandomSource
from secure_fedsa.schedule import round_factors
from secure_fedsa.site.aggregate_check import (
    Bounds,
    aggregate_problems,
    clamp_round_change,
    roster_total_weight,
    round_change_bound,
    rounds_since,
    still_in_step,
)
from secure_fedsa.site.training import (
    DPSettings,
    OptimizerCarry,
    RoundStats,
    train_dp,
    train_plain,
)

STATE_FILE = "state.pt"
# the record sets a client evaluates on
SPLITS = ("test", "validation")
# Aggregation weight = training-set size / WEIGHT_UNIT, fixed at set-up in the signed roster. The
# unit keeps weighted values inside the range CKKS can add without (silent) overflow
# (|n_k/100 * value| <= 4096 for 64 clients) while the summed weight stays large enough that the
# CKKS error of the average (~1e-9 / summed weight) stays far below 1e-7; clients divide by the
# roster's summed weight of the contributors, so the unit cancels.
WEIGHT_UNIT = 100.0


@dataclass(frozen=True)
class ClientData:
    train: TensorDataset
    test: TensorDataset
    # carved out of the client's training records before any training; never trained on
    validation: TensorDataset = field(
        default_factory=lambda: TensorDataset(
            torch.empty(0, 0, dtype=torch.long),
            torch.empty(0, 0, dtype=torch.long),
            torch.empty(0, dtype=torch.long),
        )
    )

    @property
    def num_train(self) -> int:
        return len(self.train)


@dataclass(frozen=True)
class TrainingPlan:
    local_steps: int
    batch_size: int
    physical_batch_size: int
    lr: float
    clipping: str = "hooks"
    # "fresh": a new optimizer every round (FederatedScope's way); "kept": each client's AdamW
    # state carries over to its next round
    optimizer_state: str = "fresh"
    rounds: int = 1  # of the federation: the lr schedule runs over rounds * local_steps steps
    lr_schedule: str = "constant"

    def lr_factors(self, round_number: int) -> list[float]:
        """This round's per-step lr factors (secure_fedsa/schedule.py)."""
        return round_factors(
            self.lr_schedule, round_number, rounds=self.rounds, local_steps=self.local_steps
        )


@dataclass
class ClientPrivacy:
    """DP settings fixed for the whole federation plus the ledger that remembers every round."""

    settings: DPSettings
    ledger: PrivacyLedger
    budget: float | None  # None: noise multiplier given directly, ε only reported
    # the run-level audit's canaries, committed in the ledger (None: no audit mode)
    canaries: CanarySet | None = None


@dataclass(frozen=True)
class TrainResult:
    stats: RoundStats | None
    epsilon: float | None
    resumed: bool = False
    clamped: int = 0  # shared values whose change this round was limited to the round bound


class Client:
    def __init__(
        self,
        client_id: str,
        data: ClientData,
        *,
        model: LoraClassifier,
        policy: SharingPolicy,
        manifest: Manifest,
        plan: TrainingPlan,
        initial_state: dict[str, torch.Tensor],
        directory: Path,
        privacy: ClientPrivacy | None,
        codec,  # noqa: ANN001 - a client-side codec (plaintext or CKKS)
        seed: int,
        identity: Identity,
        randomness: RandomSource | None = None,
        prefix: FrozenPrefix | None = None,
    ) -> None:
        self.client_id = client_id
        self.data = data
        self.model = model
        # the encoder's frozen bottom, computed once per record (in memory only, like the data);
        # clients of one process that share ``model`` share it too (one copy of each record)
        self.prefix = prefix if prefix is not None else FrozenPrefix(model)
        if self.prefix.model is not model:
            raise SecureFedsaError(f"{client_id}: the frozen prefix belongs to another model")
        self.policy = policy
        self.manifest = manifest
        self.plan = plan
        self.directory = directory
        self.privacy = privacy
        self.codec = codec
        if identity.key.owner != client_id:
            raise SecureFedsaError(
                f"{client_id} was given the signing identity of {identity.key.owner}"
            )
        self.identity = identity
        self.bounds = Bounds(round_change=round_change_bound(lr=plan.lr, steps=plan.local_steps))
        # not private: shuffling without DP; DP noise and sampling come from ``randomness``
        self.generator = torch.Generator().manual_seed(seed)
        self.randomness = randomness if randomness is not None else OSRandom()
        self.directory.mkdir(parents=True, exist_ok=True)
        # state: current tensors; trained: tensors right after the last local training (what
        # this round's update is made of, also after the aggregate was applied).
        self.state = {k: v.clone() for k, v in initial_state.items()}
        # the shared tensors this client started its last trained round with (kept when that
        # round's aggregate is rejected)
        self.start_shared = flatten(self.state, manifest)
        # the ratchet of the aggregate check: the last round whose aggregate (or the lack of
        # one) this client judged (0: none yet), and what it judged that round's aggregate
        # against (the shared tensors it held, and how many rounds they were behind), kept so
        # that a round replayed after a restart is judged exactly as it was the first time
        self.judged_round: int | None = 0
        self.judged_against: tuple[int, np.ndarray, int] | None = None  # (round, held, rounds)
        self.trained = self.state
        self.trained_round = 0
        self.trained_entry: str | None = None  # ledger entry that paid for ``trained``
        self.last_stats: RoundStats | None = None
        self.last_clamped = 0
        # how long the last training took: it follows the Poisson batch sizes (private)
        self.last_train_seconds = 0.0
        # local only, like B: the optimizer's moments never leave the client
        self.carry = OptimizerCarry() if plan.optimizer_state == "kept" else None
        saved = self.directory / STATE_FILE
        if saved.exists():
            self._load(saved)

    # -- training -------------------------------------------------------------------------
    def planned_event(self) -> DPEvent | None:
        """The event the next round is planned to spend: what the budget check projects.
        Training charges the event the mechanism actually executed (:func:`train_dp`)."""
        if self.privacy is None:
            return None
        s = self.privacy.settings
        return DPEvent(
            noise_multiplier=s.noise_multiplier,
            sample_rate=s.sample_rate,
            steps=self.plan.local_steps,
        )

    def check_budget(self) -> None:
        """Raise BudgetExhausted if the next round would exceed this client's budget."""
        if self.privacy is not None and self.privacy.budget is not None:
            check_budget(self.privacy.ledger, self.planned_event(), self.privacy.budget)

    def train(self, round_number: int, on_step: Callable[[], None] | None = None) -> TrainResult:
        if self.trained_round >= round_number:
            # Resuming a round this client finished before an interruption: no new training,
            # no new privacy spent; the update is re-made from the saved post-training state,
            # which the ledger entry ``trained_entry`` already paid for.
            return TrainResult(
                stats=self.last_stats,
                epsilon=self.epsilon_spent,
                resumed=True,
                clamped=self.last_clamped,
            )
        # If the ledger already records this round, the process died after charging it but
        # before saving its result: nothing of it was released, and it is trained again with
        # fresh noise and charged again (counting a round twice is safe, zero times never is).
        self.check_budget()
        started = time.perf_counter()
        self.start_shared = flatten(self.state, self.manifest)
        self.model.load_adapter_state(self.state)
        self.model.set_trainable(self.policy.trained)
        module, train = self.prefix.module(self.data.train), self.prefix.data(self.data.train)
        self.prefix.check_trainable(module)
        canary_sums = None
        if self.privacy is None:
            stats = train_plain(
                module,
                train,
                steps=self.plan.local_steps,
                batch_size=self.plan.batch_size,
                physical_batch_size=self.plan.physical_batch_size,
                lr=self.plan.lr,
                generator=self.generator,
                on_step=on_step,
                carry=self.carry,
                lr_factors=self.plan.lr_factors(round_number),
            )
            epsilon = None
        else:
            ran = train_dp(
                module,
                train,
                steps=self.plan.local_steps,
                dp=self.privacy.settings,
                physical_batch_size=self.plan.physical_batch_size,
                lr=self.plan.lr,
                randomness=self.randomness,
                mode=self.plan.clipping,
                on_step=on_step,
                carry=self.carry,
                lr_factors=self.plan.lr_factors(round_number),
                canaries=self._canary_gradients(),
            )
            stats, canary_sums = ran.stats, ran.canary_sums
            # Privacy is spent the moment training ran: record what the mechanism executed
            # (not what was planned) before anything else, and above all before anything
            # computed in this round can leave the client.
            if ran.event is None:
                raise LedgerError(f"{self.client_id}: round {round_number} ran no DP step")
            epsilon = self.privacy.ledger.record(
                round_number,
                ran.event,
                clip=self.privacy.settings.clip,
                noise_source=self.randomness.name,
            )
            self.trained_entry = self.privacy.ledger.head
        # Every honest client's shared values move at most the round bound in a round: a fresh
        # AdamW cannot pass it, a carried one could in principle, so it is enforced here.
        trained = self.model.adapter_state()
        shared, clamped = clamp_round_change(
            self.start_shared, flatten(trained, self.manifest), self.bounds.round_change
        )
        if self.privacy is not None and self.privacy.canaries is not None:
            # what this round releases on the canary coordinates, and the noisy sums its DP
            # steps released there, kept in this client's own directory for the audit only
            if canary_sums is None:
                raise PrivacyError(f"{self.client_id}: the canaries' noisy sums were not read")
            self.privacy.canaries.record(round_number, self.start_shared, shared, canary_sums)
        self.state = {**trained, **unflatten(shared, self.manifest)}
        self.trained = self.state
        self.trained_round = round_number
        self.last_stats = stats
        self.last_clamped = clamped
        self.last_train_seconds = time.perf_counter() - started
        self._save()
        return TrainResult(stats=stats, epsilon=epsilon, clamped=clamped)

    def _canary_gradients(self) -> CanaryGradients | None:
        canaries = self.privacy.canaries if self.privacy is not None else None
        if canaries is None:
            return None
        if canaries.shared_size != self.manifest.size:
            raise SecureFedsaError(f"{self.client_id}: the canaries were made for another model")
        return canaries.gradients(
            self.manifest.entries, dict(self.model.named_parameters()), self.privacy.settings.clip
        )

    def will_train(self, round_number: int) -> bool:
        """Whether this client sends an update in ``round_number`` (trained already, or its
        budget allows the round)."""
        if self.trained_round >= round_number:
            return True
        try:
            self.check_budget()
        except BudgetExhausted:
            return False
        return True

    def keep_round_start(self, round_number: int, *, judged: bool = True) -> None:
        """Round ``round_number``'s aggregate is not loaded (there is none, or it was refused):
        a client that trained a round it has not judged since goes back to the shared tensors
        it started that round with (B and the head keep their training); any other already
        holds them. The round counts as ``judged`` (this client is still in step) when it was in
        step and every site in step does the same: no aggregate, or one that fails a check
        every site in step judges alike. Otherwise it is behind, sits the next round out
        (:meth:`behind`) and judges later aggregates with a wider bound."""
        if self.judged_round is not None and round_number < self.judged_round:
            return  # an older round's message: nothing here changes
        _, rounds = self._judge(round_number)  # also what a replay of this round is judged by
        own_training = self._holds_own_training()
        if judged and rounds == 1:
            self.judged_round = round_number
        if own_training:
            self.state = {**self.trained, **unflatten(self.start_shared, self.manifest)}
        self._save()

    @property
    def epsilon_spent(self) -> float | None:
        return None if self.privacy is None else self.privacy.ledger.epsilon_spent

    # -- exchange with the server --------------------------------------------------------
    def make_update(
        self, round_number: int, session: str, mask: ChunkMask | None = None, *, weight: float
    ) -> bytes:
        """The only bytes that leave this client: its shared tensors times its ``weight`` (the
        one the signed roster fixes for it; the weight itself is not sent), encrypted (with
        secure aggregation's ``mask`` added to the ciphertexts, if given) and signed for this
        round of the run ``session``."""
        values = flatten(self.trained, self.manifest)
        return encode_update(
            self.codec,
            values,
            weight,
            manifest_hash=self.manifest.digest,
            round=round_number,
            session=session,
            key=self.identity.key,
            mask=mask,
            ledger=self.ledger_head(),
        )

    def ledger_head(self) -> LedgerHead | None:
        """The ledger entry that paid for the trained state (its position and hash), which every
        update carries so the server can refuse a ledger that went back; None without DP."""
        if self.privacy is None or self.trained_entry is None:
            return None
        hashes = [e.hash for e in self.privacy.ledger.entries]
        if self.trained_entry not in hashes:
            raise LedgerError(
                f"{self.client_id}: the trained state was paid for by ledger entry "
                f"{self.trained_entry[:12]}…, which the ledger does not hold"
            )
        return LedgerHead(hashes.index(self.trained_entry) + 1, self.trained_entry)

    def apply_aggregate(
        self,
        data: bytes,
        round_number: int,
        session: str,
        *,
        roster_weights: Mapping[str, float] | None,
        survivors: Sequence[str] | None = None,
        uploaded: bool = False,
    ) -> list[str]:
        """Verify, decrypt and check the server's aggregate; load it as the shared tensors if
        honest clients could have produced it. Returns why it was rejected (empty: loaded).

        ``roster_weights`` are the signed roster's fixed weights of its members (None: a roster
        without weights, which cannot aggregate); the aggregate is divided by those of the
        contributors it names. ``survivors`` is the survivor set this client signed this round
        (masking), which the names must equal; ``uploaded`` says this client sent an update this
        round, so its own name must be among them.

        A rejected aggregate is not loaded: the shared tensors go back to what this client
        started the round with, its B and head keep their training. Nothing here raises for a
        bad aggregate: an honest client never fails because of someone else's update.
        """
        try:
            aggregate = decode_aggregate(
                self.codec,
                data,
                manifest_hash=self.manifest.digest,
                round=round_number,
                session=session,
                n_values=self.manifest.size,
                server_key=self.identity.server_key,
            )
            reference, rounds = self._judge(round_number)
            problems = aggregate_problems(
                aggregate.total,
                aggregate.contributor_ids,
                aggregate.contributors,
                reference=reference,
                rounds=rounds,
                bounds=self.bounds,
                roster_weights=roster_weights,
                survivors=survivors,
                own=self.client_id if uploaded else None,
            )
        except SecureFedsaError as exc:
            problems = [str(exc)]
        if problems:
            self.keep_round_start(round_number, judged=still_in_step(problems))
            return problems
        assert roster_weights is not None  # aggregate_problems refuses an aggregate without
        divisor = roster_total_weight(aggregate.contributor_ids, roster_weights)
        shared = unflatten(aggregate.total / divisor, self.manifest)
        # a client that did not train this round (not drawn) receives the new shared tensors
        # too; its own tensors are those of its last training either way
        own = self.trained if self.trained_round == round_number else self.state
        self.state = {**own, **shared}
        self.judged_round = round_number
        self._save()
        return problems

    def behind(self, round_number: int, last_applied: int) -> bool:
        """This client holds older shared tensors than the sites in step: some site applied the
        aggregate of round ``last_applied`` (the server says so, from the sites' status codes)
        and this client judged none since (it missed it, or refused it for a reason of its own).
        It must not train round ``round_number``, only judge its aggregate, or sites in step
        would refuse an honest aggregate that holds its update (the ratchet in
        :mod:`secure_fedsa.site.aggregate_check`). A server that lies about ``last_applied``
        only makes a site train or wait when it should not (liveness); what the site accepts is
        bounded by what it holds either way. A round already trained is not behind."""
        if self.trained_round >= round_number or self.judged_round is None:
            return False
        return self.judged_round < last_applied

    def _holds_own_training(self) -> bool:
        """It trained a round it has not judged since: its shared tensors are its own trained
        values, never an aggregate; what it holds is that round's start (``start_shared``)."""
        return self.trained_round > (self.judged_round or 0)

    def _judge(self, round_number: int) -> tuple[np.ndarray, int]:
        """What round ``round_number``'s aggregate is checked against: the shared tensors this
        client holds and how many rounds of honest training separate them from it; the same
        pair again for a round replayed after a restart. Nothing for a round
        older than the last one judged (SecureFedsaError: a rejection)."""
        if self.judged_against is not None and self.judged_against[0] == round_number:
            return self.judged_against[1:]
        try:
            rounds = rounds_since(round_number, self.judged_round)
        except ValueError:
            raise SecureFedsaError(
                f"{self.client_id}: an aggregate of round {round_number} came after round "
                f"{self.judged_round}'s was judged"
            ) from None
        # what it holds: the start of a round it trained and has not judged since (its own
        # trained values were never an aggregate), else its current shared tensors
        own = self._holds_own_training()
        reference = self.start_shared if own else flatten(self.state, self.manifest)
        self.judged_against = (round_number, reference, rounds)
        return reference, rounds

    # -- finishing (after the last release) ---------------------------------------------
    def finished_groups(self) -> frozenset[str]:
        """What finishing trains: every tensor this client trains and its method does not
        share (B and the head under fedsa; B alone with ``--head shared``)."""
        return self.policy.trained - self.policy.shared

    def finish(self, steps: int) -> dict[str, torch.Tensor]:
        """This client's final model after ``steps`` more steps of plain training (no DP) of
        :meth:`finished_groups` on its own training records, the shared tensors frozen.

        Returns the finished tensors and changes nothing else: not :attr:`state`, not
        ``state.pt``, not the ledger, not the no-DP shuffling generator (a copy drives the
        batches). Nothing is ever made from the finished tensors but the client's own final
        evaluation and export, so no later release can depend on them: a run extended with more
        rounds goes on from the DP-trained state.
        """
        if steps < 1:
            return dict(self.state)
        groups = self.finished_groups()
        if not groups:
            raise SecureFedsaError(
                f"{self.client_id}: nothing to finish, the method shares every trained tensor"
            )
        self.model.load_adapter_state(self.state)
        self.model.set_trainable(groups)
        module, train = self.prefix.module(self.data.train), self.prefix.data(self.data.train)
        self.prefix.check_trainable(module)
        generator = torch.Generator()
        generator.set_state(self.generator.get_state())
        train_plain(
            module,
            train,
            steps=steps,
            batch_size=self.plan.batch_size,
            physical_batch_size=self.plan.physical_batch_size,
            lr=self.plan.lr,
            generator=generator,
        )
        finished = self.model.adapter_state()
        if not np.array_equal(
            flatten(finished, self.manifest), flatten(self.state, self.manifest)
        ):  # frozen: a change here would be a bug, and the final A would not be the aggregate
            raise SecureFedsaError(f"{self.client_id}: finishing changed a shared tensor")
        self.model.load_adapter_state(self.state)
        return finished

    # -- evaluation and export -----------------------------------------------------------
    def split(self, name: str) -> TensorDataset:
        """One of this client's record sets by name: ``test`` or ``validation`` (carved out of
        its training records before any training, never trained on; may be empty)."""
        if name not in SPLITS:
            raise SecureFedsaError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)}")
        return getattr(self.data, name)

    def evaluate(
        self,
        limit: int | None = None,
        split: str = "test",
        state: dict[str, torch.Tensor] | None = None,
    ) -> float:
        """Accuracy on this client's own ``split`` (the first ``limit`` examples if given) of
        its current model, or of ``state`` (e.g. its finished model)."""
        data = self.split(split)
        self.model.load_adapter_state(self.state if state is None else state)
        module = self.prefix.module(data)
        inputs, mask, labels = self.prefix.data(data).tensors
        if limit is not None:
            inputs, mask, labels = inputs[:limit], mask[:limit], labels[:limit]
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(labels), 256):
                logits = module(inputs[start : start + 256], mask[start : start + 256])
                correct += int((logits.argmax(-1) == labels[start : start + 256]).sum())
        self.model.train()
        return correct / max(len(labels), 1)

    def export(
        self,
        directory: Path,
        label_names: list[str],
        state: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write this client's adapter (global A, own B) in peft's format, plus its head: its
        current model, or ``state`` (e.g. its finished model). The adapter names its base model
        portably (secure_fedsa/model/base_reference.py); its model card is the caller's
        (secure_fedsa/site/model_card.py)."""
        from safetensors.torch import save_file

        from secure_fedsa.model.base_reference import portable_base
        from secure_fedsa.model.vera import peft_layout

        state = self.state if state is None else state
        self.model.load_adapter_state(state)
        directory.mkdir(parents=True, exist_ok=True)
        # VeRA: peft's own parameter layout while it saves; never this machine's model path.
        # The vocabulary is never changed: no copy of the base embeddings, and no question to
        # the hub about the base model (peft's "auto" asks it)
        with peft_layout(self.model), portable_base(self.model.encoder):
            self.model.encoder.save_pretrained(str(directory), save_embedding_layers=False)
        head = {k.removeprefix("head."): v.contiguous() for k, v in state.items()}
        head = {k: v for k, v in head.items() if k.startswith("classifier.")}
        save_file(head, str(directory / "head.safetensors"))
        (directory / "labels.json").write_text(json.dumps(label_names))
        return directory

    def _save(self) -> None:
        payload = {
            "state": self.state,
            "trained": self.trained,
            "trained_round": self.trained_round,
            "stats": None if self.last_stats is None else dataclasses.asdict(self.last_stats),
            "generator": self.generator.get_state(),  # no-DP shuffling only; never DP noise
            "trained_entry": self.trained_entry,
            "start_shared": torch.from_numpy(self.start_shared),
            "judged_round": self.judged_round,
            "judged_against": None
            if self.judged_against is None
            else (
                self.judged_against[0],
                torch.from_numpy(self.judged_against[1]),
                self.judged_against[2],
            ),
            "clamped": self.last_clamped,
            "optimizer": None if self.carry is None else self.carry.saved,
            "train_seconds": self.last_train_seconds,  # private, like the loss in ``stats``
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(self.directory / STATE_FILE, buffer.getvalue())

    def _load(self, path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        self.state = payload["state"]
        self.trained = payload["trained"]
        self.trained_round = int(payload["trained_round"])
        stats = payload["stats"]
        self.last_stats = None if stats is None else RoundStats(**stats)
        self.generator.set_state(payload["generator"])
        self.trained_entry = payload.get("trained_entry")
        self.start_shared = payload["start_shared"].numpy()
        # a state saved before the ratchet: the round it judged last is unknown
        self.judged_round = payload.get("judged_round")
        against = payload.get("judged_against")
        self.judged_against = (
            None if against is None else (int(against[0]), against[1].numpy(), int(against[2]))
        )
        self.last_clamped = int(payload.get("clamped", 0))
        self.last_train_seconds = float(payload.get("train_seconds", 0.0))
        if self.carry is not None:
            self.carry.saved = payload.get("optimizer")


FINISHED_ADAPTER = "finished-adapter"
FINISHING_FILE = "finishing.json"


def finish_export(
    client: Client, directory: Path, label_names: list[str], state: dict, steps: int
) -> Path:
    """Write a client's finished model into ``directory/finished-adapter/`` (its own
    directory, never a shared file of the run), with a note saying it is not DP."""
    target = client.export(directory / FINISHED_ADAPTER, label_names, state=state)
    (target / FINISHING_FILE).write_text(
        json.dumps(
            {
                "differentially_private": False,
                "finish_steps": steps,
                "finished_tensors": sorted(client.finished_groups()),
                "note": "trained further on this client's own training records WITHOUT DP "
                "after its last release: no more private than a model trained alone without "
                "DP. Keep it where the records are. The client's DP model, its release, is "
                "adapters/<id>/ of an in-process run (a Flower site's adapter/)",
            },
            indent=2,
        )
        + "\n"
    )
    return target


def saved_release(directory: Path) -> Release | None:
    """What a client's saved state says it kept: its last trained round and the ledger entry
    that paid for it (None when the client has not trained, or trained without DP)."""
    path = directory / STATE_FILE
    if not path.exists():
        return None
    payload = torch.load(path, weights_only=True)
    round_number = int(payload.get("trained_round", 0))
    if round_number <= 0:
        return None
    return Release(
        round_number, payload.get("trained_entry"), f"{path.name} (round {round_number})"
    )
