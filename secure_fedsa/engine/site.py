"""A site's side of every round: one handler per request, the same for both transports.

:class:`Participant` answers the server's requests (:mod:`secure_fedsa.engine.messages`) for one
client: it makes and keeps the round's masking secrets, trains (the ledger is charged inside
:meth:`~secure_fedsa.site.client.Client.train`, before anything leaves), masks, encrypts and signs
its update, checks and applies the aggregate, evaluates, and at the end exports and finishes its
model. Every message it sends is recorded in its egress log first; every statistic of its records
that is not DP (loss, batch sizes, training time, accuracy, label counts) goes to its own directory
(:mod:`secure_fedsa.site.private_stats`) and into a reply only when the run releases its evaluation.

The round's X25519 keys and self-mask seed live in a :class:`SecretStore` (memory only: a dict
in-process, the SuperNode's ``Context.state`` in Flower) from the key advertisement until the
site's last use of them: they are forgotten after its reveal, at the round's evaluation, at a
new round's advertisement, when a failed round stops the run and at the end of the run,
whichever comes first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.crypto.signing import (
    Identity,
    Roster,
    accept_roster,
    parse_roster,
    require_weights,
)
from secure_fedsa.engine import messages as m
from secure_fedsa.errors import BudgetExhausted, CryptoError
from secure_fedsa.secagg.masking import chunk_mask
from secure_fedsa.secagg.protocol import (
    KeyAdvert,
    MaskingClient,
    Reveal,
    RoundFailed,
    fixed_threshold,
)
from secure_fedsa.secagg.site_policy import (
    PinnedPolicy,
    PolicyRefused,
    RoundPolicy,
    check_round_policy,
)
from secure_fedsa.site.client import Client, finish_export
from secure_fedsa.site.egress import EgressLog
from secure_fedsa.site.private_stats import append_round, write_evaluation

AGGREGATES_FILE = "aggregates.jsonl"  # the site's own log of aggregates and why it rejected any


@dataclass(frozen=True)
class SiteSettings:
    """What a site takes from the run's configuration itself, never from the server."""

    config: RunConfig
    labels: tuple[str, ...]
    adapter_dir: Path  # where its DP model is exported at the end
    transport: str  # named in its egress records
    # what the site itself requires of every round (Flower: its node config; in-process: the
    # configuration), checked before training; the default pins masking on
    policy: PinnedPolicy = PinnedPolicy()

    @property
    def threshold(self) -> int:
        """Secure aggregation's t: ``masking_threshold``, or a majority of the round's clients
        (``clients_per_round``, or every client)."""
        config = self.config
        return fixed_threshold(
            config.masking_threshold, config.clients_per_round or config.num_clients
        )

    @property
    def masked(self) -> bool:
        return self.config.masking and self.config.encryption

    def round_policy(self) -> RoundPolicy:
        """What the round asks of this site (in Flower: the server's run config)."""
        config = self.config
        return RoundPolicy(
            encryption=config.encryption,
            masking=config.masking,
            threshold=config.masking_threshold,
            clients=config.clients_per_round or config.num_clients,
        )

    def refusal(self) -> str | None:
        """Why this site refuses the round before training (None: it takes part)."""
        try:
            check_round_policy(self.round_policy(), self.policy)
        except PolicyRefused as exc:
            return str(exc)
        return None


def site_policy_for(config: RunConfig) -> PinnedPolicy:
    """An in-process site's pinned policy: the configuration is the site's own, so it pins
    masking exactly when the configuration turns it on (and shares something)."""
    masked = config.masking and config.encryption and config.method != "local"
    return PinnedPolicy(require_masking=masked, min_threshold=config.masking_threshold)


class SecretStore(Protocol):
    """Where a site keeps one round's masking secrets between messages (memory only)."""

    def save(self, state: Mapping[str, Any]) -> None: ...
    def load(self) -> Mapping[str, Any]: ...
    def clear(self) -> None: ...


