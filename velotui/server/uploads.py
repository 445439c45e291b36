"""Files agents upload, kept under paths the server chooses.

An upload lives at ``uploads/<client_id>/<flow_id>/<upload_id>``; the name the agent gave is
metadata in the database, never part of a path. Chunks are written at their offset and synced
before the database records them, so a chunk sent again after a crash lands on the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def upload_path(root: Path, client_id: str, flow_id: str, upload_id: int) -> Path:
    """Where an upload is stored. Raises ValueError for identifiers that are not plain names
    (they are the server's own, so this is a guard, not input handling)."""
    for part in (client_id, flow_id):
        if not _SAFE.fullmatch(part) or part in (".", ".."):
            raise ValueError(f"unsafe identifier {part!r}")
    return root / client_id / flow_id / str(int(upload_id))


def write_chunk(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` and sync it to disk; bytes after it (from an attempt that was
    never recorded) are cut off."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(descriptor, offset)
        os.pwrite(descriptor, data, offset)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
