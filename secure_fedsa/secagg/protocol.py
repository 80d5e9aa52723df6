"""Secure aggregation of masked ciphertexts with dropout recovery (promise P8), one round.

A SecAgg-style protocol (Bonawitz et al., CCS 2017) whose masks are added to CKKS ciphertext
coefficients (:mod:`secure_fedsa.secagg.masking`), transport-agnostic: :class:`MaskingClient` and
:class:`MaskingServer` exchange plain dataclasses, which the in-process federation passes in
memory and the Flower apps as message records. Everything is fresh per round.

1. **Advertise.** Each client makes two X25519 key pairs (``c`` to encrypt shares to its peers,
   ``s`` to agree on pairwise masks) and signs both public keys, bound to the run's session and the
   round, with its Ed25519 identity. The server relays the adverts; everyone checks them against
   the roster. U1 = clients with a valid advert.
2. **Share.** Each client draws a self-mask seed ``b_i`` and Shamir-shares ``b_i`` and its ``s``
   private key among U1 (threshold t, default a majority), encrypting each peer's shares with
   ChaCha20-Poly1305 under a key agreed with that peer's ``c`` key. U2 = clients whose shares
   arrived. Clients mask against exactly U2.
3. **Masked input.** Each client adds ``PRG(b_i) + Σ_{j∈U2, j≠i} ±PRG(s_ij)`` to its ciphertexts.
   U3 = clients whose masked update the server accepted.
4. **Unmask.** The server names U3 and the dropped set U2 \\ U3; each surviving client reveals,
   for each client of U3, its share of ``b`` and, for each dropped client, its share of ``s`` —
   never both for one client (double masking: a client wrongly declared dropped, whose update
   arrives late, stays masked by its ``b``). With at least t responses the server rebuilds the
   ``b`` of every present client and the ``s`` key of every dropped one, and subtracts the self
   masks and the dangling pairwise masks from the aggregate's coefficients. With fewer, the round
   fails: :class:`RoundFailed`.

What a coalition learns: the server with fewer than t clients cannot rebuild any honest client's
``b`` or ``s``, so a single honest upload stays uniformly random to it, even with the CKKS secret
key; it learns only the sum (still encrypted) and which clients dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_fedsa.crypto.signing import Roster, SigningKey, verify
from secure_fedsa.errors import CryptoError, SecureFedsaError
from secure_fedsa.secagg.masking import (
    MaskSeeds,
    add_mod,
    mask_context,
    pair_mask,
    pair_secret,
    pair_sign,
    self_mask,
)
from secure_fedsa.secagg.shamir import SHARE_BYTES, combine_shares, split_secret
from secure_fedsa.secagg.threshold import (  # re-exported: the protocol's thresholds
    default_threshold,
    fixed_threshold,
    threshold_floor,
    threshold_for_coalition,
    threshold_problem,
    tolerated_coalition,
)

_RAW = serialization.Encoding.Raw
ADVERT_KIND = "mask-keys"
__all__ = [
    "KeyAdvert",
    "MaskingClient",
    "MaskingServer",
    "Reveal",
    "RoundFailed",
    "consistency_problem",
    "default_threshold",
    "fixed_threshold",
    "survivors_digest",
    "threshold_floor",
    "threshold_for_coalition",
    "threshold_problem",
    "tolerated_coalition",
]


class RoundFailed(SecureFedsaError):
    """Too few clients took part for the masks to be removed: the round has no aggregate."""


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def _private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _advert_digest(session: str, round_number: int, client: str, c_pk: bytes, s_pk: bytes) -> bytes:
    import hashlib

    text = f"{session}/{round_number}/{client}/".encode() + c_pk + s_pk
    return hashlib.sha256(text).digest()


def _share_key(own: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = b"secure_fedsa/share-key/v1/" + context
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


@dataclass(frozen=True)
class KeyAdvert:
    """A client's two public keys for one round, signed with its identity."""

    client: str
    c_pk: bytes
    s_pk: bytes
    signature: bytes


