"""unzip(): extract a zip or gzip'ed tar archive into a folder, one row per file extracted.

Rows have Velociraptor's columns: OriginalPath (the member's name in the archive), NewPath
(where it was written) and Size. A member whose name would land outside the output folder (an
absolute name, ``..``) and members that are not regular files (links, devices) are skipped and
counted in one warning: an archive from a suspect machine must not write elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

from agent.plugins.accessors import Accessor, Target, accessor_for
from agent.plugins.arguments import os_error_text, path_argument
from agent.plugins.blocking import stream_blocking
from agent.plugins.parsers import go_regex
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

ARCHIVE_TYPES = ("zip", "tgz")
_TYPE_NAMES = {"zip": "zip", "tgz": "tgz", "tar.gz": "tgz"}
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"


class _Skipped:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, name: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = name


def _archive_type(handle: IO[bytes], name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "zip"
    if lowered.endswith((".tgz", ".tar.gz")):
        return "tgz"
    magic = handle.read(4)
    handle.seek(0)
    if magic.startswith(_ZIP_MAGIC):
        return "zip"
    if magic.startswith(_GZIP_MAGIC):
        return "tgz"
    raise OSError("not a zip or tar.gz archive (say which with type=)")


def _destination(output: str, member: str) -> str | None:
    """Where ``member`` goes below ``output``, or None when its name leaves the folder."""
    parts = [part for part in re.split(r"[/\\]+", member) if part not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(member) or re.match(r"^[A-Za-z]:", member):
        return None
    return os.path.join(output, *parts)


def _write(source: IO[bytes], destination: str) -> int:
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with open(destination, "wb") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
        return target.tell()


def _members(handle: IO[bytes], kind: str) -> Iterator[tuple[str, str, Any]]:
    """(name, "file", "dir" or "other", opener) for each member of the archive."""
    if kind == "zip":
        with zipfile.ZipFile(handle) as archive:
            for info in archive.infolist():
                # A zip has no other kinds of member but folders (links made on Unix are rare
                # and are written as the file holding the target's name).
                member_kind = "dir" if info.is_dir() else "file"
                yield info.filename, member_kind, lambda i=info: archive.open(i)
    else:
        with tarfile.open(fileobj=handle, mode="r:gz") as archive:
            for info in archive:
                member_kind = "file" if info.isfile() else "dir" if info.isdir() else "other"
                yield info.name, member_kind, lambda i=info: archive.extractfile(i)


def _extract(reader: Accessor, target: Target, kind: str | None, output: str,
             pattern: re.Pattern[str] | None, skipped: _Skipped) -> Iterator[dict[str, Any]]:
    os.makedirs(output, exist_ok=True)
    with reader.open(target) as handle:
        archive_kind = kind or _archive_type(handle, reader.describe(target))
        try:
            for name, member_kind, opener in _members(handle, archive_kind):
                if pattern is not None and not pattern.search(name):
                    continue
                if member_kind != "file":
                    if member_kind == "other":
                        skipped.add(name)
                    continue
                destination = _destination(output, name)
                if destination is None:
                    skipped.add(name)
                    continue
                with opener() as member:
                    size = _write(member, destination)
                yield {"OriginalPath": name, "NewPath": destination, "Size": size}
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError) as error:
            # RuntimeError: a zip member that is encrypted.
            raise OSError(f"not a readable {archive_kind} archive ({error})") from error


async def unzip(
    scope: Scope,
    *,
    filename: Any,
    output_directory: Any,
    accessor: Any = None,
    filename_filter: Any = None,
    type_: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """One row per file extracted from the archive into ``output_directory`` (made when
    missing): OriginalPath, NewPath, Size. ``filename_filter`` is a regular expression the
    member's name must match; ``type`` (zip, tgz or tar.gz) overrides what the file name or its
    first bytes say."""
    reader = accessor_for(scope, "unzip", accessor)
    target = reader.target(scope, "unzip", "filename", filename) if reader else None
    output = path_argument(scope, "unzip", "output_directory", output_directory)
    kind = None
    if type_ is not None:
        kind = _TYPE_NAMES.get(type_.lower()) if isinstance(type_, str) else None
        if kind is None:
            scope.error(f"unzip(): type must be zip, tgz or tar.gz, not {type_!r}")
            return
    pattern = None
    if filename_filter is not None:
        try:
            pattern = go_regex(str(filename_filter))
        except re.error as error:
            scope.error(f"unzip(): filename_filter {filename_filter!r} is not a valid regular "
                        f"expression: {error}")
            return
    if reader is None or target is None or output is None:
        return
    skipped = _Skipped()
    extraction = _extract(reader, target, kind, os.path.abspath(output), pattern, skipped)
    try:
        async for row in stream_blocking(extraction, max_items=16):
            yield row
    except OSError as error:
        scope.error(f"unzip(): {reader.describe(target)}: {os_error_text(error)}")
    if skipped.first is not None:
        scope.warn(f"unzip(): {reader.describe(target)}: skipped {skipped.count} member(s) that "
                   f"are not files or would be written outside {output}, first {skipped.first}")


def register(registry: Registry) -> None:
    """Add unzip() to the registry."""
    registry.plugin(unzip)
