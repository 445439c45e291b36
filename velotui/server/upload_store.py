"""Files agents upload, kept where the server chooses, behind one interface.

Every upload has a key the server makes: ``<client_id>/<flow_id>/<upload_id>``. The database
records that key (as the upload's ``path``); the name the agent gave is metadata there, never part
of a key. An ``UploadStore`` keeps the bytes under keys: ``FolderUploads`` in a folder (the
datastore's own, or one shared by several frontends); an S3-compatible store can follow behind the
same methods.

Chunks are written at their offset and made durable before the database records them, so a chunk
sent again after a crash lands on the same bytes, and bytes past what the database recorded are
never trusted. Every method blocks; the server calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def upload_key(client_id: str, flow_id: str, upload_id: int) -> str:
    """The key an upload is stored under. Raises ValueError for identifiers that are not plain
    names (they are the server's own, so this is a guard, not input handling)."""
    for part in (client_id, flow_id):
        if not _is_plain_name(part):
            raise ValueError(f"unsafe identifier {part!r}")
    return f"{client_id}/{flow_id}/{int(upload_id)}"


def _is_plain_name(part: str) -> bool:
    return bool(_SAFE.fullmatch(part)) and part not in (".", "..")


class UploadStore(Protocol):
    """Where uploaded bytes live. Keys come from ``upload_key`` (or the database, which
    recorded one); a key that is not one raises ValueError."""

    def write_chunk(self, key: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` durably; bytes after it (from an attempt that was never
        recorded) are cut off. Raises OSError when the bytes cannot be stored."""

    def cut(self, key: str, size: int) -> None:
        """Drop what lies past ``size`` (a chunk written but not recorded). Raises OSError."""

    def finish(self, key: str) -> str:
        """The SHA-256 (hex) of the upload's bytes, once its last chunk is written."""

    def size(self, key: str) -> int | None:
        """How many bytes are stored under ``key``; None when nothing is."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes for reading (exports). Raises FileNotFoundError when there are none."""

    def remove(self, keys: Iterable[str]) -> tuple[int, int]:
        """Remove these uploads (those already gone are skipped); how many and how many bytes
        went."""


class FolderUploads:
    """Uploads as files in a folder: ``<root>/<client_id>/<flow_id>/<upload_id>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file behind ``key``. Raises ValueError for a key that could leave the folder."""
        # A datastore written on Windows recorded its keys with backslashes.
        parts = key.replace("\\", "/").split("/")
        if len(parts) != 3 or not all(_is_plain_name(part) for part in parts):
            raise ValueError(f"not an upload key: {key!r}")
        return self.root.joinpath(*parts)

    def write_chunk(self, key: str, offset: int, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(descriptor, offset)
            os.pwrite(descriptor, data, offset)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def cut(self, key: str, size: int) -> None:
        os.truncate(self.path(key), size)

    def finish(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.open(key) as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except OSError:
            return None

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def remove(self, keys: Iterable[str]) -> tuple[int, int]:
        """Remove the files (and the folders they leave empty)."""
        files = size = 0
        folders = set()
        for key in keys:
            path = self.path(key)
            try:
                size += path.stat().st_size
                path.unlink()
                files += 1
            except FileNotFoundError:
                continue
            folders.add(path.parent)
        for folder in folders:
            for empty in (folder, folder.parent):
                with contextlib.suppress(OSError):  # not empty: another flow's files are there
                    empty.rmdir()
        return files, size
