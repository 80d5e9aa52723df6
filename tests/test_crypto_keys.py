"""Key bundles: the server bundle cannot decrypt, the client bundle is private, no secret leaks."""

from __future__ import annotations

import json
import os
import pickle
import stat

import pytest

from secure_fedsa.crypto.ckks_client import CKKSClientCodec
from secure_fedsa.crypto.ckks_server import CKKSServerCodec
from secure_fedsa.crypto.keys import (
    ClientKeys,
    ServerKeys,
    create_key_bundles,
    load_client_keys,
    load_server_keys,
)
from secure_fedsa.crypto.params import CKKSParams
from secure_fedsa.errors import CryptoError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return create_key_bundles(tmp_path_factory.mktemp("keys"), CKKSParams(), max_clients=8)


def _secret_b64(client_path) -> str:
    return json.loads(client_path.read_text())["secret_key"]


def _fragments(secret: str) -> list[str]:
    """Pieces of the base64 secret key that must never appear in any text we produce."""
    return [secret[i : i + 24] for i in range(0, len(secret) - 24, 997)]


def test_client_bundle_is_created_0600_and_loads(bundles):
    client_path, server_path = bundles
    assert stat.S_IMODE(client_path.stat().st_mode) == 0o600
    keys = load_client_keys(client_path)
    server = load_server_keys(server_path)
    assert isinstance(keys, ClientKeys) and isinstance(server, ServerKeys)
    assert keys.fingerprint == server.fingerprint
    assert keys.server_keys() == server
    assert len(server.fingerprint) == 64
    CKKSClientCodec(keys)  # the client bundle can build a decryptor


def test_client_bundle_is_never_world_readable_even_with_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        client_path, _ = create_key_bundles(tmp_path, CKKSParams(), max_clients=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(client_path.stat().st_mode) == 0o600


def test_server_bundle_holds_no_key_material(bundles):
    _, server_path = bundles
    record = json.loads(server_path.read_text())
    assert not {"secret_key", "public_key", "galois_keys", "relin_keys"} & set(record)
    assert record["kind"] == "server"


def test_server_bundle_cannot_decrypt(bundles):
    _, server_path = bundles
    with pytest.raises(CryptoError, match="secret key"):
        CKKSClientCodec(load_server_keys(server_path))
    with pytest.raises(CryptoError, match="server bundle"):
        CKKSClientCodec.from_bundle(server_path)
    with pytest.raises(CryptoError, match="server bundle"):
        load_client_keys(server_path)


def test_server_bundle_with_injected_secret_is_refused(bundles, tmp_path):
    client_path, server_path = bundles
    record = json.loads(server_path.read_text())
    record["secret_key"] = _secret_b64(client_path)
    forged = tmp_path / "server.keys"
    forged.write_text(json.dumps(record))
    with pytest.raises(CryptoError, match="secret key material") as info:
        load_server_keys(forged)
    assert all(f not in str(info.value) for f in _fragments(record["secret_key"]))
    with pytest.raises(CryptoError, match="secret key material"):
        CKKSServerCodec.from_bundle(forged)
    with pytest.raises(CryptoError, match="secret key material"):
        load_server_keys(client_path)  # the client bundle is not a server bundle


def test_server_codec_refuses_client_keys(bundles):
    with pytest.raises(CryptoError):
        CKKSServerCodec(load_client_keys(bundles[0]))


def test_wider_permissions_are_refused_with_chmod_hint(bundles, tmp_path):
    copy = tmp_path / "client.keys"
    copy.write_bytes(bundles[0].read_bytes())
    for mode in (0o644, 0o640, 0o604, 0o700):
        copy.chmod(mode)
        with pytest.raises(CryptoError, match="chmod 600"):
            load_client_keys(copy)
    copy.chmod(0o600)
    load_client_keys(copy)
    copy.chmod(0o400)
    load_client_keys(copy)


def test_existing_bundles_are_not_overwritten(bundles):
    with pytest.raises(CryptoError, match="already exists"):
        create_key_bundles(bundles[0].parent, CKKSParams(), max_clients=8)


def test_secret_is_absent_from_repr_str_and_errors(bundles, tmp_path):
    client_path, _ = bundles
    secret = _secret_b64(client_path)
    keys = load_client_keys(client_path)
    codec = CKKSClientCodec(keys)
    texts = [repr(keys), str(keys), repr(codec), str(codec)]
    assert "redacted" in repr(keys)
    with pytest.raises(TypeError):
        pickle.dumps(keys)
    # corrupted bundles: messages name the problem, never the bytes
    record = json.loads(client_path.read_text())
    for name, content in [
        ("truncated", client_path.read_text()[:5000]),
        ("bad_b64", json.dumps({**record, "secret_key": secret[:-3] + "!!!"})),
        ("wrong_fp", json.dumps({**record, "fingerprint": "0" * 64})),
        ("extra", json.dumps({**record, "galois_keys": secret})),
    ]:
        path = tmp_path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, content.encode())
        os.close(fd)
        with pytest.raises(CryptoError) as info:
            load_client_keys(path)
        texts += [str(info.value), repr(info.value)]
        # no chained exception may carry the document (JSONDecodeError.doc would)
        assert info.value.__cause__ is None and info.value.__context__ is None
    for text in texts:
        assert all(f not in text for f in _fragments(secret)), text


def test_secret_key_from_another_key_set_is_detected(bundles, tmp_path):
    other, _ = create_key_bundles(tmp_path / "other", CKKSParams(), max_clients=8)
    record = json.loads(bundles[0].read_text())
    record["secret_key"] = _secret_b64(other)  # fingerprint and public key stay the same
    path = tmp_path / "swapped.keys"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(record).encode())
    os.close(fd)
    keys = load_client_keys(path)
    with pytest.raises(CryptoError, match="does not belong"):
        CKKSClientCodec(keys)


def test_fingerprints_differ_between_key_sets_and_params(tmp_path):
    a = load_server_keys(create_key_bundles(tmp_path / "a", CKKSParams(), max_clients=8)[1])
    b = load_server_keys(create_key_bundles(tmp_path / "b", CKKSParams(), max_clients=8)[1])
    c = load_server_keys(
        create_key_bundles(tmp_path / "c", CKKSParams(8192, (60, 49), 40), max_clients=8)[1]
    )
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
