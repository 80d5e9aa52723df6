"""Choose and load the codecs of a run: CKKS (the default) or plaintext (``--no-encryption``).

The in-process federation holds both sides in one process, but keeps them apart: the client
codec is built from ``client.keys`` (secret key), the server codec from ``server.keys`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.keys import CLIENT_FILE, SERVER_FILE, create_key_bundles
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.crypto.plaintext import PLAINTEXT_FINGERPRINT, PlaintextCodec
from secure_fedsa.errors import CryptoError


@dataclass(frozen=True)
class Codecs:
    client: object
    server: object
    fingerprint: str


def check_keys_dir(config: RunConfig) -> None:
    """A user-given key directory must hold both bundles; checked before a run starts."""
    if not config.encryption or config.keys_dir is None:
        return
    directory = Path(config.keys_dir)
    for name in (CLIENT_FILE, SERVER_FILE):
        if not (directory / name).is_file():
            raise CryptoError(
                f"{directory / name} not found: create bundles with `secure-fedsa keys init "
                f"{directory}` or leave out --keys to make fresh keys for this run"
            )


def init_keys(directory: Path, *, max_clients: int) -> dict[str, Path]:
    """Fresh key bundles for one federation (rotate keys per federation)."""
    client, server = create_key_bundles(directory, CKKSParams(), max_clients=max_clients)
    return {"client": client, "server": server}


def setup_codecs(config: RunConfig, keys_dir: Path) -> Codecs:
    """Codecs for this run; makes fresh keys in ``keys_dir`` unless ``config.keys_dir`` is set."""
    from secure_fedsa.crypto.ckks_client import CKKSClientCodec
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec

    if not config.encryption:
        codec = PlaintextCodec()
        return Codecs(client=codec, server=codec, fingerprint=PLAINTEXT_FINGERPRINT)
    if config.keys_dir is not None:
        keys_dir = Path(config.keys_dir)
    elif not (keys_dir / CLIENT_FILE).exists():
        init_keys(keys_dir, max_clients=config.max_clients)
    client = CKKSClientCodec.from_bundle(keys_dir / CLIENT_FILE)
    server = CKKSServerCodec.from_bundle(keys_dir / SERVER_FILE)
    if client.fingerprint != server.fingerprint:
        raise CryptoError(
            f"{keys_dir}: client and server bundles are from different key sets; "
            "run `secure-fedsa keys init` again and redistribute both"
        )
    if config.num_clients > client.max_clients:
        raise CryptoError(
            f"the keys were made for at most {client.max_clients} clients, the run has "
            f"{config.num_clients}: make new keys with --max-clients"
        )
    return Codecs(client=client, server=server, fingerprint=client.fingerprint)
