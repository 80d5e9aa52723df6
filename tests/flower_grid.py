"""An in-memory Flower grid: the ServerApp's messages delivered to the real ClientApp functions.

No processes and no network: each message goes to the ClientApp handler its message type names
(``train``, ``evaluate``, ``query.<action>``) with that node's Context, as a SuperNode would.
"""

from __future__ import annotations

import pytest
from flwr.app import Context, Message, RecordDict


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Flower's Message needs the identity a real ServerApp/ClientApp process has."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class FakeGrid:
    """Delivers each message to the ClientApp of its node; ``down`` nodes never answer."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        self.contexts = contexts
        self.down: set[int] = set()
        self.outbox: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
            self.outbox[message.object_id] = message
            ids.append(message.object_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        from secure_fedsa.transports.flower import client_app

        replies = []
        for mid in ids:
            message = self.outbox[mid]
            node = message.metadata.dst_node_id
            if node in self.down:
                continue
            # "train", "evaluate", or "query.<action>" routed to the function of that name
            handler = getattr(client_app, message.metadata.message_type.split(".")[-1])
            # the ClientApp gets its own Message with the same content, as from a SuperNode
            replies.append(handler(copy(message), self.contexts[node]))
            del self.outbox[mid]
        return replies


def site_context(node: int, node_config: dict, run_config: dict) -> Context:
    """The Context a SuperNode gives the ClientApp of ``node`` (its state empty, in memory)."""
    return Context(
        run_id=1, node_id=node, node_config=node_config, state=RecordDict(), run_config=run_config
    )


def copy(message: Message) -> Message:
    content = RecordDict(dict(message.content))
    meta = message.metadata
    copied = Message(content, dst_node_id=meta.dst_node_id, message_type=meta.message_type, ttl=10)
    copied.metadata.__dict__["_message_id"] = message.metadata.message_id
    return copied


def run(grid: FakeGrid, run_config: dict) -> dict:
    """The ServerApp's federation over ``grid``; its summary."""
    from secure_fedsa.transports.flower.protocol import Deployment
    from secure_fedsa.transports.flower.server_app import FlowerFederation

    return FlowerFederation(grid, Deployment.from_run_config(run_config)).run()
