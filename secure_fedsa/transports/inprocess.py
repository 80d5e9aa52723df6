"""The in-process transport: the round engine's messages, delivered by direct calls.

Every client is a :class:`~secure_fedsa.engine.site.Participant` in this process; a request
reaches it as the object itself (nothing is serialized: there is no wire between them), and what
it answers goes back the same way. Its egress record is written by the participant, as in Flower.
A site's exception is the operator's to see: it stops the run (only :class:`Lost`, which tests
raise to simulate a message that never arrives, makes a dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from secure_fedsa.engine import messages as m
from secure_fedsa.engine.site import Participant
from secure_fedsa.errors import SecureFedsaError

TRANSPORT = "in-process"


class Lost(SecureFedsaError):
    """A message that never arrived (raised by tests that simulate a dropout)."""


class InProcessTransport:
    def __init__(
        self,
        sites: Mapping[str, Participant],
        *,
        client_started: Callable[[str, int], None] = lambda client_id, steps: None,
        client_done: Callable[[str], None] = lambda client_id: None,
    ) -> None:
        self.sites = dict(sites)
        self.client_started, self.client_done = client_started, client_done

    def addresses(self) -> list[str]:
        return list(self.sites)

    def name(self, address: str) -> str:
        return address

    def exchange(self, requests: Mapping[str, m.Request]) -> tuple[dict[str, Any], dict[str, str]]:
        replies, failures = {}, {}
        for address, request in requests.items():
            try:
                replies[address] = self.deliver(address, request)
            except Lost as exc:
                failures[address] = str(exc)
        return replies, failures

    def deliver(self, address: str, request: m.Request) -> Any:
        """One request to one site, and its reply."""
        site = self.sites[address]
        if not isinstance(request, m.TrainRequest):
            return site.handle(request)
        self.client_started(address, site.settings.config.local_steps)
        try:
            return site.handle(request)
        finally:
            self.client_done(address)
