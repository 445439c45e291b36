"""upload(): send a file to the server through the uploader the host provides.

The agent provides an ``Uploader`` as ``scope.services["uploader"]``; it streams the file in
chunks and enforces the flow's upload limit. A host without one (``velotui query``) cannot upload.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_module
from typing import Any, Protocol, runtime_checkable

from agent.plugins.arguments import os_error_text, path_argument
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

UPLOADER_SERVICE = "uploader"


class UploadRefused(Exception):
    """Raised by an uploader for an upload it will not make (limit reached, flow cancelled);
    upload() reports the message and returns NULL."""


@runtime_checkable
class Uploader(Protocol):
    """Streams one file to the server."""

    async def upload(self, path: str, name: str | None) -> dict[str, Any]:
        """Send the file at ``path``, stored under ``name`` (metadata only) or its path.

        Returns at least Path, Size, sha256 and md5. Raises OSError when the file cannot be
        read, UploadRefused when the upload is not allowed.
        """
        ...


async def upload(scope: Scope, *, file: Any, name: Any = None) -> dict[str, Any] | None:
    """A dict describing the uploaded file (Path, Size, sha256, md5, ...); NULL when it could
    not be uploaded."""
    path = path_argument(scope, "upload", "file", file)
    if path is None:
        return None
    if name is not None and not isinstance(name, str):
        scope.error(f"upload(): name must be a string, not {name!r}")
        return None
    uploader = scope.services.get(UPLOADER_SERVICE)
    if uploader is None:
        scope.error("upload(): no uploader in this context")
        return None
    try:
        status = await asyncio.to_thread(os.stat, path)
    except OSError as error:
        scope.error(f"upload(): {path}: {os_error_text(error)}")
        return None
    if not stat_module.S_ISREG(status.st_mode):
        scope.error(f"upload(): {path}: not a regular file")
        return None
    try:
        return await uploader.upload(path, name)
    except OSError as error:
        scope.error(f"upload(): {path}: {os_error_text(error)}")
    except UploadRefused as refusal:
        scope.error(f"upload(): {path}: {refusal}")
    return None


def register(registry: Registry) -> None:
    """Add upload() to the registry."""
    registry.function(upload)
