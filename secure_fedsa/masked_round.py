"""Secure aggregation's phases for the in-process federation (the protocol: :mod:`secagg`).

:class:`InProcessMasking` runs one round's set-up (key adverts, encrypted shares) before any
client trains, hands each client its masks when it encrypts, and after the server has added the
masked updates collects the survivors' reveals and computes what to subtract from the sum. Every
message a client sends in these phases is written to its egress record (kind ``secagg-keys``,
``secagg-shares``, ``secagg-reveal``; no tensors), like its update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from secure_fedsa.crypto.codec import ChunkMask
from secure_fedsa.crypto.masking import chunk_mask
from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.egress import EgressLog
from secure_fedsa.secagg import KeyAdvert, MaskingClient, MaskingServer, Reveal

TRANSPORT = "in-process"


def _advert_bytes(advert: KeyAdvert) -> bytes:
    return advert.c_pk + advert.s_pk + advert.signature


def _reveal_bytes(reveal: Reveal) -> bytes:
    parts = [*reveal.b_shares.values(), *reveal.s_shares.values()]
    return b"".join(parts)


@dataclass
class InProcessMasking:
    """One round of masking among ``participants`` (the clients that will send an update)."""

    roster: Roster
    session: str
    round: int
    keys: dict[str, SigningKey]  # the participants' signing keys
    egress: EgressLog
    threshold: int | None = None
    server: MaskingServer = field(init=False)
    clients: dict[str, MaskingClient] = field(init=False)
    masked_with: set[str] = field(init=False)

    def __post_init__(self) -> None:
        """Phases 1 and 2: adverts and shares. Raises secagg.RoundFailed if too few take part."""
        self.server = MaskingServer(self.roster, self.session, self.round, self.threshold)
        self.clients = {
            cid: MaskingClient(cid, key, self.roster, self.session, self.round)
            for cid, key in sorted(self.keys.items())
        }
        adverts = []
        for cid, client in self.clients.items():
            advert = client.advertise()
            self._record(cid, "secagg-keys", _advert_bytes(advert))
            adverts.append(advert)
        u1 = self.server.collect_adverts(adverts)
        shares = {}
        for cid, client in self.clients.items():
            out = client.share(u1, threshold=self.server.threshold or 1)
            self._record(cid, "secagg-shares", b"".join(out[p] for p in sorted(out)))
            shares[cid] = out
        self.masked_with = self.server.collect_shares(shares)

    def mask_for(self, client_id: str) -> ChunkMask | None:
        """The masks ``client_id`` adds to its ciphertexts (None: it is not masked this round)."""
        if client_id not in self.masked_with:
            return None
        seeds = self.clients[client_id].seeds(self.masked_with)
        context = self.server.context

        def mask(chunk: int, count: int, modulus: int) -> np.ndarray:
            return chunk_mask(seeds, context=context, chunk=chunk, count=count, modulus=modulus)

        return mask

    def offsets(self, present: Iterable[str], shape: tuple[int, int, int]) -> Sequence[np.ndarray]:
        """Phases 4 and 5: the survivors sign the survivor set (the consistency round), then
        reveal; and what to subtract from the aggregate's c0."""
        present = sorted(set(present) & self.masked_with)
        dropped = self.masked_with - set(present)
        signed = {}
        for cid in present:
            signed[cid] = self.clients[cid].sign_survivors(present=present, dropped=dropped)
            self._record(cid, "secagg-survivors", signed[cid])
        signatures = self.server.survivor_signatures(signed, present=present)
        reveals = []
        for cid in present:
            reveal = self.clients[cid].reveal(
                self.server.shares_for(cid), present=present, dropped=dropped,
                signatures=signatures,
            )  # fmt: skip
            self._record(cid, "secagg-reveal", _reveal_bytes(reveal))
            reveals.append(reveal)
        chunks, count, modulus = shape
        return self.server.unmasking_offsets(
            reveals, present=present, chunks=chunks, count=count, modulus=modulus
        )

    def _record(self, client_id: str, kind: str, payload: bytes) -> None:
        self.egress.record(
            client_id,
            round_number=self.round,
            kind=kind,
            payload=payload,
            encrypted=kind == "secagg-shares",  # shares are encrypted to their recipients
            tensors=[],
            transport=TRANSPORT,
        )
