"""The round's messages: what the server asks each site, and what each site answers.

Requests carry the round and the run's session; replies are the protocol's own objects
(:class:`~secure_fedsa.secagg.protocol.KeyAdvert`, :class:`~secure_fedsa.secagg.protocol.Reveal`) or
the typed reports below. Reports are the only plaintext a site sends about itself: training status,
steps, ε, public DP parameters, and about the aggregate a status code (never why it was rejected:
that is computed from decrypted values and stays on the site, P6). Accuracy is in a report only when
the run releases its evaluation. A transport that moves bytes sends a report as its canonical JSON
(:func:`report_bytes`) and reads it back strictly (:func:`read_report`): a field of the wrong type
or a name it does not know makes the reply malformed, never a crash of the server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from secure_fedsa.errors import SecureFedsaError
from secure_fedsa.secagg.protocol import KeyAdvert

# a client's status in a round (metrics.jsonl)
TRAINED = "trained"
BUDGET_EXHAUSTED = "budget exhausted"
# not drawn this round (clients per round): it only applies the aggregate and evaluates
NOT_SAMPLED = "not sampled"
NOT_TRAINED = "not trained (secure aggregation impossible)"
# the site refused the round before training: weaker than its pinned policy (nothing spent)
REFUSED = "refused (site policy)"
# the site missed an earlier round's aggregate: it judges this round's and trains from the next
BEHIND = "not trained (missed an aggregate: catching up)"
# what a site says about the aggregate it received: a status code, never a reason
APPLIED = "applied"
REJECTED = "rejected"
NONE = "none"


class MalformedReport(SecureFedsaError):
    """A report that does not parse as the record it claims to be."""


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class KeysRequest:
    """Masking set-up, 1: the roster, signed by the server; reply: a key advert (or, from a
    site that knows it cannot train this round, a :class:`TrainReport` saying why)."""

    round: int
    session: str
    roster: bytes  # the roster's canonical JSON
    roster_signature: bytes
    # the last round whose aggregate some site applied (public: the sites' status codes); a
    # site that judged no aggregate since is behind and sits this round out
    last_applied: int = 0


@dataclass(frozen=True)
class SharesRequest:
    """Masking set-up, 2: every verified advert of the round (U1); reply: :class:`Shares`."""

    round: int
    session: str
    adverts: tuple[KeyAdvert, ...]


@dataclass(frozen=True)
class TrainRequest:
    """Train and upload; ``masked_with`` (U2) is None with masking off. The roster, signed by
    the server, fixes the site's weight (its update is multiplied by it; the weight is not
    sent). Reply: :class:`TrainReply`."""

    round: int
    session: str
    masked_with: tuple[str, ...] | None
    roster: bytes = b""  # the roster's canonical JSON
    roster_signature: bytes = b""
    last_applied: int = 0  # as in :class:`KeysRequest`


@dataclass(frozen=True)
class SurvivorsRequest:
    """Consistency (against a server that lies): the survivor set the server claims, the
    clients whose update it added (present) and those that masked and did not (dropped).
    Reply: :class:`SurvivorSignature`, the site's signature of that set (one set per round)."""

    round: int
    session: str
    present: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class RevealRequest:
    """Unmask: the survivor set the site signed, the encrypted shares addressed to this site,
    and the present clients' signatures of that set (the site reveals only with t valid ones).
    Reply: a Reveal."""

    round: int
    session: str
    present: tuple[str, ...]
    dropped: tuple[str, ...]
    shares: Mapping[str, bytes]
    signatures: Mapping[str, bytes]


@dataclass(frozen=True)
class EvaluateRequest:
    """Check and apply the aggregate (None: the round has none), evaluate. The roster, signed
    by the server, gives the weights of the contributors the aggregate names: its divisor.
    Reply: :class:`ApplyReport`."""

    round: int
    session: str
    aggregate: bytes | None
    roster: bytes = b""  # the roster's canonical JSON
    roster_signature: bytes = b""


@dataclass(frozen=True)
class FinishRequest:
    """After the last round: export, finish, evaluate in full. Reply: :class:`FinalReport`."""

    round: int  # the last round the run completed
    session: str


@dataclass(frozen=True)
class ForgetRequest:
    """The round failed and the run stops (no evaluate of this round will come): forget its
    masking secrets now. Reply: :class:`Forgotten`."""

    round: int
    session: str


Request = (
    KeysRequest
    | SharesRequest
    | TrainRequest
    | SurvivorsRequest
    | RevealRequest
    | EvaluateRequest
    | FinishRequest
    | ForgetRequest
)


# --------------------------------------------------------------------------- replies
@dataclass(frozen=True)
class Shares:
    """A site's Shamir shares of its round secrets, each encrypted to one peer (by peer id)."""

    client: str
    shares: Mapping[str, bytes]


@dataclass(frozen=True)
class SurvivorSignature:
    """A site's signature of the survivor set it was shown (:func:`secagg.survivors_digest`)."""

    client: str
    signature: bytes


