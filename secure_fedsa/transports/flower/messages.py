"""The round engine's messages as Flower messages, and back (both apps use this module).

Each request type has its Flower message type and its content; every reply is read strictly:
anything that does not parse is a :class:`MalformedReply` (the server makes the node a dropout
of that phase, never crashes). Opaque bytes (updates, the aggregate) travel as
``flwr.app.Array`` with ``stype = secure_fedsa.crypto.wire`` in an ArrayRecord; reports as their
canonical JSON (``secure_fedsa.engine.messages.report_bytes``) in a ConfigRecord; secure
aggregation's values as :mod:`secure_fedsa.transports.flower.secagg_records` lays them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from secure_fedsa.engine import messages as m
from secure_fedsa.errors import CryptoError, SecureFedsaError
from secure_fedsa.secagg.protocol import KeyAdvert, Reveal
from secure_fedsa.transports.flower import protocol as p
from secure_fedsa.transports.flower import secagg_records as sr

FINISH = "query.finish"
FORGET = "query.forget"
SENDER = "sender"  # who sent a share message (a ConfigRecord beside the shares)
SIGNATURES = "signatures"  # the survivor signatures relayed with a reveal request

MESSAGE_TYPES: dict[type, str] = {
    m.KeysRequest: sr.KEYS,
    m.SharesRequest: sr.SHARES,
    m.TrainRequest: MessageType.TRAIN,
    m.SurvivorsRequest: sr.SURVIVORS,
    m.RevealRequest: sr.REVEAL,
    m.EvaluateRequest: MessageType.EVALUATE,
    m.FinishRequest: FINISH,
    m.ForgetRequest: FORGET,
}


class MalformedReply(SecureFedsaError):
    """A reply the server cannot read as the answer it asked for."""


def _array(key: str, data: bytes) -> ArrayRecord:
    array = Array(dtype=p.ARRAY_DTYPE, shape=(len(data),), stype=p.ARRAY_STYPE, data=data)
    return ArrayRecord({key: array})


def _bytes(content: RecordDict, key: str) -> bytes | None:
    """The opaque bytes under ``key`` (None when absent); an array of another type reads as
    empty bytes, which no parser accepts."""
    record = content.array_records.get(key)
    array = None if record is None else record.get(key)
    if array is None:
        return None
    return bytes(array.data) if array.stype == p.ARRAY_STYPE else b""


# --------------------------------------------------------------------------- requests
Settings = dict[str, Any]


RosterRequest = m.KeysRequest | m.TrainRequest | m.EvaluateRequest


def _roster(request: RosterRequest, settings: Settings) -> None:
    settings.update({"roster": request.roster, "roster-signature": request.roster_signature})


def _roster_of(settings: Any) -> tuple[bytes, bytes]:
    return bytes(settings.get("roster", b"")), bytes(settings.get("roster-signature", b""))


def _last(settings: Any) -> int:
    """The round whose aggregate some site last applied, as the server says (0 if it says
    nothing: a site then trusts what it holds)."""
    return int(settings.get("last-applied", 0))


def _keys_request(request: m.KeysRequest, settings: Settings, content: RecordDict) -> None:
    _roster(request, settings)
    settings["last-applied"] = request.last_applied


def _shares_request(request: m.SharesRequest, settings: Settings, content: RecordDict) -> None:
    content[p.SECAGG] = sr.adverts_record(list(request.adverts))


def _train_request(request: m.TrainRequest, settings: Settings, content: RecordDict) -> None:
    _roster(request, settings)
    settings["last-applied"] = request.last_applied
    if request.masked_with is not None:
        settings["masked-with"] = list(request.masked_with)


def _survivors_request(
    request: m.SurvivorsRequest, settings: Settings, content: RecordDict
) -> None:
    settings.update(present=list(request.present), dropped=list(request.dropped))


def _reveal_request(request: m.RevealRequest, settings: Settings, content: RecordDict) -> None:
    settings.update(present=list(request.present), dropped=list(request.dropped))
    content[p.SECAGG] = sr.shares_record(request.shares)
    content[SIGNATURES] = sr.shares_record(request.signatures)  # client -> signature


def _evaluate_request(request: m.EvaluateRequest, settings: Settings, content: RecordDict) -> None:
    _roster(request, settings)
    if request.aggregate is not None:
        content[p.AGGREGATE] = _array(p.AGGREGATE, request.aggregate)


REQUEST_WRITERS: dict[type, Callable[[Any, Settings, RecordDict], None]] = {
    m.KeysRequest: _keys_request,
    m.SharesRequest: _shares_request,
    m.TrainRequest: _train_request,
    m.SurvivorsRequest: _survivors_request,
    m.RevealRequest: _reveal_request,
    m.EvaluateRequest: _evaluate_request,
    m.FinishRequest: lambda request, settings, content: None,
    m.ForgetRequest: lambda request, settings, content: None,
}


def request_content(request: m.Request) -> RecordDict:
    """The content of a request's message, besides the settings the transport adds."""
    settings: Settings = {"round": request.round, "session": request.session}
    content = RecordDict()
    REQUEST_WRITERS[type(request)](request, settings, content)
    content[p.CONFIG] = ConfigRecord(settings)
    return content