@dataclass(frozen=True)
class Reveal:
    """A surviving client's shares for unmasking: ``b`` shares of present clients, ``s`` shares
    of dropped ones, each tagged with the holder number of the revealing client."""

    client: str
    holder: int
    b_shares: Mapping[str, bytes]
    s_shares: Mapping[str, bytes]


SURVIVORS_KIND = "mask-survivors"


def survivors_digest(
    session: str, round_number: int, present: Iterable[str], dropped: Iterable[str]
) -> bytes:
    """What a survivor signature covers: the run, the round, and the sorted sets of present
    (U3) and dropped (U2 minus U3) clients, unambiguously encoded."""
    import hashlib

    record = {
        "session": session,
        "round": round_number,
        "present": sorted(set(present)),
        "dropped": sorted(set(dropped)),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).digest()


def consistency_problem(
    signatures: Mapping[str, bytes],
    *,
    roster: Roster,
    session: str,
    round_number: int,
    present: Iterable[str],
    dropped: Iterable[str],
    threshold: int,
) -> str | None:
    """Why ``signatures`` do not show that at least ``threshold`` present clients saw this very
    survivor set (pure; None: they do). Only signatures of present clients in the roster, over
    the same (present, dropped) sets of this run and round, count."""
    present = set(present)
    digest = survivors_digest(session, round_number, present, dropped)
    valid = sorted(
        client
        for client, signature in signatures.items()
        if client in present
        and (key := roster.key_of(client)) is not None
        and verify(key, bytes(signature), SURVIVORS_KIND, digest)
    )
    if len(valid) < threshold:
        return (
            f"only {len(valid)} client(s) signed the survivor set this client was shown "
            f"({len(present)} present, {len(set(dropped))} dropped), {threshold} needed: the "
            "server may be telling clients different survivor sets. No shares revealed"
        )
    return None


def _check_advert(advert: KeyAdvert, roster: Roster, session: str, round_number: int) -> bool:
    key = roster.key_of(advert.client)
    digest = _advert_digest(session, round_number, advert.client, advert.c_pk, advert.s_pk)
    return key is not None and verify(key, advert.signature, ADVERT_KIND, digest)