class MemorySecrets:
    """A :class:`SecretStore` in this process's memory."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def save(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)

    def load(self) -> Mapping[str, Any]:
        return self.state

    def clear(self) -> None:
        self.state = {}


def received_roster(roster: bytes, signature: bytes, identity: Identity) -> Roster:
    """The roster the server sent, accepted only if the server signed it and it is the roster
    the site's identity pins or a revocation descendant of it (:func:`accept_roster`): a server
    that swaps peers' keys for its own is refused whatever it signs. Every roster in that
    lineage fixes the same client weights."""
    try:
        parsed = parse_roster(json.loads(bytes(roster)), "the server's roster")
    except (ValueError, TypeError, CryptoError):
        raise CryptoError("the server sent no readable roster") from None
    return accept_roster(parsed, bytes(signature), identity)


# what a site keeps within a round, from its upload to the round's evaluate (public values,
# memory only): that it uploaded (the aggregate must then name it) and the survivor set it
# signed (with masking: the aggregate must name exactly that set)
UPLOADED = "uploaded"
SURVIVORS = "survivors"


class Participant:
    """One site answering the server's requests. ``client`` may be None for the masking
    phases (a Flower site answers them without loading its model or ledger)."""

    def __init__(
        self,
        identity: Identity,
        settings: SiteSettings,
        egress: EgressLog,
        secrets: SecretStore,
        client: Client | None = None,
        on_step: Callable[[], None] | None = None,
        kept: SecretStore | None = None,
    ) -> None:
        if client is not None and client.client_id != identity.key.owner:
            raise CryptoError(f"{client.client_id} was given {identity.key.owner}'s identity")
        self.identity, self.settings, self.egress = identity, settings, egress
        self.secrets, self.client, self.on_step = secrets, client, on_step
        # the survivor set signed this round, from the reveal to the evaluate (not secret)
        self.kept = kept if kept is not None else MemorySecrets()
        self.name = identity.key.owner
        # this round's statistics of the client's records (never sent): for its own console
        self.private: dict[str, Any] = {}

    def handle(self, request: m.Request) -> Any:
        return HANDLERS[type(request)](self, request)

    # -- secure aggregation ------------------------------------------------------------
    def keys(self, request: m.KeysRequest) -> KeyAdvert | m.TrainReport:
        """Phase 1: the round's key pairs, advertised; a site that knows it cannot train this
        round (its ledger is at hand) declines with the reason instead."""
        self.secrets.clear()  # nothing of an earlier round outlives a new advertisement
        self.kept.clear()
        refusal = self.settings.refusal()
        if refusal is not None:  # before any key is made or any record is touched
            return m.TrainReport(self.name, m.REFUSED, reason=refusal)
        if self.client is not None and self.client.trained_round < request.round:
            try:
                self.client.check_budget()
            except BudgetExhausted as exc:
                return m.TrainReport(self.name, m.BUDGET_EXHAUSTED, reason=str(exc))
            if self.client.behind(request.round, request.last_applied):
                return self._behind(request.round)
        roster = received_roster(request.roster, request.roster_signature, self.identity)
        masking = MaskingClient(self.name, self.identity.key, roster, request.session,
                                request.round)  # fmt: skip
        advert = masking.advertise()
        self._keep(masking)
        self._sent(request.round, "secagg-keys", advert.c_pk + advert.s_pk + advert.signature)
        return advert

    def shares(self, request: m.SharesRequest) -> m.Shares:
        """Phase 2: this site's secrets, Shamir-shared among the round's sites, each share
        encrypted to its holder, with the site's own threshold."""
        masking = self._restore(request.round, request.session)
        out = masking.share(request.adverts, threshold=self.settings.threshold)
        self._keep(masking)
        self._sent(request.round, "secagg-shares", b"".join(out[p] for p in sorted(out)))
        return m.Shares(self.name, out)

    def survivors(self, request: m.SurvivorsRequest) -> m.SurvivorSignature:
        """Consistency: sign the survivor set the server claims (one set per round: asked to
        sign another, the site refuses, the server is lying)."""
        masking = self._restore(request.round, request.session)
        signature = masking.sign_survivors(present=request.present, dropped=request.dropped)
        self._keep(masking)
        signed = json.dumps(sorted(request.present))
        self._note(request.round, request.session, **{SURVIVORS: signed})
        self._sent(request.round, "secagg-survivors", signature)
        return m.SurvivorSignature(self.name, signature)

    def reveal(self, request: m.RevealRequest) -> Reveal:
        """Unmasking: the shares the server needs (never both kinds for one client), only for
        the survivor set this site signed and with t present clients' signatures of it; then
        the round's secrets are forgotten (a second request finds none and is refused)."""
        masking = self._restore(request.round, request.session)
        self.secrets.clear()
        reveal = masking.reveal(request.shares, present=request.present,
                                dropped=request.dropped, signatures=request.signatures)  # fmt: skip
        self._sent(request.round, "secagg-reveal",
                   b"".join([*reveal.b_shares.values(), *reveal.s_shares.values()]))  # fmt: skip
        return reveal

    def _note(self, number: int, session: str, **values: Any) -> None:
        """Remember ``values`` for the rest of round ``number`` (what an earlier round left is
        dropped)."""
        kept = dict(self.kept.load())
        if (kept.get("round"), kept.get("session")) != (number, session):
            kept = {"round": number, "session": session}
        self.kept.save({**kept, **values})

    def _round_notes(self, request: m.EvaluateRequest) -> tuple[list[str] | None, bool]:
        """The survivor set this site signed in the round of ``request`` (None: it signed
        none) and whether it uploaded an update in it; forgotten once read."""
        kept = self.kept.load()
        self.kept.clear()
        if (kept.get("round"), kept.get("session")) != (request.round, request.session):
            return None, False
        signed = kept.get(SURVIVORS)
        survivors = None if signed is None else [str(c) for c in json.loads(str(signed))]
        return survivors, bool(kept.get(UPLOADED, False))

    def _weights(self, roster: bytes, signature: bytes) -> dict[str, float]:
        """The members' weights of the roster the server sent, once accepted (CryptoError for
        a roster this site does not accept, or one without weights)."""
        accepted = received_roster(roster, signature, self.identity)
        return require_weights(accepted, "the server's roster")

    # -- training and upload -------------------------------------------------------------
    def train(self, request: m.TrainRequest) -> m.TrainReply:
        """Train (or find the round trained before a restart), then send the masked, encrypted,
        signed update, weighted by the weight the signed roster fixes for this site. A site that
        cannot mask as asked, or finds no weight for itself, refuses before training."""
        client = self._client()
        refusal = self.settings.refusal() if client.manifest.size else None
        if refusal is not None:  # before any DP step: the ledger is not touched
            return m.TrainReply(m.TrainReport(self.name, m.REFUSED, reason=refusal), None)
        if client.behind(request.round, request.last_applied):  # before any DP step, too
            return m.TrainReply(self._behind(request.round), None)
        mask, weight = None, 0.0
        if client.manifest.size:
            mask = self._mask(request)
            # before any DP step: the weight the signed roster fixes for this site (a roster
            # this site does not accept, or one without weights, stops here with nothing spent)
            weight = self._weights(request.roster, request.roster_signature)[self.name]
        try:
            result = client.train(request.round, on_step=self.on_step)
        except BudgetExhausted as exc:
            return m.TrainReply(m.TrainReport(self.name, m.BUDGET_EXHAUSTED, reason=str(exc)), None)
        update, seconds = None, 0.0
        if client.manifest.size:
            started = time.perf_counter()
            update = client.make_update(request.round, request.session, mask, weight=weight)
            seconds = time.perf_counter() - started
            self.egress.record(
                self.name,
                round_number=request.round,
                kind="update",
                payload=update,
                encrypted=self.settings.config.encryption,
                tensors=client.manifest.names,
                transport=self.settings.transport,
                key_fingerprint=client.codec.fingerprint,
                manifest_hash=client.manifest.digest,
                ledger_entry=client.trained_entry,
            )
            self._note(request.round, request.session, **{UPLOADED: True})
        steps = None if result.stats is None else int(result.stats.steps)
        report = m.TrainReport(self.name, m.TRAINED, result.resumed, steps, result.clamped,
                               encrypt_seconds=seconds)  # fmt: skip
        return m.TrainReply(report, update)

    def _behind(self, round_number: int) -> m.TrainReport:
        """This site missed an aggregate since it last judged one: it sits this round out and
        catches up at its aggregate (an update from older tensors would make sites in step
        refuse an honest aggregate; :mod:`secure_fedsa.site.aggregate_check`)."""
        reason = (
            f"missed the aggregate of a round before round {round_number}: catches up at this "
            "round's aggregate and trains from the next"
        )
        return m.TrainReport(self.name, m.BEHIND, reason=reason)

    def _mask(self, request: m.TrainRequest) -> ChunkMask | None:
        """The round's masks; with masking on a site never sends an unmasked update."""
        if not self.settings.masked:
            return None
        if request.masked_with is None:
            raise RoundFailed("masking is on but the server named no clients to mask with")
        masking = self._restore(request.round, request.session)
        seeds, context = masking.seeds(list(request.masked_with)), masking.context

        def mask(chunk: int, count: int, modulus: int):  # noqa: ANN202
            return chunk_mask(seeds, context=context, chunk=chunk, count=count, modulus=modulus)

        return mask

    # -- the aggregate -------------------------------------------------------------------
    def evaluate(self, request: m.EvaluateRequest) -> m.ApplyReport:
        """Verify, decrypt, check and apply the aggregate (or, without one, go back to the
        round's starting shared tensors); evaluate on the per-round samples. The reason for a
        rejection and the accuracies stay here unless the run releases its evaluation."""
        self.secrets.clear()  # the round is over for this site
        survivors, uploaded = self._round_notes(request)
        client, config = self._client(), self.settings.config
        status, decrypt, problems = m.NONE, 0.0, []
        if request.aggregate is None:
            client.keep_round_start(request.round)
        else:
            started = time.perf_counter()
            try:
                weights = self._weights(request.roster, request.roster_signature)
            except CryptoError as exc:  # not this federation's roster: no divisor to trust
                client.keep_round_start(request.round, judged=False)
                problems = [str(exc)]
            else:
                problems = client.apply_aggregate(
                    request.aggregate, request.round, request.session,
                    roster_weights=weights, survivors=survivors, uploaded=uploaded,
                )  # fmt: skip
            decrypt = time.perf_counter() - started
            status = m.REJECTED if problems else m.APPLIED
            note = {"round": request.round, "status": status, "problems": problems}
            _append(client.directory / AGGREGATES_FILE, note)
        started = time.perf_counter()
        limit = config.eval_examples_per_round
        private: dict[str, Any] = {"round": request.round}
        if client.trained_round == request.round and client.last_stats is not None:
            private.update(loss=client.last_stats.mean_loss, examples=client.last_stats.examples,
                           train_seconds=client.last_train_seconds)  # fmt: skip
        private["accuracy_subset"] = client.evaluate(limit)
        if len(client.data.validation):  # the same number of validation records
            private["accuracy_validation_subset"] = client.evaluate(limit, split="validation")
        evaluated = time.perf_counter() - started
        append_round(client.directory, private)
        self.private = {**private, "problems": problems}
        released = config.release_evaluation
        return m.ApplyReport(
            self.name,
            status,
            client.epsilon_spent,
            client.will_train(request.round + 1),
            accuracy=private["accuracy_subset"] if released else None,
            accuracy_validation=private.get("accuracy_validation_subset") if released else None,
            decrypt_seconds=decrypt,
            evaluate_seconds=evaluated,
        )

    # -- the end -------------------------------------------------------------------------
    def finish(self, request: m.FinishRequest) -> m.FinalReport:
        """Export the DP model, finish the site's own tensors without DP (``finish_steps``;
        after its last release, never sent), evaluate the final model on the whole test (and
        validation) split into the site's own evaluation.json."""
        self.secrets.clear()
        self.kept.clear()
        client, config = self._client(), self.settings.config
        labels, steps = list(self.settings.labels), config.finish_steps
        client.export(self.settings.adapter_dir, labels)  # the DP model, the client's release
        record: dict[str, Any] = {}
        state = None
        if steps:  # the DP model's accuracy first, then the finished one's
            record.update(_accuracies(client, None, suffix="_unfinished"))
            state = client.finish(steps)
            finish_export(client, client.directory, labels, state, steps)
        started = time.perf_counter()
        final = _accuracies(client, state)
        seconds = time.perf_counter() - started
        test = client.data.test.tensors[2]
        record = {
            "accuracy": final["accuracy"],
            "test_examples": len(test),
            "majority_class": majority_rate(test),
            "label_counts": label_counts(client, len(labels)),
            "label_names": labels,
            "finish_steps": steps,
            **{k: v for k, v in final.items() if k != "accuracy"},
            **record,
        }
        if "accuracy_validation" in record:
            record["validation_examples"] = len(client.data.validation)
        write_evaluation(client.directory, record)
        evaluation = (
            m.EvaluationReport(record["accuracy"], record["test_examples"],
                               record["majority_class"], record.get("accuracy_validation"))
            if config.release_evaluation
            else None
        )  # fmt: skip
        return m.FinalReport(self.name, privacy_report(client, config.delta), evaluation, seconds)

    def forget(self, request: m.ForgetRequest) -> m.Forgotten:
        """A failed round that stops the run: its secrets are of no further use."""
        self.secrets.clear()
        self.kept.clear()
        return m.Forgotten(self.name)

    # -- helpers -------------------------------------------------------------------------
    def _client(self) -> Client:
        if self.client is None:
            raise RoundFailed(f"{self.name}: this request needs the site's model and data")
        return self.client

    def _keep(self, masking: MaskingClient) -> None:
        roster = json.dumps(masking.roster.to_json(), sort_keys=True).encode()
        self.secrets.save({**masking.export(), "roster": roster})

    def _restore(self, number: int, session: str) -> MaskingClient:
        state = self.secrets.load()
        roster = (  # None only when nothing is kept: restore then says so
            parse_roster(json.loads(bytes(state["roster"])), "the kept roster")
            if "roster" in state
            else None
        )
        return MaskingClient.restore(state, self.identity.key, roster, session, number)  # type: ignore[arg-type]

    def _sent(self, number: int, kind: str, payload: bytes) -> None:
        self.egress.record(
            self.name,
            round_number=number,
            kind=kind,
            payload=payload,
            encrypted=kind == "secagg-shares",  # each share is encrypted to its recipient
            tensors=[],
            transport=self.settings.transport,
        )