def read_request(message: Message) -> m.Request:
    """The request a site received (its message type says which)."""
    content = message.content
    settings = content[p.CONFIG]
    number, session = int(settings["round"]), str(settings["session"])
    kind = message.metadata.message_type
    readers: dict[str, Callable[[], m.Request]] = {
        sr.KEYS: lambda: m.KeysRequest(number, session, *_roster_of(settings), _last(settings)),
        sr.SHARES: lambda: m.SharesRequest(
            number, session, tuple(sr.adverts_from(content.config_records[p.SECAGG]))
        ),
        MessageType.TRAIN: lambda: m.TrainRequest(
            number,
            session,
            tuple(settings["masked-with"]) if "masked-with" in settings else None,
            *_roster_of(settings),
            _last(settings),
        ),
        sr.SURVIVORS: lambda: m.SurvivorsRequest(
            number, session, tuple(settings["present"]), tuple(settings["dropped"])
        ),
        sr.REVEAL: lambda: m.RevealRequest(
            number,
            session,
            tuple(settings["present"]),
            tuple(settings["dropped"]),
            sr.shares_from(content.config_records[p.SECAGG]),
            sr.shares_from(content.config_records.get(SIGNATURES) or {}),
        ),  # fmt: skip
        MessageType.EVALUATE: lambda: m.EvaluateRequest(
            number, session, _bytes(content, p.AGGREGATE), *_roster_of(settings)
        ),
        FINISH: lambda: m.FinishRequest(number, session),
        FORGET: lambda: m.ForgetRequest(number, session),
    }
    return readers[kind]()


# --------------------------------------------------------------------------- replies
def _report_record(report: m.Report) -> ConfigRecord:
    return ConfigRecord({"json": m.report_bytes(report)})


def _shares_reply(reply: m.Shares, content: RecordDict) -> None:
    content[p.SECAGG] = sr.shares_record(reply.shares)
    content[SENDER] = ConfigRecord({"client": reply.client})


def _train_reply(reply: m.TrainReply, content: RecordDict) -> None:
    content[p.REPORT] = _report_record(reply.report)
    if reply.update is not None:
        content[p.UPDATE] = _array(p.UPDATE, reply.update)


def _report_reply(reply: m.Report, content: RecordDict) -> None:
    content[p.REPORT] = _report_record(reply)


REPLY_WRITERS: dict[type, Callable[[Any, RecordDict], None]] = {
    KeyAdvert: lambda reply, content: content.__setitem__(p.SECAGG, sr.advert_record(reply)),
    m.Shares: _shares_reply,
    m.SurvivorSignature: lambda reply, content: content.__setitem__(
        p.SECAGG, sr.signature_record(reply.client, reply.signature)
    ),
    Reveal: lambda reply, content: content.__setitem__(p.SECAGG, sr.reveal_record(reply)),
    m.TrainReply: _train_reply,
    m.TrainReport: _report_reply,
    m.ApplyReport: _report_reply,
    m.FinalReport: _report_reply,
    m.Forgotten: _report_reply,
}


def reply_content(reply: Any) -> RecordDict:
    """A site's answer as message content."""
    content = RecordDict()
    REPLY_WRITERS[type(reply)](reply, content)
    return content


def _report(content: RecordDict, kind: type) -> Any:
    if p.REPORT not in content.config_records:
        raise MalformedReply("malformed reply (no report)")
    try:
        return m.read_report(bytes(content.config_records[p.REPORT]["json"]), kind)
    except (KeyError, TypeError, m.MalformedReport):
        raise MalformedReply("malformed reply (no report)") from None


def _advert(content: RecordDict) -> KeyAdvert | m.TrainReport:
    if p.REPORT in content.config_records:  # the site declined: it cannot train this round
        return _report(content, m.TrainReport)
    return sr.advert_from(content.config_records[p.SECAGG])


def _shares(content: RecordDict) -> m.Shares:
    sender = str(content.config_records[SENDER]["client"])
    return m.Shares(sender, sr.shares_from(content.config_records[p.SECAGG]))


def _train(content: RecordDict) -> m.TrainReply:
    return m.TrainReply(_report(content, m.TrainReport), _bytes(content, p.UPDATE))


REPLY_READERS: dict[type, tuple[Callable[[RecordDict], Any], str]] = {
    m.KeysRequest: (_advert, "malformed key advertisement"),
    m.SharesRequest: (_shares, "malformed share message"),
    m.TrainRequest: (_train, "malformed reply (no report)"),
    m.SurvivorsRequest: (
        lambda c: m.SurvivorSignature(*sr.signature_from(c.config_records[p.SECAGG])),
        "malformed survivor signature",
    ),
    m.RevealRequest: (lambda c: sr.reveal_from(c.config_records[p.SECAGG]), "malformed reveal"),
    m.EvaluateRequest: (lambda c: _report(c, m.ApplyReport), "malformed reply (no report)"),
    m.FinishRequest: (lambda c: _report(c, m.FinalReport), "malformed reply (no report)"),
    m.ForgetRequest: (lambda c: _report(c, m.Forgotten), "malformed reply (no report)"),
}


def read_reply(request: m.Request, reply: Message) -> Any:
    """A site's answer to ``request``; MalformedReply (with why) if it is not one."""
    reader, malformed = REPLY_READERS[type(request)]
    try:
        return reader(reply.content)
    except MalformedReply:
        raise
    except (KeyError, TypeError, ValueError, CryptoError):
        raise MalformedReply(malformed) from None
