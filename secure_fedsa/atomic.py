"""Writing a file so that readers see the old or the new content, never a mix or a leftover.

The content goes to a uniquely named temporary file in the same directory, is flushed and
fsynced, and replaces the target with ``os.replace`` (atomic on POSIX and Windows); the directory
is fsynced too where the platform allows. If anything fails (a full disk, an interrupt), the
temporary file is removed and the target is exactly as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json_atomic"]


def atomic_write(
    path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8); ``mode`` sets the
    new file's permissions before it becomes visible (e.g. 0o600 for a key)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """``data`` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; os.replace is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