@dataclass
class MaskingClient:
    """One client's side of one round. Its private keys and seed never leave it, except as
    shares encrypted to its peers."""

    client_id: str
    key: SigningKey
    roster: Roster
    session: str
    round: int
    _c: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _s: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _b: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _peers: dict[str, KeyAdvert] = field(default_factory=dict, repr=False)
    _holders: list[str] = field(default_factory=list, repr=False)
    _threshold: int = 0
    _revealed: dict[str, str] = field(default_factory=dict, repr=False)  # client -> "b" | "s"
    _signed: bytes = field(default=b"", repr=False)  # the survivor set signed this round

    @property
    def context(self) -> bytes:
        return mask_context(self.session, self.round)

    # 1. advertise
    def advertise(self) -> KeyAdvert:
        c_pk, s_pk = _public(self._c), _public(self._s)
        digest = _advert_digest(self.session, self.round, self.client_id, c_pk, s_pk)
        return KeyAdvert(self.client_id, c_pk, s_pk, self.key.sign(ADVERT_KIND, digest))

    # 2. share
    def share(self, adverts: Iterable[KeyAdvert], *, threshold: int) -> dict[str, bytes]:
        """Encrypted shares of ``b`` and the ``s`` key for every client of U1 (by id)."""
        adverts = list(adverts)
        bad = [
            a.client for a in adverts if not _check_advert(a, self.roster, self.session, self.round)
        ]
        if bad:
            raise CryptoError(
                f"key advert(s) of {', '.join(bad)} do not verify: aborting the round"
            )
        self._peers = {a.client: a for a in adverts}
        if self.client_id not in self._peers:
            raise CryptoError(f"{self.client_id} is not among the round's clients")
        problem = threshold_problem(threshold, len(self._peers))
        if problem:
            raise CryptoError(f"{self.client_id} will not share its secrets: {problem}")
        self._holders = sorted(self._peers)
        self._threshold = threshold
        b_shares = split_secret(self._b, threshold=threshold, holders=len(self._holders))
        s_shares = split_secret(_private(self._s), threshold=threshold, holders=len(self._holders))
        out = {}
        for number, peer in enumerate(self._holders):
            plain = b_shares[number] + s_shares[number]
            key = _share_key(self._c, self._peers[peer].c_pk, self.context)
            nonce = os.urandom(12)
            aad = self.context + f"{self.client_id}->{peer}".encode()
            out[peer] = nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, aad)
        return out

    # 3. masked input
    def seeds(self, masked_with: Iterable[str]) -> MaskSeeds:
        """What to add to this round's ciphertexts: the self seed and a pair secret per client
        of U2 (those whose shares arrived), this client excluded."""
        masked_with = set(masked_with)
        if self.client_id not in masked_with or len(masked_with) < self._threshold:
            raise RoundFailed(
                f"{self.client_id} is asked to mask with {len(masked_with)} client(s) "
                f"({'itself included' if self.client_id in masked_with else 'not itself'}); "
                f"at least {self._threshold} including itself are needed"
            )
        peers = {}
        for peer in masked_with:
            if peer == self.client_id:
                continue
            if peer not in self._peers:
                raise CryptoError(f"{peer} did not advertise keys this round")
            peers[peer] = pair_secret(self._s, self._peers[peer].s_pk)
        return MaskSeeds(self.client_id, self._b, peers)

    # 4. consistency: sign the survivor set this client is shown (once per round)
    def sign_survivors(self, *, present: Iterable[str], dropped: Iterable[str]) -> bytes:
        """This client's signature of the survivor set the server showed it. Signs one set per
        round: asked to sign a different one, it refuses (the server is lying)."""
        present, dropped = set(present), set(dropped)
        self._check_survivors(present, dropped)
        digest = survivors_digest(self.session, self.round, present, dropped)
        if self._signed and self._signed != digest:
            raise CryptoError(
                f"{self.client_id} already signed another survivor set this round: the server "
                "is telling clients different survivor sets; refusing"
            )
        self._signed = digest
        return self.key.sign(SURVIVORS_KIND, digest)

    def _check_survivors(self, present: set[str], dropped: set[str]) -> None:
        if present & dropped:
            raise CryptoError("the server declared clients both present and dropped")
        if self.client_id not in present:
            raise CryptoError(f"{self.client_id} is not among the present clients: no reveal")
        if not present <= set(self._peers) or not dropped <= set(self._peers):
            raise CryptoError("the server named clients that did not take part in the round")
        if len(present) < self._threshold:
            raise RoundFailed(
                f"{len(present)} clients present, {self._threshold} needed to unmask the round"
            )

    # 5. unmask
    def reveal(
        self,
        received: Mapping[str, bytes],
        *,
        present: Iterable[str],
        dropped: Iterable[str],
        signatures: Mapping[str, bytes],
    ) -> Reveal:
        """Decrypt the shares received and reveal ``b`` shares of ``present`` clients and ``s``
        shares of ``dropped`` ones, only if this client signed that survivor set itself and
        ``signatures`` hold valid survivor signatures of at least t present clients over the
        same set (:func:`consistency_problem`). Refuses to reveal both kinds for any client,
        ever."""
        present, dropped = set(present), set(dropped)
        self._check_survivors(present, dropped)
        if self._signed != survivors_digest(self.session, self.round, present, dropped):
            raise CryptoError(
                f"{self.client_id} did not sign this survivor set: it reveals only for the set "
                "it signed in the consistency phase"
            )
        problem = consistency_problem(
            signatures,
            roster=self.roster,
            session=self.session,
            round_number=self.round,
            present=present,
            dropped=dropped,
            threshold=self._threshold,
        )
        if problem:
            raise CryptoError(f"{self.client_id}: {problem}")
        for client, kind in [(c, "b") for c in present] + [(c, "s") for c in dropped]:
            if self._revealed.get(client, kind) != kind:
                raise CryptoError(
                    f"{client}'s {self._revealed[client]} share was revealed already; revealing "
                    f"its {kind} share too would unmask its update"
                )
        holder = self._holders.index(self.client_id) + 1
        b_shares, s_shares = {}, {}
        for sender, blob in received.items():
            if sender not in present and sender not in dropped:
                continue
            key = _share_key(self._c, self._peers[sender].c_pk, self.context)
            aad = self.context + f"{sender}->{self.client_id}".encode()
            try:
                plain = ChaCha20Poly1305(key).decrypt(blob[:12], blob[12:], aad)
            except (InvalidTag, ValueError):
                raise CryptoError(f"the shares from {sender} do not decrypt") from None
            if sender in present:
                b_shares[sender] = plain[:SHARE_BYTES]
                self._revealed[sender] = "b"
            else:
                s_shares[sender] = plain[SHARE_BYTES:]
                self._revealed[sender] = "s"
        return Reveal(self.client_id, holder, b_shares, s_shares)

    # -- keeping the round between messages (a transport whose handlers are separate processes)
    def export(self) -> dict[str, bytes | str | int | list[str]]:
        """This round's secrets and progress as flat values, for a transport that must keep them
        in memory between the round's messages (Flower's node context). Never write it to disk."""
        state: dict[str, bytes | str | int | list[str]] = {
            "client": self.client_id,
            "session": self.session,
            "round": self.round,
            "c": _private(self._c),
            "s": _private(self._s),
            "b": self._b,
            "threshold": self._threshold,
            "peers": sorted(self._peers),
            "revealed": [f"{c}={k}" for c, k in sorted(self._revealed.items())],
            "signed": self._signed,
        }
        for peer, advert in self._peers.items():
            state[f"peer/{peer}"] = advert.c_pk + advert.s_pk + advert.signature
        return state

    @classmethod
    def restore(
        cls, state: Mapping, key: SigningKey, roster: Roster, session: str, round_number: int
    ) -> MaskingClient:
        """The client :meth:`export` saved, for this session and round only."""
        if (state.get("client"), state.get("session"), state.get("round")) != (
            key.owner,
            session,
            round_number,
        ):
            raise RoundFailed(
                f"{key.owner} holds no masking keys for round {round_number} of this run "
                "(its node restarted, or the round's key advertisement did not reach it)"
            )
        peers = {}
        for peer in state["peers"]:
            blob = bytes(state[f"peer/{peer}"])
            peers[peer] = KeyAdvert(peer, blob[:32], blob[32:64], blob[64:])
        revealed = dict(item.split("=", 1) for item in state["revealed"])
        return cls(
            key.owner,
            key,
            roster,
            session,
            round_number,
            _c=X25519PrivateKey.from_private_bytes(bytes(state["c"])),
            _s=X25519PrivateKey.from_private_bytes(bytes(state["s"])),
            _b=bytes(state["b"]),
            _peers=peers,
            _holders=sorted(peers),
            _threshold=int(state["threshold"]),
            _revealed=revealed,
            _signed=bytes(state.get("signed", b"")),
        )


