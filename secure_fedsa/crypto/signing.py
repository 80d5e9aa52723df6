"""Who sent a message: Ed25519 signing identities and the federation's roster (promise P7).

``secure-fedsa keys init`` provisions, next to the CKKS bundles:

- ``roster.json`` (public): every client's Ed25519 verification key and the server's, and a
  digest naming the whole roster. The server verifies updates with it, the clients verify the
  aggregate; auditors may read it.
- ``identities/<client-id>.key`` (mode 0600, one per client, given to that client only): the
  client's signing key, its id and the roster digest.
- ``identities/server.key`` (mode 0600, the server only): the key the server signs aggregates
  with. A signing key decrypts nothing.

Signatures come from the ``cryptography`` package (Ed25519, RFC 8032); nothing here is
home-made. Each signature covers a domain-separation tag (the message kind) and the SHA-256
digest of the whole message (header and ciphertexts), so a signed update cannot be replayed as
an aggregate or under another header. Private keys never appear in ``repr``, logs or errors, and
cannot be pickled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secure_fedsa.atomic import atomic_write
from secure_fedsa.crypto.files import check_private, parse_json_quietly, read_limited, write_new
from secure_fedsa.errors import CryptoError

ROSTER_FILE = "roster.json"
IDENTITIES_DIR = "identities"
SERVER_IDENTITY = "server"
ROSTER_FORMAT = "secure_fedsa.roster"
IDENTITY_FORMAT = "secure_fedsa.identity"
FORMAT_VERSION = 1
SIGNATURE_BYTES = 64
MAX_FILE_BYTES = 1 << 22
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_RAW = serialization.Encoding.Raw


def signed_bytes(kind: str, digest: bytes) -> bytes:
    """What a signature covers: a tag naming the message kind, then the message's digest."""
    return b"secure_fedsa/signed-message/v1/" + kind.encode("ascii") + b"\x00" + digest


# -- keys ---------------------------------------------------------------------------------------
class SigningKey:
    """One party's Ed25519 private key. ``repr`` never shows it; it cannot be pickled."""

    __slots__ = ("owner", "_key")

    def __init__(self, owner: str, private: bytes) -> None:
        try:
            self._key = Ed25519PrivateKey.from_private_bytes(private)
        except ValueError:
            raise CryptoError(f"the signing key of {owner} is malformed") from None
        self.owner = owner

    @classmethod
    def generate(cls, owner: str) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(owner, raw)

    def sign(self, kind: str, digest: bytes) -> bytes:
        return self._key.sign(signed_bytes(kind, digest))

    @property
    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"SigningKey(owner={self.owner!r}, private=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a SigningKey is private and cannot be pickled; load its identity file")


def verify(public: bytes, signature: bytes, kind: str, digest: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of a ``kind`` message with ``digest``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed_bytes(kind, digest))
    except (InvalidSignature, ValueError):
        return False
    return True


# -- the roster ---------------------------------------------------------------------------------
ROSTER_SIGNATURE_KIND = "roster"


