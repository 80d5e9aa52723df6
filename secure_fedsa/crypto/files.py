"""Key files: created with their final mode from the first instant, read with a size limit,
parsed without leaking their content into errors, refused when others may read a secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from secure_fedsa.errors import CryptoError


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (O_EXCL: never overwrite), write and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a small key file; CryptoError if unreadable or larger than ``limit``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise CryptoError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > limit:
        raise CryptoError(f"{path} is too large to be a {what}")
    return raw


def parse_json_quietly(raw: bytes) -> Any:
    """Parsed JSON, or None when it is not JSON. Errors are not raised from here on purpose: a
    JSON error object carries the whole document (key material included) and would be chained
    as the context of any exception raised while handling it."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def check_private(path: Path, what: str) -> None:
    """Refuse a file holding ``what`` (a secret) that others may read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~0o600:
        raise CryptoError(
            f"{path} holds {what} but has permissions {oct(mode)}; others may read it. "
            f"Run: chmod 600 {path}"
        )
