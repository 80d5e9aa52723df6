"""Choose and load the keys of a run: the codecs (CKKS by default, plaintext with
``--no-encryption``) and the signing identities (always).

The in-process federation holds both sides in one process, but keeps them apart: the client
codec is built from ``client.keys`` (secret key), the server codec from ``server.keys`` only;
each client signs with its own identity and the server verifies against ``roster.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.keys import CLIENT_FILE, SERVER_FILE, create_key_bundles
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.crypto.plaintext import PLAINTEXT_FINGERPRINT, PlaintextCodec
from secure_fedsa.crypto.signing import (
    ROSTER_FILE,
    SERVER_IDENTITY,
    Identity,
    Roster,
    check_weights,
    create_identities,
    identity_path,
    load_identity,
    load_roster,
    require_weights,
)
from secure_fedsa.errors import CryptoError


@dataclass(frozen=True)
class Codecs:
    client: object
    server: object
    fingerprint: str


@dataclass(frozen=True)
class Identities:
    """The signing side of a run: the roster, each client's identity, the server's."""

    roster: Roster
    clients: dict[str, Identity]
    server: Identity


def default_client_ids(count: int) -> list[str]:
    """The ids the in-process federation gives its clients."""
    return [f"client-{i}" for i in range(count)]


def check_aggregation_roster(config: RunConfig, roster: Roster, where: str) -> None:
    """A run that shares tensors needs a roster that fixes every client's weight (keys made
    before roster weights cannot aggregate): CryptoError saying how to make new keys."""
    if config.method != "local":
        require_weights(roster, where)


def check_keys_dir(config: RunConfig, client_ids: list[str] | None = None) -> None:
    """A user-given key directory must hold both bundles (with encryption) and a roster with
    an identity for every client, and, when the run shares tensors, a weight for every client;
    checked before a run starts."""
    if config.keys_dir is None:
        return
    directory = Path(config.keys_dir)
    names = [CLIENT_FILE, SERVER_FILE] if config.encryption else []
    for name in [*names, ROSTER_FILE]:
        if not (directory / name).is_file():
            raise CryptoError(
                f"{directory / name} not found: create the keys with `secure-fedsa keys init "
                f"{directory}` or leave out --keys to make fresh keys for this run"
            )
    roster = load_roster(directory / ROSTER_FILE)
    check_aggregation_roster(config, roster, str(directory / ROSTER_FILE))
    for cid in client_ids or default_client_ids(config.num_clients):
        if roster.key_of(cid) is None or not identity_path(directory, cid).is_file():
            raise CryptoError(
                f"{directory} has no signing identity for {cid} (revoked, or made for other "
                "client ids): make keys with `secure-fedsa keys init --client-ids ...`"
            )


def init_keys(
    directory: Path,
    *,
    max_clients: int,
    client_ids: list[str] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> dict[str, Path]:
    """Fresh key bundles and signing identities for one federation (rotate per federation).

    ``client_ids`` default to client-0 .. client-(max_clients - 1). ``sizes`` (each client's
    training-set size, public) fix the clients' aggregation weights in the signed roster."""
    from secure_fedsa.site.client import WEIGHT_UNIT

    ids = client_ids or default_client_ids(max_clients)
    if len(ids) > max_clients:
        raise CryptoError(f"{len(ids)} client ids but --max-clients {max_clients}")
    weights = None if sizes is None else {c: n / WEIGHT_UNIT for c, n in sizes.items()}
    if weights is not None:
        check_weights(weights, ids)  # before any file is written
    client, server = create_key_bundles(directory, CKKSParams(), max_clients=max_clients)
    try:
        roster = create_identities(directory, ids, weights=weights)
    except BaseException:
        client.unlink(missing_ok=True)
        server.unlink(missing_ok=True)
        raise
    return {
        "client": client,
        "server": server,
        "roster": roster,
        "identities": identity_path(directory, SERVER_IDENTITY).parent,
    }


def setup_identities(
    config: RunConfig,
    keys_dir: Path,
    client_ids: list[str],
    weights: Mapping[str, float] | None = None,
) -> Identities:
    """The run's signing identities: from ``config.keys_dir``, or made in ``keys_dir`` with each
    client's aggregation ``weights`` (public: its training-set size) fixed in the signed roster.
    A roster without weights (a run resumed from keys made before them) is refused when the run
    shares tensors."""
    if config.keys_dir is not None:
        keys_dir = Path(config.keys_dir)
    elif not (keys_dir / ROSTER_FILE).exists():
        create_identities(keys_dir, client_ids, weights=weights)
    identities = load_identities(keys_dir, client_ids)
    check_aggregation_roster(config, identities.roster, str(keys_dir / ROSTER_FILE))
    return identities


def load_identities(keys_dir: Path, client_ids: list[str]) -> Identities:
    roster = load_roster(keys_dir / ROSTER_FILE)
    server = load_identity(identity_path(keys_dir, SERVER_IDENTITY))
    clients = {cid: load_identity(identity_path(keys_dir, cid)) for cid in client_ids}
    for owner, identity in [(SERVER_IDENTITY, server), *clients.items()]:
        expected = roster.server if owner == SERVER_IDENTITY else roster.key_of(owner)
        if identity.key.public_bytes != expected:
            raise CryptoError(
                f"{keys_dir}: the identity of {owner} does not belong to this roster "
                "(revoked, or from another `keys init`)"
            )
    return Identities(roster=roster, clients=clients, server=server)


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
        create_key_bundles(keys_dir, CKKSParams(), max_clients=config.max_clients)
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
