"""upload(): send a file to the server through the uploader the host provides.

The agent provides an ``Uploader`` as ``scope.services["uploader"]``; it streams the file in
chunks and enforces the flow's upload limit. ``velotui artifacts collect --output DIR`` gives a
``FolderUploader``; a host without one (``velotui query``) cannot upload.
"""

from __future__ import annotations

import os
import stat as stat_module
from typing import Any, Protocol, runtime_checkable

from agent.plugins.accessors import DATA, FILE, accessor_for
from agent.plugins.arguments import os_error_text
from agent.plugins.blocking import call_blocking
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


def _local_regular_file(path: str) -> os.stat_result:
    status = os.stat(path)
    if not stat_module.S_ISREG(status.st_mode):
        raise OSError(0, "not a regular file")
    return status


async def upload(
    scope: Scope,
    *,
    file: Any,
    name: Any = None,
    accessor: Any = None,
    mtime: Any = None,
    atime: Any = None,
    ctime: Any = None,
    btime: Any = None,
) -> dict[str, Any] | None:
    """A dict describing the uploaded file (Path, Size, sha256, md5, ...); NULL when it could
    not be uploaded. With accessor ``data``, ``file`` is the content and ``name`` is required.
    The times Velociraptor records with an upload are accepted and not kept."""
    del mtime, atime, ctime, btime  # accepted so that artifacts passing them still run
    reader = accessor_for(scope, "upload", accessor)
    if reader is None:
        return None
    target = reader.target(scope, "upload", "file", file)
    if target is None:
        return None
    if name is not None and not isinstance(name, str | os.PathLike):
        scope.error(f"upload(): name must be a string, not {name!r}")
        return None
    stored_name = os.fspath(name) if name is not None else None
    if reader is DATA and not stored_name:
        scope.error("upload(): with accessor 'data', name= must say what to call the upload")
        return None
    described = reader.describe(target)
    uploader = scope.services.get(UPLOADER_SERVICE)
    if uploader is None:
        scope.error("upload(): nowhere to send files here (velotui artifacts collect keeps them"
                    " with --output DIR)")
        return None
    try:
        if reader is FILE:
            await call_blocking(_local_regular_file, target)
            return await uploader.upload(str(target), stored_name)
        # The uploader streams from a path: the content is written to a temporary file first.
        local = reader.local_path(target)
        path = await call_blocking(local.__enter__)
        try:
            return await uploader.upload(path, stored_name)
        finally:
            await call_blocking(local.__exit__, None, None, None)
    except OSError as error:
        scope.error(f"upload(): {described}: {os_error_text(error)}")
    except UploadRefused as refusal:
        scope.error(f"upload(): {described}: {refusal}")
    return None


def register(registry: Registry) -> None:
    """Add upload() to the registry."""
    registry.function(upload)
