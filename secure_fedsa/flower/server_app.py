"""The ServerApp: per round, train on every connected site, add the updates, send the sum back.

Round r, over Flower's Message API:

1. ``train`` to every connected node; each replies with its encrypted, signed update (an
   opaque byte array) and a report (status, ε). Each update goes to
   :meth:`secure_fedsa.server.Aggregator.add`, which verifies the sender's signature against the
   roster and validates the rest, or records the rejection.
2. With at least ``min-clients`` accepted updates, the aggregate (still ciphertext: the server
   holds no key that decrypts; signed with the server's identity) goes back to every site that
   answered in an ``evaluate`` message; the sites verify, decrypt, check the values against what
   honest training can produce, and apply it or keep their previous shared tensors. They report
   a status code (applied / rejected), ε, and held-out accuracy only if ``report-accuracy`` is
   true (a leak channel: it is computed from decrypted values). With fewer accepted updates, the
   round fails: ``summary.json`` says so, nothing of the round enters ``metrics.jsonl``, and the
   ServerApp exits with an error. Resume with ``--run-config 'resume-dir="RUN_DIR"'``.

A node that does not answer within ``round-timeout`` seconds, or answers with an error (its
ClientApp raised, or the SuperLink reports it unavailable), is a dropout of that round, recorded
in ``metrics.jsonl``.

The server's run directory holds ``config.json``, ``deployment.json``, ``setup.json``,
``metrics.jsonl`` and ``summary.json``: no key that can decrypt, no plaintext update. The sites
keep their own state, ledgers and egress records.
"""

from __future__ import annotations

import os
import time
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import NoReturn

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from secure_fedsa import __version__
from secure_fedsa.crypto.signing import (
    ROSTER_FILE,
    SERVER_IDENTITY,
    identity_path,
    load_identity,
    load_roster,
)
from secure_fedsa.errors import CryptoError, SecureFedsaError
from secure_fedsa.flower import protocol as p
from secure_fedsa.flower import secagg_records as sr
from secure_fedsa.node import (
    ledger_heads_from_metrics,
    new_aggregator,
    new_session,
    server_manifest,
    submit,
)
from secure_fedsa.rundir import RunDirectory
from secure_fedsa.sampling import sampled
from secure_fedsa.secagg import MaskingServer, fixed_threshold
from secure_fedsa.secagg import RoundFailed as MaskingFailed
from secure_fedsa.server import Aggregator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POLL_SECONDS = 1.0
NOT_SAMPLED = "not sampled"  # a site not drawn this round: it only applies and evaluates

app = ServerApp()


class RoundFailed(SecureFedsaError):
    """Fewer than min-clients sites contributed to a round."""


def _server_codec(deployment: p.Deployment):  # noqa: ANN202 - a server codec
    from secure_fedsa.crypto.plaintext import PlaintextCodec

    if not deployment.config.encryption:
        return PlaintextCodec()
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec

    return CKKSServerCodec.from_bundle(_keys_dir(deployment) / "server.keys")


def _keys_dir(deployment: p.Deployment) -> Path:
    if not deployment.keys_dir:
        raise SecureFedsaError(
            'give the server\'s keys with run config keys-dir="PATH" (a directory on the '
            "SuperLink machine holding server.keys, roster.json and identities/server.key from "
            "`secure-fedsa keys init`)"
        )
    return Path(deployment.keys_dir)


