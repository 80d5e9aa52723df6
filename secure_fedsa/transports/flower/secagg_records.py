"""Secure aggregation's phases over Flower messages: the records both apps exchange.

The protocol is :mod:`secure_fedsa.secagg.protocol`, its messages
:mod:`secure_fedsa.engine.messages`; this module turns the protocol's values into Flower
``ConfigRecord`` values and back, and keeps a site's round secrets between messages. Per round, with
masking on, the ServerApp sends three ``query`` messages besides ``train`` and ``evaluate`` (Flower
message types ``query.<action>``):

1. ``query.secagg_keys`` to every node drawn, with the roster signed by the server: each site
   checks the signature, makes the round's key pairs and replies with its signed advertisement.
2. ``query.secagg_shares`` to the sites that advertised (U1), with every advert: each site checks
   them against the roster and replies with its secrets' shares, encrypted to each peer.
3. ``train`` to the sites whose shares arrived (U2), naming U2: each site masks against U2.
4. ``query.secagg_survivors`` to the sites whose update the server accepted (U3), naming U3 and
   the dropped sites: each site signs that survivor set (one set per round).
5. ``query.secagg_reveal`` to the same sites, with the same sets, the shares addressed to that
   site and the survivor signatures (U4): a site reveals only with t valid signatures of the set
   it signed itself.

A site's private keys and self-mask seed live only in its SuperNode's memory between these
messages (``Context.state``, which Flower keeps in the SuperNode process and never writes to
disk; :class:`ContextSecrets`). The site forgets them after its reveal, at the round's
``evaluate``, at the next advertisement, at ``query.forget`` (a failed round stops the run) and
at the run's ``finish``, whichever comes first
(:class:`secure_fedsa.engine.site.Participant`). A site restarted mid-round cannot mask or reveal
for that round (it is a dropout).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Context

from secure_fedsa.errors import CryptoError
from secure_fedsa.secagg.protocol import KeyAdvert, Reveal

KEYS = "query.secagg_keys"
SHARES = "query.secagg_shares"
SURVIVORS = "query.secagg_survivors"
REVEAL = "query.secagg_reveal"
STATE = "secagg"  # the key of a site's round secrets in Context.state (memory only)
KEPT = "secagg-survivors"  # the survivor set a site signed, from its reveal to the evaluate


# --------------------------------------------------------------------------- adverts
def advert_record(advert: KeyAdvert) -> ConfigRecord:
    return ConfigRecord(
        {"client": advert.client, "c-pk": advert.c_pk, "s-pk": advert.s_pk,
         "signature": advert.signature}
    )  # fmt: skip


def advert_from(record: Mapping) -> KeyAdvert:
    try:
        return KeyAdvert(
            str(record["client"]),
            bytes(record["c-pk"]),
            bytes(record["s-pk"]),
            bytes(record["signature"]),
        )
    except (KeyError, TypeError, ValueError):
        raise CryptoError("malformed key advertisement") from None


def adverts_record(adverts: list[KeyAdvert]) -> ConfigRecord:
    """Every advert of U1, one value per client (c_pk, s_pk, signature concatenated)."""
    return ConfigRecord({a.client: a.c_pk + a.s_pk + a.signature for a in adverts})


def adverts_from(record: Mapping) -> list[KeyAdvert]:
    adverts = []
    for client, blob in record.items():
        blob = bytes(blob)
        if len(blob) != 128:
            raise CryptoError(f"malformed key advertisement of {client}")
        adverts.append(KeyAdvert(str(client), blob[:32], blob[32:64], blob[64:]))
    return adverts


# --------------------------------------------------------------------------- shares, reveals
def shares_record(shares: Mapping[str, bytes]) -> ConfigRecord:
    return ConfigRecord({peer: bytes(blob) for peer, blob in shares.items()})


def shares_from(record: Mapping) -> dict[str, bytes]:
    return {str(peer): bytes(blob) for peer, blob in record.items()}


def signature_record(client: str, signature: bytes) -> ConfigRecord:
    return ConfigRecord({"client": client, "signature": bytes(signature)})


def signature_from(record: Mapping) -> tuple[str, bytes]:
    try:
        return str(record["client"]), bytes(record["signature"])
    except (KeyError, TypeError, ValueError):
        raise CryptoError("malformed survivor signature") from None


def reveal_record(reveal: Reveal) -> ConfigRecord:
    values: dict = {"client": reveal.client, "holder": reveal.holder}
    values.update({f"b/{c}": share for c, share in reveal.b_shares.items()})
    values.update({f"s/{c}": share for c, share in reveal.s_shares.items()})
    return ConfigRecord(values)


def reveal_from(record: Mapping) -> Reveal:
    try:
        client, holder = str(record["client"]), int(record["holder"])
    except (KeyError, TypeError, ValueError):
        raise CryptoError("malformed reveal") from None
    b_shares = {k[2:]: bytes(v) for k, v in record.items() if k.startswith("b/")}
    s_shares = {k[2:]: bytes(v) for k, v in record.items() if k.startswith("s/")}
    return Reveal(client, holder, b_shares, s_shares)


# --------------------------------------------------------------------------- a site's secrets
class ContextSecrets:
    """A site's round secrets in its SuperNode's memory (``Context.state``, never written to
    disk): the :class:`~secure_fedsa.engine.site.SecretStore` of a Flower site."""

    def __init__(self, context: Context, key: str = STATE) -> None:
        self.context, self.key = context, key

    def save(self, state: Mapping[str, Any]) -> None:
        self.context.state.config_records[self.key] = ConfigRecord(dict(state))

    def load(self) -> Mapping[str, Any]:
        return self.context.state.config_records.get(self.key) or {}

    def clear(self) -> None:
        self.context.state.config_records.pop(self.key, None)