@dataclass(frozen=True)
class Roster:
    """Every client's verification key and the server's, and optionally every client's
    aggregation weight, fixed at set-up (client sizes are public); all public.

    ``revocations`` keeps each revoked client's key, in the order of revocation, so that a site
    can check that this roster descends from the one it pinned (:func:`roster_lineage_problem`).
    """

    clients: dict[str, bytes]
    server: bytes
    revoked: tuple[str, ...] = ()
    revocations: tuple[tuple[str, bytes], ...] = ()
    weights: dict[str, float] | None = None

    @property
    def digest(self) -> str:
        """SHA-256 naming this roster (canonical JSON of ids and keys, revocations included)."""
        return hashlib.sha256(_canonical(self._record())).hexdigest()

    def key_of(self, client_id: str) -> bytes | None:
        return self.clients.get(client_id)

    def weight_of(self, client_id: str) -> float | None:
        """The aggregation weight fixed for ``client_id`` at set-up (None: not a member, or a
        roster without weights)."""
        if self.weights is None or client_id not in self.clients:
            return None
        return self.weights.get(client_id)

    def member_weights(self) -> dict[str, float] | None:
        """The fixed weight of every current member (revoked clients left out); None for a
        roster without weights, which cannot aggregate (:func:`require_weights`)."""
        if self.weights is None:
            return None
        return {cid: self.weights[cid] for cid in sorted(self.clients)}

    def _record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "format": ROSTER_FORMAT,
            "version": FORMAT_VERSION,
            "clients": {cid: _b64(key) for cid, key in sorted(self.clients.items())},
            "server": _b64(self.server),
            "revoked": list(self.revoked),
        }
        # optional fields enter the digest only when present: rosters made before them keep
        # their digest (and the identities that pinned it stay valid)
        if self.revocations:
            record["revocations"] = [[cid, _b64(key)] for cid, key in self.revocations]
        if self.weights is not None:
            record["weights"] = {cid: float(w) for cid, w in sorted(self.weights.items())}
        return record

    def to_json(self) -> dict[str, Any]:
        return {**self._record(), "digest": self.digest}

    def without(self, client_id: str) -> Roster:
        if client_id not in self.clients:
            raise CryptoError(f"{client_id!r} is not in the roster")
        clients = {cid: key for cid, key in self.clients.items() if cid != client_id}
        return Roster(
            clients,
            self.server,
            tuple(sorted({*self.revoked, client_id})),
            (*self.revocations, (client_id, self.clients[client_id])),
            self.weights,
        )

    def ancestors(self) -> list[Roster]:
        """This roster and every roster it was made from by revoking clients, newest first:
        undoing the last revocation, then the one before, back to the roster as created."""
        lineage = [self]
        current = self
        for cid, key in reversed(self.revocations):
            current = Roster(
                {**current.clients, cid: key},
                current.server,
                tuple(r for r in current.revoked if r != cid),
                current.revocations[:-1],
                current.weights,
            )
            lineage.append(current)
        return lineage


NO_WEIGHTS = (
    "the roster fixes no client weights: it was made before weights were fixed in the roster. "
    "Aggregates no longer carry an encrypted weight (every site divides by the roster weights of "
    "the contributors), so these keys cannot aggregate. Make a new key set, with each client's "
    "number of training records: `secure-fedsa keys init DIR --client-ids a,b,... "
    "--client-sizes a=N,b=N,...` (an in-process run without --keys makes its own), and hand it "
    "out again"
)


def require_weights(roster: Roster, where: str) -> dict[str, float]:
    """The fixed weights of the roster's current members; CryptoError saying how to make new
    keys when the roster has none (keys made before roster weights cannot aggregate)."""
    weights = roster.member_weights()
    if weights is None:
        raise CryptoError(f"{where}: {NO_WEIGHTS}")
    return weights


def roster_lineage_problem(roster: Roster, pinned_digest: str) -> str | None:
    """Why ``roster`` is neither the roster a site pinned nor a revocation descendant of it
    (pure; None: it is one of them).

    A revocation descendant of the pinned roster P is P with some clients revoked: the same
    server key, every remaining client with the key it has in P, each revoked client listed with
    its key from P in the order of revocation, the same weights. Undoing its revocations one by
    one must reach a roster whose digest is the pinned one; a roster with any key swapped,
    added or changed never does.
    """
    if any(r.digest == pinned_digest for r in roster.ancestors()):
        return None
    legacy = set(roster.revoked) - {cid for cid, _ in roster.revocations}
    hint = (
        f" (it revokes {', '.join(sorted(legacy))} without keeping their keys, as rosters made "
        "before revocation lineage did: revoke them again from the pinned roster)"
        if legacy
        else ""
    )
    return (
        f"the roster offered (digest {roster.digest[:16]}…) is not the roster this site pinned "
        f"(digest {pinned_digest[:16]}…) nor a revocation of it{hint}"
    )


def sign_roster(roster: Roster, server_key: SigningKey) -> bytes:
    """The server's signature of ``roster`` (its digest), which sites check with the server
    key their identity pins."""
    return server_key.sign(ROSTER_SIGNATURE_KIND, bytes.fromhex(roster.digest))


def accept_roster(roster: Roster, signature: bytes, identity: Identity) -> Roster:
    """``roster`` if a site holding ``identity`` may use it, else CryptoError saying why.

    The site accepts only a roster that (1) is signed by the server key its identity pins,
    (2) names that same server key, (3) is the roster its identity pins or a revocation
    descendant of it (:func:`roster_lineage_problem`), and (4) still lists the site with its
    own key. A server that swaps peers' keys for its own fails (3) whatever it signs.
    """
    if roster.server != identity.server_key or not verify(
        identity.server_key, signature, ROSTER_SIGNATURE_KIND, bytes.fromhex(roster.digest)
    ):
        raise CryptoError(
            "the roster the server sent is not signed by this federation's server (the key "
            "this site's identity file pins): refusing the round"
        )
    problem = roster_lineage_problem(roster, identity.roster_digest)
    if problem:
        raise CryptoError(
            f"{problem}: a server that substitutes peers' keys could rebuild this site's masks. "
            "Refusing the round; if the federation really changed, provision this site with "
            "the new roster's identity file"
        )
    if roster.key_of(identity.key.owner) != identity.key.public_bytes:
        raise CryptoError(
            f"the roster does not list {identity.key.owner} with its own key (it was revoked): "
            "this site cannot take part"
        )
    return roster


