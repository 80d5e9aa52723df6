"""The round engine: one phase-structured round, driven the same way by both transports.

Round r, as the server drives it (each phase one exchange of typed messages with the sites):

1. **mask set-up** (masking on): key adverts from the sites drawn this round, then their
   encrypted shares among those whose adverts verify (U1); U2, those whose shares arrived;
2. **train and upload**: each site of U2 (or every site drawn, masking off) trains with DP,
   charges its ledger, and sends its masked, encrypted, signed update (its shared tensors times
   the weight the signed roster fixes for it) with a report;
3. **aggregate**: the server validates and adds every update (rejections are recorded);
4. **consistency and unmask**: the sites whose update was added sign the survivor set (who was
   added, who masked and was not); with t valid signatures of that one set, relayed to each,
   they reveal the shares the server needs to remove the masks from the sum; the server signs
   the aggregate;
5. **check, apply and evaluate**: every site still connected verifies, decrypts and checks the
   aggregate (divided by the roster weights of the contributors it names), loads it (or keeps
   its round-start shared tensors), evaluates, reports;
6. **record**: one line of metrics.jsonl (:mod:`secure_fedsa.engine.record`).

A site forgets the round's masking secrets at its last use of them (its reveal, or the round's
evaluate), or, when a failed round stops the run, at a **forget** message.

After the last round a **finish** exchange has every site export, finish and evaluate its final
model; the server writes summary.json (:mod:`secure_fedsa.engine.summary`).

A round fails when fewer than t sites take part in masking or unmasking, or when fewer than
``min_clients`` updates were accepted. A transport whose sites may come back later (Flower) stops
the run there (``stop_on_failure``: summary.json says failed; resume from metrics.jsonl); one
that would only fail again (in-process) records the round without an aggregate and goes on.

A :class:`Transport` only moves messages: it names the sites it can reach (``addresses``) and
delivers one request per address, returning the replies and, for the sites that did not answer,
why (dropouts). The engine checks every reply's type: a malformed reply is a dropout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from secure_fedsa.config import RunConfig
from secure_fedsa.engine import messages as m
from secure_fedsa.engine.aggregation import (
    ServerKeys,
    ServerRound,
    last_applied_round,
    ledger_heads_from_metrics,
)
from secure_fedsa.engine.record import RoundRecord
from secure_fedsa.engine.summary import completed_summary, failed_summary
from secure_fedsa.errors import SecureFedsaError
from secure_fedsa.model.sharing import Manifest
from secure_fedsa.sampling import sampled
from secure_fedsa.secagg.protocol import KeyAdvert, Reveal, fixed_threshold
from secure_fedsa.secagg.protocol import RoundFailed as MaskingFailed
from secure_fedsa.site.rundir import RunDirectory

Address = Hashable  # a client id in-process, a node id in Flower


class RoundFailed(SecureFedsaError):
    """A round could not produce an aggregate, and the transport stops the run there."""


class Transport(Protocol):
    def addresses(self) -> list[Address]: ...
    def name(self, address: Address) -> str:
        """What to call a site before it has said who it is."""
        ...

    def exchange(
        self, requests: Mapping[Address, m.Request]
    ) -> tuple[dict[Address, Any], dict[Address, str]]:
        """Deliver each request; (replies, why the others did not answer) by address."""
        ...


@dataclass
class Observer:
    """What the engine tells its operator (console or log); silent by default."""

    round_started: Callable[[int, int], None] = lambda number, total: None
    round_recorded: Callable[[RoundRecord], None] = lambda record: None
    warning: Callable[[str], None] = lambda text: None
    message: Callable[[str], None] = lambda text: None


@dataclass(frozen=True)
class EngineSettings:
    config: RunConfig
    session: str
    manifest: Manifest
    dataset: str  # what summary.json names as the run's data
    min_clients: int = 1
    stop_on_failure: bool = False
    resume_hint: str = ""

    @property
    def threshold(self) -> int:
        config = self.config
        return fixed_threshold(
            config.masking_threshold, config.clients_per_round or config.num_clients
        )


@dataclass
class _Round:
    record: RoundRecord
    drawn: list[Address]
    server: ServerRound
    out: set[Address] = field(default_factory=set)  # dropped out of this round
    able: bool = False  # some site can train next round


class RoundEngine:
    def __init__(
        self,
        transport: Transport,
        keys: ServerKeys,
        rundir: RunDirectory,
        settings: EngineSettings,
        observer: Observer | None = None,
    ) -> None:
        self.transport, self.keys, self.rundir, self.settings = transport, keys, rundir, settings
        self.observer = observer or Observer()
        self.config = settings.config
        self.names: dict[Address, str] = {}  # address -> client id, as the sites said
        self.seen: set[Address] = set()
        # the last ledger head accepted from each client, from this server's own records (P5)
        self.heads = ledger_heads_from_metrics(rundir.metrics())
        # the last round whose aggregate some site applied, from the same records: a site that
        # judged no aggregate since is told it is behind (the drift bound's ratchet)
        self.last_applied = last_applied_round(rundir.metrics())

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> dict:
        """Every round left, then the finish; returns the summary written."""
        self.run_rounds()
        return self.finish()

    def run_rounds(self) -> None:
        """Every round left (each recorded as it ends), or until nobody can train."""
        for number in range(self.rundir.completed_rounds() + 1, self.config.rounds + 1):
            self.observer.round_started(number, self.config.rounds)
            record, able = self.round(number)
            self.rundir.append_metrics(record.to_json())
            self.observer.round_recorded(record)
            if not record.trained() and not able:
                self.observer.message("no client can train within its budget: stopping")
                break

    def round(self, number: int) -> tuple[RoundRecord, bool]:
        """One round: its record, and whether some site can train the next one."""
        record = RoundRecord(number, released=self.config.release_evaluation)
        addresses = self.transport.addresses()
        gone = self.seen - set(addresses)
        self.seen |= set(addresses)
        drawn = sampled(addresses, self.config.clients_per_round, seed=self.config.seed,
                        round_number=number)  # fmt: skip
        server = ServerRound(
            self.keys, self.settings.manifest, number, session=self.settings.session,
            dp=self.config.dp, heads=self.heads, masked=self.config.masking
            and self.config.encryption, threshold=self.settings.threshold,
        )  # fmt: skip
        state = _Round(record, drawn, server)
        aggregate = None
        try:
            senders = self._mask_setup(state) if server.masking is not None else drawn
            self._train(state, senders)
            aggregate = self._aggregate(state)
        except MaskingFailed as failure:
            self._failed(state, str(failure), gone)
        self._apply(state, addresses, aggregate)
        self._connections(state, gone)
        return record, state.able

    # -- phases ----------------------------------------------------------------------------
    def _mask_setup(self, state: _Round) -> list[Address]:
        """Key adverts, then shares among U1; the addresses of U2 (who trains)."""
        record, server = state.record, state.server
        record.masking = {"threshold": self.settings.threshold}
        request = server.keys_request(self.last_applied)
        replies = self._exchange(state, {a: request for a in state.drawn}, "secagg-keys",
                                 (KeyAdvert, m.TrainReport))  # fmt: skip
        adverts: dict[str, Address] = {}
        for address, reply in replies.items():
            if isinstance(reply, m.TrainReport):  # declined: it cannot train this round
                self.names[address] = reply.client
                record.client(reply.client).trained(reply)
            else:
                adverts[reply.client] = address
        if not adverts and replies:  # every site that answered declined: nobody masks or trains
            record.masking = {}
            return []
        try:
            u1 = server.collect_adverts([r for r in replies.values() if isinstance(r, KeyAdvert)])
        except MaskingFailed as exc:
            record.masking["failed"] = str(exc)
            raise
        for advert in u1:  # verified against the roster: the site is who it says
            self.names[adverts[advert.client]] = advert.client
        request = m.SharesRequest(server.number, server.session, tuple(u1))
        replies = self._exchange(state, {adverts[a.client]: request for a in u1},
                                 "secagg-shares", (m.Shares,))  # fmt: skip
        shares = {self._name(a): dict(r.shares) for a, r in replies.items()}
        try:
            u2 = server.collect_shares(shares)
        except MaskingFailed as exc:
            record.masking["failed"] = str(exc)
            raise
        record.masking.update(participants=sorted(server.masking.adverts), masked_with=sorted(u2))  # type: ignore[union-attr]
        return [adverts[c] for c in sorted(u2)]

    def _train(self, state: _Round, senders: list[Address]) -> None:
        record, server = state.record, state.server
        if not senders:
            return
        masked_with = tuple(record.masking["masked_with"]) if server.masking else None
        request = m.TrainRequest(server.number, server.session, masked_with,
                                 *server.signed_roster(), self.last_applied)  # fmt: skip
        replies = self._exchange(state, {a: request for a in senders}, "train", (m.TrainReply,))
        for address, reply in sorted(replies.items(), key=lambda item: item[1].report.client):
            cid = self.names.setdefault(address, reply.report.client)
            record.client(cid).trained(reply.report)
            if reply.report.status != m.TRAINED or server.aggregator is None:
                continue
            if reply.update is None:
                record.rejected.append({"client": cid, "reason": "no update in the reply"})
                continue
            record.upload_bytes += len(reply.update)
            started = time.perf_counter()
            sender, reason = server.add(reply.update)
            record.client(cid).seconds["aggregate"] = time.perf_counter() - started
            if reason is not None:
                record.rejected.append({"client": cid, "reason": reason})
            elif (head := server.accepted_head(sender)) is not None:  # type: ignore[arg-type]
                record.client(sender).ledger = head.to_json()  # type: ignore[arg-type]

    def _aggregate(self, state: _Round) -> bytes | None:
        """Enough updates? Unmask and sign the sum; None when nothing was shared."""
        record, server = state.record, state.server
        accepted = server.accepted
        if server.aggregator is None or (not accepted and not record.trained()):
            return None
        if len(accepted) < self.settings.min_clients:
            raise MaskingFailed(
                f"{len(accepted)} accepted update(s), min-clients is {self.settings.min_clients}"
            )
        started = time.perf_counter()
        offsets = self._unmask(state) if server.masking is not None else None
        aggregate = server.result(offsets)
        record.server_seconds = time.perf_counter() - started
        record.aggregate = {"contributors": accepted}
        return aggregate

    def _unmask(self, state: _Round) -> list:
        """Consistency, then unmasking: the present sites sign the survivor set, and reveal
        only with t valid signatures of that same set (SecAgg against a server that lies)."""
        record, server = state.record, state.server
        present = tuple(sorted(server.accepted))
        dropped = tuple(sorted(set(record.masking["masked_with"]) - set(present)))
        survivors = m.SurvivorsRequest(server.number, server.session, present, dropped)
        replies = self._exchange(state, self._present(state, present, lambda cid: survivors),
                                 "secagg-survivors", (m.SurvivorSignature,))  # fmt: skip
        signed = {r.client: r.signature for a, r in replies.items() if r.client == self._name(a)}
        signatures = server.survivor_signatures(signed)

        def reveal_request(cid: str) -> m.RevealRequest:
            shares = server.masking.shares_for(cid)  # type: ignore[union-attr]
            return m.RevealRequest(server.number, server.session, present, dropped, shares,
                                   signatures)  # fmt: skip

        requests = self._present(state, present, reveal_request)
        replies = self._exchange(state, requests, "secagg-reveal", (Reveal,))
        reveals = [r for a, r in replies.items() if r.client == self._name(a)]
        record.masking.update(dropped=list(dropped), revealed_by=sorted(r.client for r in reveals))
        return server.unmask(reveals)

    def _present(
        self, state: _Round, present: tuple[str, ...], request: Callable[[str], m.Request]
    ) -> dict[Address, m.Request]:
        """``request(cid)`` for each present client still in the round, by address."""
        where = {cid: a for a, cid in self.names.items() if cid in present and a not in state.out}
        return {where[cid]: request(cid) for cid in sorted(where)}

    def _apply(self, state: _Round, addresses: list[Address], aggregate: bytes | None) -> None:
        """Every site the transport reaches checks, applies and evaluates, also one that dropped
        out of an earlier phase of this round: a site that misses an aggregate sits the next
        round out (the drift bound's ratchet). The aggregate's status is what they report (a
        status code, never a reason)."""
        record, server = state.record, state.server
        request = m.EvaluateRequest(server.number, server.session, aggregate,
                                    *server.signed_roster())  # fmt: skip
        targets = {a: request for a in addresses}
        if aggregate is not None:
            record.download_bytes += len(aggregate) * len(targets)
        replies = self._exchange(state, targets, "evaluate", (m.ApplyReport,))
        rejected_by = {}
        for address, report in replies.items():
            cid = self.names.setdefault(address, report.client)
            entry = record.client(cid)
            if entry.status is None:
                entry.status = m.NOT_SAMPLED if address not in state.drawn else m.NOT_TRAINED
            entry.applied(report)
            state.able |= report.can_train_next
            if report.aggregate == m.REJECTED:
                rejected_by[cid] = m.REJECTED
            elif report.aggregate == m.APPLIED:
                self.last_applied = record.round
        if aggregate is not None:
            status = m.REJECTED if rejected_by else m.APPLIED
            record.aggregate.update(status=status, rejected_by=dict(sorted(rejected_by.items())))
        if self.config.clients_per_round is not None:
            record.sampled = sorted(self._name(a) for a in state.drawn)

    def _failed(self, state: _Round, reason: str, gone: set[Address]) -> None:
        record = state.record
        record.aggregate = {"status": "failed", "reason": reason}
        for address in state.drawn:
            if address not in state.out and address in self.names:
                entry = record.client(self.names[address])
                entry.status = entry.status or m.NOT_TRAINED
        if not self.settings.stop_on_failure:
            self.observer.warning(f"round {record.round}: no aggregate: {reason}")
            return
        self._connections(state, gone)
        if self.config.clients_per_round is not None:
            record.sampled = sorted(self._name(a) for a in state.drawn)
        # no evaluate of this round will come: the sites drawn forget its secrets now (one
        # that does not answer is already out of the round; its secrets die with its process)
        request = m.ForgetRequest(record.round, self.settings.session)
        self.transport.exchange({a: request for a in state.drawn})
        reason = f"round {record.round} failed: {reason}"
        summary = failed_summary(self.rundir.metrics(), record.to_json(), reason,
                                 self.settings.resume_hint)  # fmt: skip
        self.rundir.write_json("summary.json", summary)
        self.observer.warning(f"{reason}; {self.settings.resume_hint}")
        raise RoundFailed(reason)

    def _connections(self, state: _Round, gone: set[Address]) -> None:
        """Sites seen in an earlier round and unreachable now (a site that came back under a
        new address answered under its name: it is not a dropout)."""
        for address in sorted(gone, key=self._name):
            if self.names.get(address) in state.record.clients:
                self.seen.discard(address)
            else:
                state.record.drop(self._name(address), "connect", "not connected")

    # -- the end ---------------------------------------------------------------------------
    def finish(self) -> dict:
        """Every reachable site exports, finishes and evaluates its final model; summary.json."""
        number = max(self.rundir.completed_rounds(), 1)
        request = m.FinishRequest(number, self.settings.session)
        addresses = self.transport.addresses()
        replies, failures = self.transport.exchange({a: request for a in addresses})
        reports = {}
        for address, reply in replies.items():
            if isinstance(reply, m.FinalReport):
                reports[self.names.setdefault(address, reply.client)] = reply
        for address, reason in sorted(failures.items(), key=lambda item: self._name(item[0])):
            self.observer.warning(f"{self._name(address)} did not finish: {reason}")
        summary = completed_summary(
            self.config,
            dataset=self.settings.dataset,
            metrics=self.rundir.metrics(),
            reports=reports,
            key_fingerprint=self.keys.codec.fingerprint,
        )
        self.rundir.write_json("summary.json", summary)
        return summary

    # -- helpers ---------------------------------------------------------------------------
    def _name(self, address: Address) -> str:
        return self.names.get(address) or self.transport.name(address)

    def _exchange(
        self,
        state: _Round,
        requests: Mapping[Address, m.Request],
        phase: str,
        expected: tuple[type, ...],
    ) -> dict[Address, Any]:
        """One phase's messages; a site that does not answer, or answers with something else
        than ``expected``, drops out of the round (recorded once: a site already out that fails
        the round's evaluate too is not news)."""
        replies, failures = self.transport.exchange(requests)
        good = {}
        for address, reply in replies.items():
            if isinstance(reply, expected):
                good[address] = reply
            else:
                failures[address] = f"malformed reply ({phase})"
        for address, reason in sorted(failures.items(), key=lambda item: self._name(item[0])):
            if address in state.out:
                continue
            state.out.add(address)
            state.record.drop(self._name(address), phase, reason)
            self.observer.warning(
                f"round {state.record.round}: {self._name(address)} dropped out ({phase}): {reason}"
            )
        return good