HANDLERS: dict[type, Callable[[Participant, Any], Any]] = {
    m.KeysRequest: Participant.keys,
    m.SharesRequest: Participant.shares,
    m.TrainRequest: Participant.train,
    m.SurvivorsRequest: Participant.survivors,
    m.RevealRequest: Participant.reveal,
    m.EvaluateRequest: Participant.evaluate,
    m.FinishRequest: Participant.finish,
    m.ForgetRequest: Participant.forget,
}


def _accuracies(client: Client, state: dict | None, suffix: str = "") -> dict[str, float]:
    """Accuracy of ``client``'s current model (or of ``state``) on its whole test split, and
    on its validation split if it has one."""
    out = {f"accuracy{suffix}": client.evaluate(state=state)}
    if len(client.data.validation):
        out[f"accuracy_validation{suffix}"] = client.evaluate(split="validation", state=state)
    return out


def majority_rate(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent of ``labels`` (pure)."""
    if len(labels) == 0:
        return 0.0
    return float(torch.bincount(labels).max()) / len(labels)


def label_counts(client: Client, num_labels: int) -> list[int]:
    """How many of the client's records (train, validation and test) carry each label."""
    data = client.data
    held = torch.cat([d.tensors[2] for d in (data.train, data.validation, data.test)])
    return torch.bincount(held, minlength=num_labels).tolist()


def privacy_report(client: Client, delta: float) -> m.PrivacyReport | None:
    """ε spent and every DP event of the client's ledger (None without DP)."""
    if client.privacy is None:
        return None
    ledger = client.privacy.ledger
    entries = ledger.entries
    return m.PrivacyReport(
        epsilon=ledger.epsilon_spent,
        delta=delta,
        budget=ledger.identity.target_epsilon,
        history=tuple(
            m.LedgerEvent(e.round, e.noise_multiplier, e.sample_rate, e.steps, e.epsilon)
            for e in entries
        ),
        noise_multipliers=tuple(sorted({e.noise_multiplier for e in entries})),
        noise_multiplier=entries[-1].noise_multiplier if entries else None,
        sample_rate=entries[-1].sample_rate if entries else None,
        noise_source=tuple(sorted({e.noise_source for e in entries})),
        ledger_head=ledger.head,
    )


def _append(path: Path, record: dict) -> None:
    """The site's own log (kept on the site, never sent)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": time.time(), **record}) + "\n")