@dataclass
class MaskingServer:
    """The server's side of one round: relays adverts and shares, then removes the masks."""

    roster: Roster
    session: str
    round: int
    threshold: int | None = None
    adverts: dict[str, KeyAdvert] = field(default_factory=dict)
    _shares: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def context(self) -> bytes:
        return mask_context(self.session, self.round)

    def collect_adverts(self, adverts: Iterable[KeyAdvert]) -> list[KeyAdvert]:
        """U1: the adverts that verify, in id order."""
        for advert in adverts:
            if _check_advert(advert, self.roster, self.session, self.round):
                self.adverts[advert.client] = advert
        if self.threshold is None:
            self.threshold = default_threshold(len(self.adverts))
        if len(self.adverts) < self.threshold:
            raise RoundFailed(
                f"{len(self.adverts)} clients advertised keys, {self.threshold} needed"
            )
        return [self.adverts[c] for c in sorted(self.adverts)]

    def collect_shares(self, shares: Mapping[str, Mapping[str, bytes]]) -> set[str]:
        """U2: the clients of U1 whose shares arrived for every client of U1."""
        u1 = set(self.adverts)
        self._shares = {
            sender: dict(out) for sender, out in shares.items() if sender in u1 and set(out) == u1
        }
        if len(self._shares) < (self.threshold or 0):
            raise RoundFailed(
                f"{len(self._shares)} clients shared their keys, {self.threshold} needed"
            )
        return set(self._shares)

    @property
    def masked_with(self) -> set[str]:
        """U2: the clients whose shares arrived (every client of U2 masks against all of U2)."""
        return set(self._shares)

    def shares_for(self, client: str) -> dict[str, bytes]:
        """What ``client`` receives: each U2 sender's encrypted shares for it."""
        return {sender: out[client] for sender, out in self._shares.items() if client in out}

    def survivor_signatures(
        self, signatures: Mapping[str, bytes], *, present: Iterable[str]
    ) -> dict[str, bytes]:
        """U4: the present clients' valid signatures of the survivor set ``present`` (the
        dropped set being U2 minus it), which the server relays to every present client with
        the reveal request. Raises RoundFailed with fewer than t."""
        present = set(present)
        dropped = set(self._shares) - present
        digest = survivors_digest(self.session, self.round, present, dropped)
        valid = {
            client: bytes(signature)
            for client, signature in signatures.items()
            if client in present
            and (key := self.roster.key_of(client)) is not None
            and verify(key, bytes(signature), SURVIVORS_KIND, digest)
        }
        if len(valid) < (self.threshold or 0):
            raise RoundFailed(
                f"{len(valid)} clients signed the survivor set, {self.threshold} needed"
            )
        return valid

    def unmasking_offsets(
        self,
        reveals: Iterable[Reveal],
        *,
        present: Iterable[str],
        chunks: int,
        count: int,
        modulus: int,
    ) -> list[np.ndarray]:
        """Per chunk, what to subtract from the aggregate's c0: the self masks of the present
        clients and the pairwise masks they added with dropped ones."""
        present = set(present)
        dropped = set(self._shares) - present
        reveals = [r for r in reveals if r.client in present]
        if len(reveals) < (self.threshold or 0):
            raise RoundFailed(
                f"{len(reveals)} clients answered the unmasking, {self.threshold} needed"
            )
        threshold = self.threshold or 1
        b = {
            c: combine_shares(
                [(r.holder, r.b_shares[c]) for r in reveals if c in r.b_shares],
                threshold=threshold,
            )
            for c in present
        }
        s = {
            k: X25519PrivateKey.from_private_bytes(
                combine_shares(
                    [(r.holder, r.s_shares[k]) for r in reveals if k in r.s_shares],
                    threshold=threshold,
                )
            )
            for k in dropped
        }
        offsets = []
        for chunk in range(chunks):
            total = np.zeros(count, dtype=np.uint64)
            for client in sorted(present):
                total = add_mod(
                    total,
                    self_mask(b[client], context=self.context, chunk=chunk, count=count,
                              modulus=modulus),
                    modulus,
                )  # fmt: skip
                for gone in sorted(dropped):
                    secret = pair_secret(s[gone], self.adverts[client].s_pk)
                    mask = pair_mask(
                        secret, context=self.context, chunk=chunk, count=count, modulus=modulus
                    )
                    # the dangling term client added: +mask if it sorts first, else -mask
                    signed = (
                        mask
                        if pair_sign(client, gone) > 0
                        else ((np.uint64(modulus) - mask) % np.uint64(modulus))
                    )
                    total = add_mod(total, signed, modulus)
            offsets.append(total)
        return offsets