@dataclass(frozen=True)
class Identity:
    """What one party holds: its signing key and the digest of the roster it belongs to."""

    key: SigningKey
    roster_digest: str
    server_key: bytes  # to verify aggregates (clients) or its own public key (server)


# -- files --------------------------------------------------------------------------------------
def create_identities(
    directory: str | os.PathLike[str],
    client_ids: Iterable[str],
    *,
    weights: Mapping[str, float] | None = None,
) -> Path:
    """Write ``roster.json`` and one 0600 identity file per client and for the server.

    ``weights`` (one per client, positive) fixes each client's aggregation weight in the signed
    roster: each client encrypts its update times its weight, and every client divides the
    aggregate by the weights of the contributors it names
    (:mod:`secure_fedsa.site.aggregate_check`). A roster without weights cannot aggregate. Refuses
    to overwrite anything. Returns the roster's path.
    """
    ids = list(client_ids)
    checked = None if weights is None else check_weights(weights, ids)
    bad = [cid for cid in ids if not CLIENT_ID.fullmatch(cid) or cid == SERVER_IDENTITY]
    if bad or not ids or len(set(ids)) != len(ids):
        raise CryptoError(
            f"client ids must be distinct, 1-128 characters from A-Z a-z 0-9 . _ : @ -, and not "
            f"'{SERVER_IDENTITY}': got {bad or ids}"
        )
    target = Path(directory)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    roster_path, identities = target / ROSTER_FILE, target / IDENTITIES_DIR
    if roster_path.exists() or identities.exists():
        raise CryptoError(f"{target} already holds signing identities; refusing to overwrite")
    keys = {cid: SigningKey.generate(cid) for cid in ids}
    server = SigningKey.generate(SERVER_IDENTITY)
    roster = Roster(
        {cid: k.public_bytes for cid, k in keys.items()}, server.public_bytes, weights=checked
    )
    identities.mkdir(mode=0o700)
    written: list[Path] = []
    try:
        for owner, key in [*keys.items(), (SERVER_IDENTITY, server)]:
            path = identities / f"{owner}.key"
            write_new(path, _dump(_identity_record(key, roster)), 0o600)
            written.append(path)
        write_new(roster_path, _dump(roster.to_json()), 0o644)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        identities.rmdir()
        raise
    return roster_path


