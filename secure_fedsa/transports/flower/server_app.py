"""The ServerApp: the round engine (:mod:`secure_fedsa.engine.rounds`) over Flower's Message API.

:class:`FlowerTransport` is all this module adds to the engine: it turns each request into a message
to one SuperNode (:mod:`secure_fedsa.transports.flower.messages`), waits up to ``round-timeout``
seconds for the replies and reads them strictly. A node that does not answer in time, answers with
an error (its ClientApp raised, or the SuperLink reports it unavailable) or with something the
server cannot read is a dropout of that phase, recorded in ``metrics.jsonl``.

A round that cannot produce an aggregate (fewer than t sites in a phase of secure aggregation,
or fewer than ``min-clients`` accepted updates) stops the run: ``summary.json`` says failed,
nothing of the round enters ``metrics.jsonl``, and the ServerApp exits with an error. Bring the
sites back and resume with ``--run-config 'resume-dir="RUN_DIR"'``.

The server's run directory holds ``config.json``, ``deployment.json``, ``setup.json``,
``metrics.jsonl`` and ``summary.json`` (the same schemas as the in-process run's): no key that
can decrypt, no plaintext update. The sites keep their own state, ledgers and egress records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from secure_fedsa import __version__
from secure_fedsa.crypto.signing import (
    ROSTER_FILE,
    SERVER_IDENTITY,
    identity_path,
    load_identity,
    load_roster,
    require_weights,
)
from secure_fedsa.engine import messages as m
from secure_fedsa.engine.aggregation import ServerKeys, new_session
from secure_fedsa.engine.record import RoundRecord, round_line
from secure_fedsa.engine.rounds import EngineSettings, Observer, RoundEngine, RoundFailed
from secure_fedsa.errors import SecureFedsaError
from secure_fedsa.site.build import run_labels, server_manifest
from secure_fedsa.site.rundir import RunDirectory
from secure_fedsa.transports.flower import messages as fm
from secure_fedsa.transports.flower import protocol as p

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POLL_SECONDS = 1.0

app = ServerApp()


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


class FlowerTransport:
    """The engine's messages to and from SuperNodes (addresses are node ids)."""

    def __init__(self, grid: Grid, deployment: p.Deployment, digest: str) -> None:
        self.grid, self.deployment, self.digest = grid, deployment, digest

    def addresses(self) -> list[int]:
        return sorted(self.grid.get_node_ids())

    def name(self, address: int) -> str:
        return f"node-{address}"

    def message(self, node: int, request: m.Request) -> Message:
        content = fm.request_content(request)
        content[p.CONFIG]["config-digest"] = self.digest
        return Message(
            content,
            dst_node_id=node,
            message_type=fm.MESSAGE_TYPES[type(request)],
            group_id=str(request.round),
            ttl=self.deployment.round_timeout,
        )

    def exchange(self, requests: Mapping[int, m.Request]) -> tuple[dict[int, Any], dict[int, str]]:
        messages = {node: self.message(node, request) for node, request in requests.items()}
        replies, failures = exchange(self.grid, messages, self.deployment.round_timeout)
        read = {}
        for node, reply in replies.items():
            try:
                read[node] = fm.read_reply(requests[node], reply)
            except fm.MalformedReply as exc:
                failures[node] = str(exc)
        return read, failures

    def wait_for_nodes(self) -> list[int]:
        want, least = self.deployment.clients, self.deployment.min_clients
        deadline = time.monotonic() + self.deployment.wait_for_nodes
        while True:
            nodes = self.addresses()
            if len(nodes) >= want or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if len(nodes) < least:
            raise RoundFailed(
                f"only {len(nodes)} SuperNode(s) connected after "
                f"{self.deployment.wait_for_nodes:g} s; min-clients is {least}"
            )
        return nodes


class FlowerFederation:
    """The server side of a deployment: one run directory, one key set, the engine."""

    def __init__(self, grid: Grid, deployment: p.Deployment) -> None:
        self.deployment = deployment
        self.config = config = deployment.config
        self.digest = p.config_digest(config)
        self.transport = FlowerTransport(grid, deployment, self.digest)
        keys = _keys_dir(deployment)
        roster = load_roster(keys / ROSTER_FILE)
        identity = load_identity(identity_path(keys, SERVER_IDENTITY))
        if identity.key.public_bytes != roster.server:
            raise SecureFedsaError(f"{keys}: identities/server.key does not belong to roster.json")
        if config.method != "local":  # before any round: keys made before roster weights
            require_weights(roster, str(keys / ROSTER_FILE))
        self.keys = ServerKeys(_server_codec(deployment), roster, identity)
        self.manifest = server_manifest(config)
        if deployment.resume_dir:
            self.rundir = RunDirectory.resume(Path(deployment.resume_dir), config)
            self.session = self.rundir.stored_session() or new_session()
        else:
            self.session = new_session()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(deployment.run_dir or f"runs/{stamp}-flower-{config.method}")
            self.rundir = RunDirectory.create(path, config)
            self.rundir.write_json("setup.json", self._setup())
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
        resume = (
            "restart the missing SuperNodes (their state and ledgers are on disk), then "
            f"flwr run . CONNECTION --run-config 'resume-dir=\"{self.rundir.path}\"'"
        )
        settings = EngineSettings(
            config,
            self.session,
            self.manifest,
            dataset=config.dataset,
            min_clients=deployment.min_clients,
            stop_on_failure=True,
            resume_hint=resume,
        )
        observer = Observer(
            round_recorded=self._recorded,
            warning=lambda text: log(WARNING, "%s", text),
            message=lambda text: log(INFO, "%s", text),
        )
        self.engine = RoundEngine(self.transport, self.keys, self.rundir, settings, observer)

    def _setup(self) -> dict:
        return {
            "transport": p.TRANSPORT,
            "manifest": self.manifest.to_list(),
            "manifest_hash": self.manifest.digest,
            "shared_values": self.manifest.size,
            "label_names": list(run_labels(self.config)),
            "key_fingerprint": self.keys.codec.fingerprint,
            "roster_digest": self.keys.roster.digest,
            "session": self.session,
            "protections_off": self.config.protections,
        }

    def _recorded(self, record: RoundRecord) -> None:
        shown = {c: e.accuracy_subset for c, e in record.clients.items() if e.accuracy_subset}
        log(INFO, "%s", round_line(record, self.config.rounds, shown))  # type: ignore[arg-type]

    def run(self) -> dict:
        for warning in self.config.protections:
            log(WARNING, "WARNING: %s", warning)
        self.transport.wait_for_nodes()
        summary = self.engine.run()
        log(INFO, "run directory: %s", self.rundir.path)
        return summary


@app.main()
def main(grid: Grid, context: Context) -> None:
    deployment = p.Deployment.from_run_config(dict(context.run_config))
    FlowerFederation(grid, deployment).run()


__all__ = ["FlowerFederation", "FlowerTransport", "RoundFailed", "app", "exchange"]