def exchange(
    grid: Grid, messages: dict[int, Message], timeout: float
) -> tuple[dict[int, Message], dict[int, str]]:
    """Send one message per node; returns (replies, failures) keyed by node id, within timeout."""
    node_ids = list(messages)
    pushed = list(grid.push_messages([messages[n] for n in node_ids])) if node_ids else []
    if len(pushed) != len(node_ids):  # the SuperLink refused the batch (e.g. too large)
        pushed = [None] * len(node_ids)
    pending = {mid: n for mid, n in zip(pushed, node_ids, strict=True) if mid}
    failures = {
        n: "the SuperLink did not accept the message"
        for n, mid in zip(node_ids, pushed, strict=True)
        if not mid
    }
    replies: dict[int, Message] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is None:
                continue
            if reply.has_error():
                failures[node] = f"error {reply.error.code}: {reply.error.reason}"
            else:
                replies[node] = reply
        if pending:
            time.sleep(POLL_SECONDS)
    for node in pending.values():
        failures[node] = f"no reply within {timeout:g} s"
    return replies, failures


class FlowerFederation:
    """The server side of a deployment: one run directory, one key set, the rounds."""

    def __init__(self, grid: Grid, deployment: p.Deployment) -> None:
        self.grid = grid
        self.deployment = deployment
        self.config = deployment.config
        self.digest = p.config_digest(self.config)
        self.codec = _server_codec(deployment)
        keys = _keys_dir(deployment)
        self.roster = load_roster(keys / ROSTER_FILE)
        self.identity = load_identity(identity_path(keys, SERVER_IDENTITY))
        if self.identity.key.public_bytes != self.roster.server:
            raise SecureFedsaError(f"{keys}: identities/server.key does not belong to roster.json")
        self.manifest = server_manifest(self.config)
        if deployment.resume_dir:
            self.rundir = RunDirectory.resume(Path(deployment.resume_dir), self.config)
            self.session = self.rundir.stored_session() or new_session()
        else:
            self.session = new_session()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(deployment.run_dir or f"runs/{stamp}-flower-{self.config.method}")
            self.rundir = RunDirectory.create(path, self.config)
            self.rundir.write_json(
                "setup.json",
                {
                    "transport": p.TRANSPORT,
                    "manifest": self.manifest.to_list(),
                    "manifest_hash": self.manifest.digest,
                    "shared_values": self.manifest.size,
                    "key_fingerprint": self.codec.fingerprint,
                    "roster_digest": self.roster.digest,
                    "session": self.session,
                    "protections_off": self.config.protections,
                },
            )
        self.rundir.write_json(
            "deployment.json",
            {
                "secure_fedsa": __version__,
                "min_clients": deployment.min_clients,
                "clients": deployment.clients,
                "round_timeout": deployment.round_timeout,
                "config_digest": self.digest,
                "report_accuracy": deployment.report_accuracy,
                "server_holds_secret_key": False,
            },
        )
        self.clients: dict[int, str] = {}  # node id -> client id, as reported
        # the last ledger head accepted from each site, from this server's own round records
        self.ledger_heads = ledger_heads_from_metrics(self.rundir.metrics())

    # -- helpers -------------------------------------------------------------------------
    def _message(self, node: int, kind: str, round_number: int, **extra) -> Message:  # noqa: ANN003
        settings = {"round": round_number, "config-digest": self.digest, "session": self.session}
        content = RecordDict({p.CONFIG: ConfigRecord({**settings, **extra})})
        return Message(
            content,
            dst_node_id=node,
            message_type=kind,
            group_id=str(round_number),
            ttl=self.deployment.round_timeout,
        )

    def _name(self, node: int) -> str:
        return self.clients.get(node, f"node-{node}")

    def wait_for_nodes(self) -> list[int]:
        want, least = self.deployment.clients, self.deployment.min_clients
        deadline = time.monotonic() + self.deployment.wait_for_nodes
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= want or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if len(nodes) < least:
            raise RoundFailed(
                f"only {len(nodes)} SuperNode(s) connected after "
                f"{self.deployment.wait_for_nodes:g} s; min-clients is {least}"
            )
        return nodes

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.time()
        for warning in self.config.protections:
            log(WARNING, "WARNING: %s", warning)
        first = self.rundir.completed_rounds() + 1
        known: set[int] = set(self.wait_for_nodes())
        final_sent = False
        final: dict[str, dict] = {}
        for round_number in range(first, self.config.rounds + 1):
            record, final = self.run_round(round_number, known)
            self.rundir.append_metrics(record)
            log(INFO, "%s", _round_line(record, self.config.rounds))
            final_sent = round_number == self.config.rounds
            # (with clients per round, the sites not drawn may still train in a later round)
            if self.config.clients_per_round is None and not any(
                c.get("status") == "trained" for c in record["clients"].values()
            ):
                log(WARNING, "no client can train within its budget: stopping")
                break
        if not final_sent:
            final = self.final_evaluation(self.rundir.completed_rounds())
        return self.finish(final, time.time() - start)

    def run_round(self, round_number: int, known: set[int]) -> tuple[dict, dict[str, dict]]:
        started = time.time()
        nodes = sorted(self.grid.get_node_ids())
        record: dict = {
            "round": round_number,
            "transport": p.TRANSPORT,
            "nodes": len(nodes),
            "clients": {},
            "rejected": [],
            "dropouts": [],
            "upload_bytes": 0,
            "download_bytes": 0,
        }
        gone = known - set(nodes)
        known.update(nodes)
        # 1. train
        aggregator = new_aggregator(
            self.codec,
            self.manifest,
            round_number,
            session=self.session,
            roster=self.roster,
            key=self.identity.key,
            dp=self.config.dp,
            ledger_heads=self.ledger_heads,
        )
        # the sites of this round: K of the connected nodes, drawn from the seed and the round
        drawn = sampled(
            nodes, self.config.clients_per_round, seed=self.config.seed, round_number=round_number
        )
        masking, train_nodes, extra = None, drawn, {}
        if aggregator is not None and self.masked:
            masking, train_nodes = self.masking_setup(round_number, drawn, record)
            extra = {"masked-with": sorted(masking.masked_with)}
        messages = {
            n: self._message(n, MessageType.TRAIN, round_number, **extra) for n in train_nodes
        }
        replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
        answered = []
        for node, reply in sorted(replies.items()):
            report = _report(reply)
            if report is None:
                failures[node] = "malformed reply (no report)"
                continue
            cid = str(report.pop("client-id"))
            self.clients[node] = cid
            record["clients"][cid] = report
            answered.append(node)
            if aggregator is None or report.get("status") != "trained":
                continue
            array = _array(reply.content, p.UPDATE)
            if array is None:
                record["rejected"].append({"client": cid, "reason": "no update in the reply"})
                continue
            record["upload_bytes"] += len(array.data)
            reason = (
                f"unexpected array type {array.stype!r}"
                if array.stype != p.ARRAY_STYPE
                else submit(aggregator, array.data)
            )
            if reason is not None:
                record["rejected"].append({"client": cid, "reason": reason})
            elif cid in aggregator.accepted_heads:  # the ledger head this server accepted (P5)
                head = aggregator.accepted_heads[cid]
                report["ledger"] = head.to_json()
                self.ledger_heads[cid] = (round_number, head)
        for node in sorted(gone):  # a site that came back has a new node id: not a dropout
            if self._name(node) in record["clients"]:
                known.discard(node)
            else:
                record["dropouts"].append(
                    {"client": self._name(node), "phase": "connect", "reason": "not connected"}
                )
        for node, reason in sorted(failures.items()):
            record["dropouts"].append(
                {"client": self._name(node), "phase": "train", "reason": reason}
            )
            log(WARNING, "round %d: %s dropped out: %s", round_number, self._name(node), reason)
        if self.config.clients_per_round is not None:
            record["sampled"] = sorted(self._name(n) for n in drawn)
        accepted = len(aggregator.accepted) if aggregator is not None else len(answered)
        trained = sum(c.get("status") == "trained" for c in record["clients"].values())
        if trained and accepted < self.deployment.min_clients:
            self._fail(round_number, record, accepted)
        # 2. apply and evaluate: the sites that trained and every site not drawn this round
        final_round = round_number == self.config.rounds
        messages = {
            n: self._message(n, MessageType.EVALUATE, round_number, final=final_round)
            for n in [*answered, *(n for n in nodes if n not in drawn)]
        }
        if aggregator is not None and aggregator.accepted:
            offsets = None
            if masking is not None:
                offsets = self.unmask(round_number, masking, aggregator, record)
            aggregate = aggregator.result(offsets)
            array = Array(
                dtype=p.ARRAY_DTYPE, shape=(len(aggregate),), stype=p.ARRAY_STYPE, data=aggregate
            )
            for message in messages.values():
                message.content[p.AGGREGATE] = ArrayRecord({p.AGGREGATE: array})
                record["download_bytes"] += len(aggregate)
        replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
        final: dict[str, dict] = {}
        accuracies = []
        rejected_by: dict[str, str] = {}
        for node, reply in sorted(replies.items()):
            report = _report(reply)
            if report is None or "aggregate" not in report:
                failures[node] = "malformed reply (no report)"
                continue
            cid = str(report.pop("client-id"))
            self.clients[node] = cid
            entry = record["clients"].setdefault(cid, {})
            if node not in drawn:
                entry.setdefault("status", NOT_SAMPLED)
            entry["aggregate"] = report.get("aggregate")
            entry["epsilon_spent"] = report.get("epsilon")
            if report.get("aggregate") == p.AGGREGATE_REJECTED:
                rejected_by[cid] = p.AGGREGATE_REJECTED  # a status code, never the reason
            if "accuracy" in report:  # only with report-accuracy = true
                entry["accuracy_subset"] = report["accuracy"]
                accuracies.append(float(report["accuracy"]))
            if "validation-accuracy" in report:
                entry["accuracy_validation_subset"] = report["validation-accuracy"]
            if report.get("final"):
                final[cid] = _final(report)
        if aggregator is not None and aggregator.accepted:
            record["aggregate"] = {
                "contributors": list(aggregator.accepted),
                "status": "rejected" if rejected_by else "applied",
                "rejected_by": rejected_by,
            }
        for node, reason in sorted(failures.items()):
            record["dropouts"].append(
                {"client": self._name(node), "phase": "evaluate", "reason": reason}
            )
        record["contributors"] = accepted
        record["mean_accuracy"] = sum(accuracies) / len(accuracies) if accuracies else None
        record["seconds"] = time.time() - started
        return record, final

    # -- secure aggregation (secure_fedsa.secagg; messages: secure_fedsa.flower.secagg_records)
    @property
    def masked(self) -> bool:
        return self.config.masking and self.config.encryption

    def masking_setup(
        self, round_number: int, nodes: list[int], record: dict
    ) -> tuple[MaskingServer, list[int]]:
        """Phases 1 and 2: key adverts from every node, shares among those that advertised.
        Returns the round's masking server and the nodes that may train (U2)."""
        threshold = fixed_threshold(self.config.masking_threshold, self.deployment.round_clients)
        masking = MaskingServer(self.roster, self.session, round_number, threshold)
        roster = sr.roster_settings(self.roster, self.identity.key)
        messages = {n: self._message(n, sr.KEYS, round_number, **roster) for n in nodes}
        replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
        by_client: dict[str, int] = {}
        adverts = []
        for node, reply in sorted(replies.items()):
            try:
                advert = sr.advert_from(reply.content.config_records[p.SECAGG])
            except (KeyError, CryptoError):
                failures[node] = "malformed key advertisement"
                continue
            by_client[advert.client] = node
            adverts.append(advert)
        self._dropouts(record, failures, "secagg-keys", round_number)
        try:
            u1 = masking.collect_adverts(adverts)  # only adverts that verify against the roster
            for advert in u1:
                self.clients[by_client[advert.client]] = advert.client
            messages = {
                by_client[a.client]: self._message(by_client[a.client], sr.SHARES, round_number)
                for a in u1
            }
            for message in messages.values():
                message.content[p.SECAGG] = sr.adverts_record(u1)
            replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
            shares = {}
            for node, reply in sorted(replies.items()):
                if p.SECAGG in reply.content.config_records:
                    shares[self._name(node)] = sr.shares_from(
                        reply.content.config_records[p.SECAGG]
                    )
                else:
                    failures[node] = "malformed share message"
            self._dropouts(record, failures, "secagg-shares", round_number)
            u2 = masking.collect_shares(shares)
        except MaskingFailed as exc:
            record["masking"] = {"threshold": threshold, "failed": str(exc)}
            self._fail(round_number, record, len(masking.adverts), reason=str(exc))
        record["masking"] = {
            "threshold": threshold,
            "participants": sorted(masking.adverts),
            "masked_with": sorted(u2),
        }
        return masking, sorted(by_client[c] for c in u2)

    def unmask(
        self, round_number: int, masking: MaskingServer, aggregator: Aggregator, record: dict
    ) -> list:
        """Phase 4: the accepted clients reveal their shares; what to subtract from the sum."""
        present = list(aggregator.accepted)
        dropped = sorted(masking.masked_with - set(present))
        nodes = {cid: node for node, cid in self.clients.items() if cid in present}
        messages = {}
        for cid, node in nodes.items():
            message = self._message(
                node, sr.REVEAL, round_number, present=sorted(present), dropped=dropped
            )
            message.content[p.SECAGG] = sr.shares_record(masking.shares_for(cid))
            messages[node] = message
        replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
        reveals = []
        for node, reply in sorted(replies.items()):
            try:
                reveal = sr.reveal_from(reply.content.config_records[p.SECAGG])
            except (KeyError, CryptoError):
                failures[node] = "malformed reveal"
                continue
            if reveal.client == self._name(node):
                reveals.append(reveal)
        self._dropouts(record, failures, "secagg-reveal", round_number)
        record["masking"].update(dropped=dropped, revealed_by=sorted(r.client for r in reveals))
        try:
            return masking.unmasking_offsets(
                reveals, present=present, **_shape(self.codec.mask_shape(aggregator.n_values))
            )
        except (MaskingFailed, CryptoError) as exc:
            self._fail(round_number, record, len(reveals), reason=f"unmasking failed: {exc}")

    def _dropouts(self, record: dict, failures: dict[int, str], phase: str, round_number: int):  # noqa: ANN202
        for node, reason in sorted(failures.items()):
            record["dropouts"].append({"client": self._name(node), "phase": phase,
                                       "reason": reason})  # fmt: skip
            log(WARNING, "round %d: %s dropped out (%s): %s", round_number, self._name(node),
                phase, reason)  # fmt: skip

    def final_evaluation(self, round_number: int) -> dict[str, dict]:
        nodes = sorted(self.grid.get_node_ids())
        messages = {
            n: self._message(n, MessageType.EVALUATE, max(round_number, 1), final=True)
            for n in nodes
        }
        replies, _ = exchange(self.grid, messages, self.deployment.round_timeout)
        final = {}
        for reply in replies.values():
            report = _report(reply)
            if report is None or not report.get("final"):
                continue
            final[str(report["client-id"])] = _final(report)
        return final

    def _fail(
        self, round_number: int, record: dict, accepted: int, reason: str | None = None
    ) -> NoReturn:
        reason = f"round {round_number} failed: " + (
            reason or f"{accepted} accepted update(s), min-clients is {self.deployment.min_clients}"
        )
        self.rundir.write_json(
            "summary.json",
            {
                "status": "failed",
                "failed_round": round_number,
                "rounds_completed": self.rundir.completed_rounds(),
                "reason": reason,
                "round": record,
                "resume": (
                    "restart the missing SuperNodes (their state and ledgers are on disk), then "
                    f"flwr run . CONNECTION --run-config 'resume-dir=\"{self.rundir.path}\"'"
                ),
            },
        )
        log(ERROR, "%s; resume with run config resume-dir=%s", reason, self.rundir.path)
        raise RoundFailed(reason)

    def finish(self, final: dict[str, dict], seconds: float) -> dict:
        accuracies = [v["accuracy"] for v in final.values() if v["accuracy"] is not None]
        validation = {
            c: v["validation"] for c, v in final.items() if v.get("validation") is not None
        }
        summary = {
            "status": "completed",
            "transport": p.TRANSPORT,
            "method": self.config.method,
            "dataset": self.config.dataset,
            "rounds_completed": self.rundir.completed_rounds(),
            "differential_privacy": self.config.dp,
            "encryption": self.config.encryption,
            "protections_off": self.config.protections,
            "accuracy": {
                "per_client": {cid: v["accuracy"] for cid, v in final.items()},
                "mean": sum(accuracies) / len(accuracies) if accuracies else None,
                "validation_per_client": validation or None,
                "validation_mean": sum(validation.values()) / len(validation)
                if validation
                else None,
                "reported_by_sites": self.deployment.report_accuracy,
            },
            "finish_steps": self.config.finish_steps,
            "privacy": {
                cid: {"epsilon": v["epsilon"], "delta": self.config.delta}
                for cid, v in final.items()
            }
            if self.config.dp
            else "no differential privacy",
            "key_fingerprint": self.codec.fingerprint,
            "rejected_aggregates": [
                {"round": m["round"], "rejected_by": m["aggregate"]["rejected_by"]}
                for m in self.rundir.metrics()
                if (m.get("aggregate") or {}).get("status") == "rejected"
            ],
            "seconds": seconds,
        }
        self.rundir.write_json("summary.json", summary)
        log(INFO, "run directory: %s", self.rundir.path)
        return summary