def check_weights(weights: Mapping[str, float], client_ids: Iterable[str]) -> dict[str, float]:
    """``weights`` as floats, if there is exactly one finite positive weight per client id."""
    ids = set(client_ids)
    if set(weights) != ids:
        missing, extra = sorted(ids - set(weights)), sorted(set(weights) - ids)
        raise CryptoError(
            f"client weights must name exactly the roster's clients (missing {missing}, "
            f"unknown {extra})"
        )
    out = {}
    for cid, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise CryptoError(f"the weight of {cid} must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight <= 0:
            raise CryptoError(f"the weight of {cid} must be finite and positive, got {weight!r}")
        out[cid] = float(weight)
    return out


def revoke(directory: str | os.PathLike[str], client_id: str) -> Roster:
    """Remove ``client_id`` from ``roster.json`` (its updates are rejected from then on)."""
    path = Path(directory) / ROSTER_FILE
    roster = load_roster(path).without(client_id)
    atomic_write(path, _dump(roster.to_json()))
    return roster


def load_roster(path: str | os.PathLike[str]) -> Roster:
    return parse_roster(_read(Path(path), ROSTER_FORMAT), str(path))


def parse_roster(record: Any, path: str = "roster") -> Roster:
    """A roster from its JSON record (``Roster.to_json``), every field checked."""
    if not isinstance(record, dict) or record.get("format") != ROSTER_FORMAT:
        raise CryptoError(f"{path}: not a roster")
    if record.get("version") != FORMAT_VERSION:
        raise CryptoError(f"{path}: version {record.get('version')!r}, expected {FORMAT_VERSION}")
    fields = {"format", "version", "clients", "server", "revoked", "digest"}
    optional = {"revocations", "weights"}
    if not fields <= set(record) <= fields | optional or not isinstance(record["clients"], dict):
        raise CryptoError(f"{path}: not a roster (unexpected or missing fields)")
    clients = {}
    for cid, key in record["clients"].items():
        if not isinstance(cid, str) or not CLIENT_ID.fullmatch(cid):
            raise CryptoError(f"{path}: malformed client id {cid!r}")
        clients[cid] = _public(key, f"{path}: key of {cid}")
    revoked = record["revoked"]
    if not isinstance(revoked, list) or not all(isinstance(r, str) for r in revoked):
        raise CryptoError(f"{path}: revoked must be a list of client ids")
    revocations = _revocations(record, path)
    if not {cid for cid, _ in revocations} <= set(revoked) or set(clients) & set(revoked):
        raise CryptoError(f"{path}: revocations and the revoked list disagree")
    weights = None
    if "weights" in record:
        if not isinstance(record["weights"], dict):
            raise CryptoError(f"{path}: weights must map client ids to numbers")
        weights = check_weights(record["weights"], [*clients, *(c for c, _ in revocations)])
    roster = Roster(
        clients,
        _public(record["server"], f"{path}: server key"),
        tuple(revoked),
        revocations,
        weights,
    )
    if record["digest"] != roster.digest:
        raise CryptoError(f"{path}: the roster's digest does not match its keys; it was edited")
    return roster


def _revocations(record: dict[str, Any], path: str) -> tuple[tuple[str, bytes], ...]:
    if "revocations" not in record:
        return ()
    items = record["revocations"]
    if not isinstance(items, list) or not items:
        raise CryptoError(f"{path}: revocations must be a non-empty list of [id, key] pairs")
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise CryptoError(f"{path}: revocations must be a list of [id, key] pairs")
        if not CLIENT_ID.fullmatch(item[0]):
            raise CryptoError(f"{path}: malformed revoked client id {item[0]!r}")
        out.append((item[0], _public(item[1], f"{path}: revoked key of {item[0]}")))
    if len({cid for cid, _ in out}) != len(out):
        raise CryptoError(f"{path}: a client is revoked twice")
    return tuple(out)


def load_identity(path: str | os.PathLike[str]) -> Identity:
    """A party's identity file; refuses one that others can read (chmod 600 fixes it)."""
    path = Path(path)
    record = _read(path, IDENTITY_FORMAT)
    fields = {"format", "version", "owner", "private_key", "roster_digest", "server_key"}
    if set(record) != fields or not isinstance(record["owner"], str):
        raise CryptoError(f"{path}: not an identity file (unexpected or missing fields)")
    check_private(path, "a signing key")
    private = _unb64(record["private_key"], f"{path}: private key")
    key = SigningKey(record["owner"], private)
    if not isinstance(record["roster_digest"], str):
        raise CryptoError(f"{path}: malformed roster digest")
    return Identity(key, record["roster_digest"], _public(record["server_key"], f"{path}"))


def identity_path(directory: str | os.PathLike[str], owner: str) -> Path:
    return Path(directory) / IDENTITIES_DIR / f"{owner}.key"


def _identity_record(key: SigningKey, roster: Roster) -> dict[str, Any]:
    return {
        "format": IDENTITY_FORMAT,
        "version": FORMAT_VERSION,
        "owner": key.owner,
        "private_key": _b64(key.private_bytes()),
        "roster_digest": roster.digest,
        "server_key": _b64(roster.server),
    }


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise CryptoError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"{what} is not valid base64") from None


def _public(value: object, what: str) -> bytes:
    raw = _unb64(value, what)
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise CryptoError(f"{what} is not an Ed25519 public key") from None
    return raw


def _dump(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, indent=1) + "\n").encode()


def _read(path: Path, expected_format: str) -> dict[str, Any]:
    record = parse_json_quietly(read_limited(path, MAX_FILE_BYTES, expected_format))
    if not isinstance(record, dict) or record.get("format") != expected_format:
        raise CryptoError(f"{path} is not a {expected_format} file")
    if record.get("version") != FORMAT_VERSION:
        raise CryptoError(f"{path}: version {record.get('version')!r}, expected {FORMAT_VERSION}")
    return record
