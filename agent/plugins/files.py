"""File rows and the plugins that read one file: stat(), read_file(), parse_lines().

A file row has the columns of Velociraptor's glob(): Name, OSPath, FullPath, Size, Mode, Mtime,
Atime, Ctime, IsDir, IsLink. For a symlink the columns describe what it points to (so a link to a
directory has IsDir true) and IsLink says that the path itself is a link.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_module
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from agent.plugins.arguments import int_argument, os_error_text, path_argument
from agent.plugins.blocking import stream_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

DEFAULT_READ_LENGTH = 4 * 1024 * 1024
"""read_file() returns at most this many bytes unless the query asks for another length."""

MAX_LINE_BYTES = 1024 * 1024
"""parse_lines() splits longer lines, so a file without newlines cannot exhaust memory."""

# Go's os.FileMode.String() prints these type letters, in this order, before the permissions.
_GO_TYPE_LETTERS = "dalTLDpSugct?"


def go_file_mode(st_mode: int) -> str:
    """The mode as Go's ``os.FileMode.String()`` writes it, e.g. ``-rw-r--r--``, ``drwxr-xr-x``."""
    kind = stat_module.S_IFMT(st_mode)
    letters: set[str] = set()
    if kind == stat_module.S_IFDIR:
        letters.add("d")
    elif kind == stat_module.S_IFLNK:
        letters.add("L")
    elif kind == stat_module.S_IFBLK:
        letters.add("D")
    elif kind == stat_module.S_IFCHR:
        letters.update("Dc")
    elif kind == stat_module.S_IFIFO:
        letters.add("p")
    elif kind == stat_module.S_IFSOCK:
        letters.add("S")
    elif kind != stat_module.S_IFREG:
        letters.add("?")
    if st_mode & stat_module.S_ISUID:
        letters.add("u")
    if st_mode & stat_module.S_ISGID:
        letters.add("g")
    if st_mode & stat_module.S_ISVTX:
        letters.add("t")
    kind_text = "".join(letter for letter in _GO_TYPE_LETTERS if letter in letters) or "-"
    permissions = "".join(
        letter if st_mode & (1 << (8 - position)) else "-"
        for position, letter in enumerate("rwxrwxrwx")
    )
    return kind_text + permissions


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def file_row(path: str, link_status: os.stat_result | None = None) -> dict[str, Any]:
    """The file row for ``path`` (already absolute); raises OSError when it cannot be stat'ed.

    ``link_status`` is the path's lstat() result when the caller already has it.
    """
    if link_status is None:
        link_status = os.lstat(path)
    is_link = stat_module.S_ISLNK(link_status.st_mode)
    status = link_status
    if is_link:
        try:
            status = os.stat(path)
        except OSError:
            pass  # a dangling link: describe the link itself
    name = os.path.basename(path.rstrip("/\\")) or path
    return {
        "Name": name,
        "OSPath": path,
        "FullPath": path,
        "Size": status.st_size,
        "Mode": go_file_mode(status.st_mode),
        "Mtime": _utc(status.st_mtime),
        "Atime": _utc(status.st_atime),
        "Ctime": _utc(status.st_ctime),
        "IsDir": stat_module.S_ISDIR(status.st_mode),
        "IsLink": is_link,
    }


# stat() ---------------------------------------------------------------------------------------


async def stat(scope: Scope, *, filename: Any) -> AsyncIterator[dict[str, Any]]:
    """One row describing the file (Name, OSPath, FullPath, Size, Mode, Mtime, Atime, Ctime,
    IsDir, IsLink); no row when it does not exist."""
    path = path_argument(scope, "stat", "filename", filename)
    if path is None:
        return
    path = os.path.abspath(path)
    try:
        row = await asyncio.to_thread(file_row, path)
    except OSError as error:
        scope.error(f"stat(): {path}: {os_error_text(error)}")
        return
    yield row


# read_file() ----------------------------------------------------------------------------------


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


async def read_file(
    scope: Scope, *, filename: Any, offset: Any = 0, length: Any = None
) -> str | None:
    """The file's content from ``offset`` as a string (UTF-8, undecodable bytes replaced), at
    most ``length`` bytes (4 MiB by default); NULL when it cannot be read."""
    path = path_argument(scope, "read_file", "filename", filename)
    start = int_argument(scope, "read_file", "offset", offset if offset is not None else 0)
    size = int_argument(
        scope, "read_file", "length", length if length is not None else DEFAULT_READ_LENGTH
    )
    if path is None or start is None or size is None:
        return None
    try:
        data = await asyncio.to_thread(_read_range, path, start, size)
    except OSError as error:
        scope.error(f"read_file(): {path}: {os_error_text(error)}")
        return None
    return data.decode("utf-8", errors="replace")


# parse_lines() --------------------------------------------------------------------------------


def _lines(handle: BinaryIO) -> Iterator[dict[str, str]]:
    with handle:
        while True:
            raw = handle.readline(MAX_LINE_BYTES)
            if not raw:
                return
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                # Go's line scanner, which Velociraptor uses, also drops a CR before the LF.
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            yield {"Line": raw.decode("utf-8", errors="replace")}


async def parse_lines(scope: Scope, *, filename: Any) -> AsyncIterator[dict[str, str]]:
    """One row per line of the file, with the column Line (without its line ending)."""
    path = path_argument(scope, "parse_lines", "filename", filename)
    if path is None:
        return
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except OSError as error:
        scope.error(f"parse_lines(): {path}: {os_error_text(error)}")
        return
    try:
        async for row in stream_blocking(_lines(handle), max_items=1024):
            yield row
    except OSError as error:
        scope.error(f"parse_lines(): {path}: {os_error_text(error)}")
    finally:
        handle.close()


def register(registry: Registry) -> None:
    """Add stat(), read_file() and parse_lines() to the registry."""
    registry.plugin(stat)
    registry.function(read_file)
    registry.plugin(parse_lines)
