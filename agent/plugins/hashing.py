"""hash(): the MD5, SHA1 and SHA256 digests of a file."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from agent.plugins.arguments import os_error_text, path_argument
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

CHUNK_BYTES = 1024 * 1024


def hash_file(path: str) -> dict[str, str]:
    """The file's digests as hex strings under MD5, SHA1 and SHA256; raises OSError."""
    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            md5.update(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return {"MD5": md5.hexdigest(), "SHA1": sha1.hexdigest(), "SHA256": sha256.hexdigest()}


async def hash_(scope: Scope, *, path: Any) -> dict[str, str] | None:
    """A dict of the file's MD5, SHA1 and SHA256 (hex); NULL when it cannot be read."""
    filename = path_argument(scope, "hash", "path", path)
    if filename is None:
        return None
    try:
        # Hashing a big file takes seconds: keep it off the event loop the other agents share.
        return await asyncio.to_thread(hash_file, filename)
    except OSError as error:
        scope.error(f"hash(): {filename}: {os_error_text(error)}")
        return None


def register(registry: Registry) -> None:
    """Add hash() to the registry."""
    registry.function(hash_)