def _final(report: dict) -> dict:
    """What a site's final report says (accuracies only with report-accuracy = true)."""
    return {
        "accuracy": report.get("final-accuracy"),
        "validation": report.get("final-validation-accuracy"),
        "epsilon": report.get("epsilon"),
    }


def _shape(shape: tuple[int, int, int]) -> dict[str, int]:
    chunks, count, modulus = shape
    return {"chunks": chunks, "count": count, "modulus": modulus}


def _array(content: RecordDict, key: str) -> Array | None:
    record = content.array_records.get(key)
    return None if record is None else record.get(key)


def _report(reply: Message) -> dict | None:
    """The report record of a reply, or None when the reply has none (a broken or hostile
    ClientApp must not stop the server)."""
    if p.REPORT not in reply.content.config_records:
        return None
    report = dict(reply.content.config_records[p.REPORT])
    if not isinstance(report.get("client-id"), str):
        return None
    return report


def _round_line(record: dict, total: int) -> str:
    parts = [f"round {record['round']}/{total}"]
    for cid, c in record["clients"].items():
        acc = c.get("accuracy_subset")
        eps = c.get("epsilon_spent")
        text = f"{cid}: {c.get('status', '?')}"
        text += f" acc={acc:.3f}" if acc is not None else ""
        text += f" eps={eps:.2f}" if eps is not None else ""
        parts.append(text)
    if record["dropouts"]:
        parts.append(f"dropouts={len(record['dropouts'])}")
    if record["rejected"]:
        parts.append(f"rejected={len(record['rejected'])}")
    if (record.get("aggregate") or {}).get("status") == "rejected":
        parts.append(f"aggregate REJECTED by {len(record['aggregate']['rejected_by'])}")
    return " | ".join(parts)


@app.main()
def main(grid: Grid, context: Context) -> None:
    deployment = p.Deployment.from_run_config(dict(context.run_config))
    FlowerFederation(grid, deployment).run()


__all__ = ["FlowerFederation", "RoundFailed", "app", "exchange"]