@dataclass(frozen=True)
class TrainReport:
    client: str
    status: str  # TRAINED, BUDGET_EXHAUSTED, REFUSED or BEHIND
    resumed: bool = False  # the round was trained before a restart: the same update again
    steps: int | None = None
    clamped: int = 0
    reason: str | None = None
    encrypt_seconds: float = 0.0


@dataclass(frozen=True)
class TrainReply:
    report: TrainReport
    update: bytes | None  # the signed, encrypted (and masked) update; None: nothing to send


@dataclass(frozen=True)
class ApplyReport:
    client: str
    aggregate: str  # APPLIED, REJECTED or NONE
    epsilon: float | None
    can_train_next: bool  # its budget allows the next round (public: a function of ε)
    accuracy: float | None = None  # only when the run releases its evaluation
    accuracy_validation: float | None = None
    decrypt_seconds: float = 0.0
    evaluate_seconds: float = 0.0


@dataclass(frozen=True)
class LedgerEvent:
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float


@dataclass(frozen=True)
class PrivacyReport:
    """ε spent and every DP event of a client's ledger (public parameters; summary.json)."""

    epsilon: float
    delta: float
    budget: float | None
    history: tuple[LedgerEvent, ...]  # one per ledger entry (a retried round appears twice)
    noise_multipliers: tuple[float, ...]
    noise_multiplier: float | None
    sample_rate: float | None
    noise_source: tuple[str, ...]
    ledger_head: str


@dataclass(frozen=True)
class EvaluationReport:
    """A client's final accuracy: sent only when the run releases its evaluation."""

    accuracy: float
    test_examples: int
    majority_class: float
    accuracy_validation: float | None = None


@dataclass(frozen=True)
class FinalReport:
    client: str
    privacy: PrivacyReport | None  # None without DP
    evaluation: EvaluationReport | None  # None unless released
    final_evaluation_seconds: float = 0.0


@dataclass(frozen=True)
class Forgotten:
    """A site has forgotten the round's masking secrets."""

    client: str


Report = TrainReport | ApplyReport | FinalReport | Forgotten
REPORTS: dict[str, type] = {
    t.__name__: t for t in (TrainReport, ApplyReport, FinalReport, Forgotten)
}


# --------------------------------------------------------------------------- report codec
def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON values (nested records as objects, tuples as lists)."""
    return {"kind": type(report).__name__, **asdict(report)}


def report_bytes(report: Report) -> bytes:
    """What a transport that moves bytes sends: canonical JSON (an infinite ε as Infinity)."""
    return json.dumps(report_json(report), sort_keys=True).encode()


def read_report(data: bytes | str, expected: type) -> Report:
    """The report ``data`` holds, if it is an ``expected`` one; else MalformedReport."""
    try:
        document = json.loads(data, parse_constant=_refuse)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise MalformedReport("a report that is not JSON") from None
    if not isinstance(document, dict) or document.pop("kind", None) != expected.__name__:
        raise MalformedReport(f"not a {expected.__name__}")
    return _record(expected, document)


def _refuse(name: str) -> Any:
    """JSON's non-numbers: +∞ is an ε the accountant can give; NaN and -∞ are never sent."""
    if name == "Infinity":
        return math.inf
    raise ValueError(name)


# field types of every record, as JSON gives them
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}
_NESTED = {
    "PrivacyReport": PrivacyReport,
    "EvaluationReport": EvaluationReport,
    "LedgerEvent": LedgerEvent,
}


def _record(kind: type, document: Any) -> Any:
    if not isinstance(document, dict):
        raise MalformedReport(f"{kind.__name__}: not an object")
    names = {f.name: f.type for f in fields(kind)}
    unknown = sorted(set(document) - set(names))
    if unknown:
        raise MalformedReport(f"{kind.__name__}: unknown field(s) {', '.join(unknown)}")
    values = {name: _value(kind, name, names[name], value) for name, value in document.items()}
    try:
        return kind(**values)
    except TypeError:  # a required field is missing
        raise MalformedReport(f"{kind.__name__}: a required field is missing") from None


def _value(kind: type, name: str, spec: str, value: Any) -> Any:
    """``value`` checked against the annotation ``spec`` (a string: annotations are lazy)."""
    options = [s.strip() for s in spec.split("|")]
    if value is None:
        if "None" in options:
            return None
        raise MalformedReport(f"{kind.__name__}.{name} is null")
    for option in options:
        if option.startswith("tuple["):
            inner = option[len("tuple[") : -len(", ...]")]
            if isinstance(value, list):
                return tuple(_value(kind, name, inner, item) for item in value)
        elif option in _NESTED:
            if isinstance(value, dict):
                return _record(_NESTED[option], value)
        elif option in _SCALARS:
            types = _SCALARS[option]
            if isinstance(value, types) and (option == "bool" or not isinstance(value, bool)):
                if isinstance(value, float) and math.isnan(value):
                    break
                return float(value) if option == "float" else value
    raise MalformedReport(f"{kind.__name__}.{name}: unexpected value {value!r:.40}")
