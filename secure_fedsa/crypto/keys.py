"""Key bundles: ``client.keys`` (holds the shared secret key) and ``server.keys`` (holds none).

Both are JSON files::

    {"format": "secure_fedsa.keys", "version": 1, "kind": "client" | "server",
     "params": {...}, "max_clients": int, "public_key_sha256": hex, "fingerprint": hex,
     "public_key": base64, "secret_key": base64}        <- last two in client.keys only

The fingerprint is SHA-256 over the format, parameters, ``max_clients`` and the digest of a SEAL
public key generated from the secret key: it names one key set without revealing anything about
the secret. ``server.keys`` has no secret key, no public key and no Galois or relinearization
keys: the server only adds ciphertexts. ``client.keys`` is created with mode 0600 and refused
when its permissions are wider. Nothing here decrypts; decryption lives in ``ckks_client``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenseal.sealapi as seal

from secure_fedsa.crypto.files import check_private, parse_json_quietly, read_limited, write_new
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.crypto.seal_io import Scratch, make_context
from secure_fedsa.errors import CryptoError

BUNDLE_FORMAT = "secure_fedsa.keys"
BUNDLE_VERSION = 1
CLIENT_FILE = "client.keys"
SERVER_FILE = "server.keys"
MAX_BUNDLE_BYTES = 1 << 20
_COMMON = {"format", "version", "kind", "params", "max_clients", "public_key_sha256", "fingerprint"}
_CLIENT_FIELDS = _COMMON | {"public_key", "secret_key"}
_SERVER_FIELDS = _COMMON
_SECRET_FIELDS = {"secret_key", "galois_keys", "relin_keys"}


def key_fingerprint(params: CKKSParams, max_clients: int, public_key_sha256: str) -> str:
    """Hex SHA-256 naming one key set: parameters, client limit and public-key digest."""
    record = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "params": params.to_dict(),
        "max_clients": max_clients,
        "public_key_sha256": public_key_sha256,
    }
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class ServerKeys:
    """What the server holds: parameters and the fingerprint. Cannot decrypt."""

    params: CKKSParams
    max_clients: int
    fingerprint: str


class ClientKeys:
    """What every client holds: the shared secret key. ``repr`` never shows it."""

    __slots__ = ("params", "max_clients", "fingerprint", "public_key", "_secret_key")

    def __init__(
        self,
        params: CKKSParams,
        max_clients: int,
        fingerprint: str,
        public_key: bytes,
        secret_key: bytes,
    ) -> None:
        self.params = params
        self.max_clients = max_clients
        self.fingerprint = fingerprint
        self.public_key = public_key
        self._secret_key = secret_key

    @property
    def secret_key_bytes(self) -> bytes:
        """SEAL serialization of the secret key: keep it inside the client process."""
        return self._secret_key

    def server_keys(self) -> ServerKeys:
        return ServerKeys(self.params, self.max_clients, self.fingerprint)

    def __repr__(self) -> str:
        return f"ClientKeys(fingerprint={self.fingerprint!r}, secret_key=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("ClientKeys holds a secret key and cannot be pickled; load the bundle")


# -- creation -----------------------------------------------------------------------------------
def create_key_bundles(
    directory: str | os.PathLike[str], params: CKKSParams, *, max_clients: int
) -> tuple[Path, Path]:
    """Generate a fresh key set and write ``client.keys`` (0600) and ``server.keys``.

    Refuses to overwrite existing bundles. Copy ``server.keys`` to the server and
    ``client.keys`` to every client over a trusted channel; the server must never see the latter.
    """
    params.value_bound(max_clients)  # validates max_clients
    target = Path(directory)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    client_path, server_path = target / CLIENT_FILE, target / SERVER_FILE
    for path in (client_path, server_path):
        if path.exists():
            raise CryptoError(f"{path} already exists; refusing to overwrite a key bundle")

    context = make_context(params)
    generator = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    generator.create_public_key(public_key)
    scratch = Scratch()
    try:
        secret = scratch.save(generator.secret_key())
        public = scratch.save(public_key)
    finally:
        scratch.close()
    digest = hashlib.sha256(public).hexdigest()
    common = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "params": params.to_dict(),
        "max_clients": max_clients,
        "public_key_sha256": digest,
        "fingerprint": key_fingerprint(params, max_clients, digest),
    }
    client = dict(common, kind="client", public_key=_b64(public), secret_key=_b64(secret))
    server = dict(common, kind="server")
    write_new(client_path, _dump(client), 0o600)
    try:
        write_new(server_path, _dump(server), 0o644)
    except BaseException:
        client_path.unlink(missing_ok=True)
        raise
    return client_path, server_path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dump(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, indent=1) + "\n").encode()


# -- loading ------------------------------------------------------------------------------------
def load_server_keys(path: str | os.PathLike[str]) -> ServerKeys:
    """Load ``server.keys``; refuses any bundle that carries secret key material."""
    record = _read_bundle(Path(path))
    present = _SECRET_FIELDS & set(record)
    if present:
        raise CryptoError(
            f"{path} contains secret key material ({', '.join(sorted(present))}); a server must "
            "never hold it. Give the server only server.keys from create_key_bundles."
        )
    _expect_fields(record, _SERVER_FIELDS, "server", path)
    params, max_clients, fingerprint = _verified_common(record, path)
    return ServerKeys(params, max_clients, fingerprint)


def load_client_keys(path: str | os.PathLike[str]) -> ClientKeys:
    """Load ``client.keys``; refuses a file that others can read (chmod 600 fixes it)."""
    path = Path(path)
    record = _read_bundle(path)
    if record.get("kind") == "server":
        raise CryptoError(
            f"{path} is a server bundle: it holds no secret key and cannot decrypt; "
            "clients need client.keys"
        )
    check_private(path, "the secret key")
    _expect_fields(record, _CLIENT_FIELDS, "client", path)
    params, max_clients, fingerprint = _verified_common(record, path)
    public = _unb64(record["public_key"], "public_key", path)
    secret = _unb64(record["secret_key"], "secret_key", path)
    if hashlib.sha256(public).hexdigest() != record["public_key_sha256"]:
        raise CryptoError(f"{path}: public key does not match its digest; the bundle is corrupt")
    return ClientKeys(params, max_clients, fingerprint, public, secret)


def _read_bundle(path: Path) -> dict[str, Any]:
    record = parse_json_quietly(read_limited(path, MAX_BUNDLE_BYTES, "key bundle"))
    if record is None:
        raise CryptoError(f"{path} is not a key bundle (invalid JSON)")
    if not isinstance(record, dict) or record.get("format") != BUNDLE_FORMAT:
        raise CryptoError(f"{path} is not a secure_fedsa key bundle")
    if record.get("version") != BUNDLE_VERSION:
        raise CryptoError(
            f"{path} has bundle version {record.get('version')!r}; this library reads version "
            f"{BUNDLE_VERSION}"
        )
    return record


def _expect_fields(record: dict[str, Any], fields: set[str], kind: str, path: object) -> None:
    if record.get("kind") != kind:
        raise CryptoError(f"{path} is not a {kind} key bundle")
    if set(record) != fields:
        odd = sorted(set(record) ^ fields)
        raise CryptoError(f"{path}: unexpected or missing fields {odd}")


def _verified_common(record: dict[str, Any], path: object) -> tuple[CKKSParams, int, str]:
    params = CKKSParams.from_dict(record["params"])
    max_clients = record["max_clients"]
    params.value_bound(max_clients)
    digest = record["public_key_sha256"]
    if not _is_hex(digest, 64) or not _is_hex(record["fingerprint"], 64):
        raise CryptoError(f"{path}: malformed digest or fingerprint")
    fingerprint = key_fingerprint(params, max_clients, digest)
    if record["fingerprint"] != fingerprint:
        raise CryptoError(f"{path}: fingerprint does not match its contents; the bundle is corrupt")
    return params, max_clients, fingerprint


def _is_hex(value: object, length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdef" for c in value)
    )


def _unb64(value: object, name: str, path: object) -> bytes:
    if not isinstance(value, str):
        raise CryptoError(f"{path}: field {name} must be base64 text")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    if not decoded:
        raise CryptoError(f"{path}: field {name} is not valid base64")
    return decoded
