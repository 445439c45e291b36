"""Uploads kept in a folder on this machine: what ``velotui artifacts collect --output DIR``
gives upload(), where an agent would send files to its server.

Each file is copied to ``<folder>/uploads/<its path, made relative>`` (a second upload of the
same name gets ``-1``, ``-2``... before its suffix), streamed and hashed on the way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from agent.plugins.blocking import call_blocking

BLOCK_BYTES = 1024 * 1024


def _relative(name: str) -> Path:
    """``name`` as a path inside the uploads folder: no root, drive, ``..`` or empty parts."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/").replace(":", "")).parts
             if p not in ("/", "", ".", "..")]
    return Path(*parts) if parts else Path("upload")


class FolderUploader:
    """An Uploader (see agent.plugins.upload) writing into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "uploads"

    def _store(self, path: str, name: str) -> dict[str, Any]:
        target = self.folder / _relative(name)
        stem, suffix, counter = target.stem, target.suffix, 0
        while target.exists():
            counter += 1
            target = target.with_name(f"{stem}-{counter}{suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
        with open(path, "rb") as source, open(target, "xb") as out:
            while block := source.read(BLOCK_BYTES):
                out.write(block)
                sha256.update(block)
                md5.update(block)
                size += len(block)
        return {"Path": name, "Size": size, "StoredPath": str(target),
                "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}

    async def upload(self, path: str, name: str | None) -> dict[str, Any]:
        return await call_blocking(self._store, path, name or os.path.abspath(path))
