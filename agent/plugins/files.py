"""The plugins and functions that read one file at a time: stat(), read_file(), parse_lines().

Each takes ``accessor=`` (see ``agent.plugins.accessors``); rows of stat() are file rows (see
``agent.plugins.file_rows``), the columns of Velociraptor's glob().
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO

from agent.plugins.accessors import Accessor, Target, accessor_for, targets
from agent.plugins.arguments import int_argument, os_error_text
from agent.plugins.blocking import call_blocking, stream_blocking
from agent.plugins.file_rows import file_row, go_file_mode
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

__all__ = [
    "DEFAULT_READ_LENGTH", "MAX_LINE_BYTES", "file_row", "go_file_mode", "parse_lines",
    "read_file", "read_file_chunks", "register", "stat", "stat_function",
]

DEFAULT_READ_LENGTH = 4 * 1024 * 1024
"""read_file() returns at most this many bytes unless the query asks for another length."""

MAX_LINE_BYTES = 1024 * 1024
"""parse_lines() splits longer lines, so a file without newlines cannot exhaust memory."""

DEFAULT_CHUNK_BYTES = 64 * 1024
"""The read_file() plugin's rows hold this many bytes unless the query asks for another size."""

_GZIP_MAGIC = b"\x1f\x8b"


async def _stat_row(scope: Scope, name: str, filename: Any, accessor: Any
                    ) -> dict[str, Any] | None:
    reader = accessor_for(scope, name, accessor)
    if reader is None:
        return None
    target = reader.target(scope, name, "filename", filename)
    if target is None:
        return None
    try:
        return await call_blocking(reader.stat, target)
    except OSError as error:
        scope.error(f"{name}(): {reader.describe(target)}: {os_error_text(error)}")
        return None


async def stat(scope: Scope, *, filename: Any, accessor: Any = None
               ) -> AsyncIterator[dict[str, Any]]:
    """One row describing the file (Name, OSPath, FullPath, Size, Mode, Mtime, Atime, Ctime,
    IsDir, IsLink); no row when it does not exist."""
    row = await _stat_row(scope, "stat", filename, accessor)
    if row is not None:
        yield row


async def stat_function(scope: Scope, *, filename: Any, accessor: Any = None
                        ) -> dict[str, Any] | None:
    """The file's row, as the stat() plugin gives it; NULL when it does not exist."""
    return await _stat_row(scope, "stat", filename, accessor)


# read_file() ----------------------------------------------------------------------------------


async def read_file(
    scope: Scope, *, filename: Any, offset: Any = 0, length: Any = None, accessor: Any = None
) -> str | None:
    """The file's content from ``offset`` as a string (UTF-8, undecodable bytes replaced), at
    most ``length`` bytes (4 MiB by default); NULL when it cannot be read."""
    reader = accessor_for(scope, "read_file", accessor)
    target = reader.target(scope, "read_file", "filename", filename) if reader else None
    start = int_argument(scope, "read_file", "offset", offset if offset is not None else 0)
    size = int_argument(
        scope, "read_file", "length", length if length is not None else DEFAULT_READ_LENGTH
    )
    if reader is None or target is None or start is None or size is None:
        return None
    try:
        data = await call_blocking(reader.read, target, start, size)
    except OSError as error:
        scope.error(f"read_file(): {reader.describe(target)}: {os_error_text(error)}")
        return None
    return data.decode("utf-8", errors="replace")


def _chunks(reader: Accessor, target: Target, chunk: int, max_length: int | None, name: str
            ) -> Iterator[dict[str, Any]]:
    with reader.open(target) as handle:
        offset = 0
        while max_length is None or offset < max_length:
            wanted = chunk if max_length is None else min(chunk, max_length - offset)
            data = handle.read(wanted)
            if not data:
                return
            yield {"data": data.decode("utf-8", errors="replace"), "offset": offset,
                   "filename": name}
            offset += len(data)


async def read_file_chunks(
    scope: Scope, *, filenames: Any, chunk: Any = None, max_length: Any = None,
    accessor: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """The read_file() plugin: one row per chunk of each file, with the columns data (the bytes
    as UTF-8 text), offset and filename; ``max_length`` bytes of each file at most."""
    reader = accessor_for(scope, "read_file", accessor)
    if reader is None:
        return
    files = targets(scope, "read_file", "filenames", filenames, reader)
    chunk_size = int_argument(scope, "read_file", "chunk",
                              chunk if chunk is not None else DEFAULT_CHUNK_BYTES, minimum=1)
    limit = None if max_length is None else int_argument(
        scope, "read_file", "max_length", max_length)
    if files is None or chunk_size is None or (max_length is not None and limit is None):
        return
    for target in files:
        name = reader.describe(target)
        try:
            async for row in stream_blocking(_chunks(reader, target, chunk_size, limit, name),
                                             max_items=16):
                yield row
        except OSError as error:
            scope.error(f"read_file(): {name}: {os_error_text(error)}")


# parse_lines() --------------------------------------------------------------------------------


def open_maybe_gzip(reader: Accessor, target: Target) -> BinaryIO:
    """The target opened for reading, decompressed on the fly when it is gzip (rotated logs
    often are, and Velociraptor's line parsers read both kinds); raises OSError."""
    handle = reader.open(target)
    try:
        magic = handle.read(2)
        handle.seek(0)
    except OSError:
        handle.close()
        raise
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _lines(reader: Accessor, target: Target, max_line: int) -> Iterator[dict[str, str]]:
    with open_maybe_gzip(reader, target) as handle:
        first = True
        while True:
            try:
                raw = handle.readline(max_line)
            except (EOFError, gzip.BadGzipFile) as error:
                raise OSError(f"corrupt gzip data ({error})") from error
            if not raw:
                return
            if first:
                first = False
                # Windows programs start some logs with a byte order mark: not part of a line.
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                # Go's line scanner, which Velociraptor uses, also drops a CR before the LF.
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            yield {"Line": raw.decode("utf-8", errors="replace")}


async def parse_lines(
    scope: Scope, *, filename: Any, accessor: Any = None, buffer_size: Any = None
) -> AsyncIterator[dict[str, str]]:
    """One row per line of each file (``filename`` may be a list), with the column Line (without
    its line ending); gzip files are read decompressed. Lines longer than ``buffer_size`` (1 MiB
    by default) are split."""
    reader = accessor_for(scope, "parse_lines", accessor)
    if reader is None:
        return
    files = targets(scope, "parse_lines", "filename", filename, reader)
    max_line = int_argument(scope, "parse_lines", "buffer_size",
                            buffer_size if buffer_size is not None else MAX_LINE_BYTES, minimum=1)
    if files is None or max_line is None:
        return
    for target in files:
        try:
            async for row in stream_blocking(_lines(reader, target, max_line), max_items=1024):
                yield row
        except OSError as error:
            scope.error(f"parse_lines(): {reader.describe(target)}: {os_error_text(error)}")


def register(registry: Registry) -> None:
    """Add stat() (plugin and function), read_file() (function and plugin) and parse_lines()."""
    registry.plugin(stat)
    registry.function(stat_function, name="stat")
    registry.function(read_file)
    registry.plugin(read_file_chunks, name="read_file")
    registry.plugin(parse_lines)
