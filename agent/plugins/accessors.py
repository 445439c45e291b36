"""Accessors: how a file-reading plugin reaches what its path argument names.

Velociraptor's file plugins take ``accessor=``; here ``file`` (the local file system), ``auto``
(the same as ``file`` on this platform) and ``data`` (the path argument itself is the content) are
supported. Any other accessor (``ntfs``, ``registry``, ``zip``, ...) is refused with a one-line
error naming it, so an artifact that needs one says so instead of reading the wrong thing.

Every method that touches the disk blocks: callers run them through ``agent.plugins.blocking``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from agent.plugins.arguments import path_argument
from agent.plugins.file_rows import file_row
from velotui.vql.scope import Scope

SUPPORTED_ACCESSORS = ("auto", "file", "data")

Target = str | bytes
"""What an accessor reads: a path for ``file``, the content itself for ``data``."""


class Accessor:
    """Reads targets of one kind; ``target`` checks a query's argument first."""

    name = ""

    def target(self, scope: Scope, function: str, argument: str, value: Any) -> Target | None:
        """The argument as this accessor's target, or None after logging why it is not one."""
        raise NotImplementedError

    def describe(self, target: Target) -> str:
        """How error messages name the target."""
        raise NotImplementedError

    def open(self, target: Target) -> BinaryIO:
        """A binary handle positioned at the start; raises OSError."""
        raise NotImplementedError

    def stat(self, target: Target) -> dict[str, Any]:
        """The target's file row (the columns of glob()); raises OSError."""
        raise NotImplementedError

    def read(self, target: Target, offset: int = 0, length: int | None = None) -> bytes:
        """At most ``length`` bytes (all when None) from ``offset``; raises OSError."""
        with self.open(target) as handle:
            if offset:
                handle.seek(offset)
            return handle.read() if length is None else handle.read(length)

    @contextlib.contextmanager
    def local_path(self, target: Target) -> Iterator[str]:
        """A path on the local file system holding the target's bytes, for code that can only
        open a path (SQLite, the uploader); a copy exists only for the ``with`` block."""
        raise NotImplementedError


class FileAccessor(Accessor):
    """The local file system."""

    name = "file"

    def target(self, scope: Scope, function: str, argument: str, value: Any) -> Target | None:
        return path_argument(scope, function, argument, value)

    def describe(self, target: Target) -> str:
        return str(target)

    def open(self, target: Target) -> BinaryIO:
        return open(target, "rb")

    def stat(self, target: Target) -> dict[str, Any]:
        return file_row(os.path.abspath(target))

    @contextlib.contextmanager
    def local_path(self, target: Target) -> Iterator[str]:
        yield str(target)


class DataAccessor(Accessor):
    """The argument is the content: a string (as UTF-8) or bytes."""

    name = "data"

    def target(self, scope: Scope, function: str, argument: str, value: Any) -> Target | None:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if value is None:
            scope.error(f"{function}(): {argument} is NULL")
        else:
            scope.error(
                f"{function}(): with accessor 'data', {argument} must be the content as a "
                f"string, not {type(value).__name__}"
            )
        return None

    def describe(self, target: Target) -> str:
        return f"<data, {len(target)} bytes>"

    def open(self, target: Target) -> BinaryIO:
        return io.BytesIO(_as_bytes(target))

    def stat(self, target: Target) -> dict[str, Any]:
        content = _as_bytes(target)
        # Content has no times: the epoch, as for a file that never had any.
        epoch = datetime.fromtimestamp(0, tz=UTC)
        text = content.decode("utf-8", errors="replace")
        return {
            "Name": text, "OSPath": text, "FullPath": text, "Size": len(content),
            "Mode": "-r--r--r--", "Mtime": epoch, "Atime": epoch, "Ctime": epoch,
            "IsDir": False, "IsLink": False,
        }

    @contextlib.contextmanager
    def local_path(self, target: Target) -> Iterator[str]:
        descriptor, path = tempfile.mkstemp(prefix="velotui-data-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(_as_bytes(target))
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _as_bytes(target: Target) -> bytes:
    return target if isinstance(target, bytes) else target.encode("utf-8")


FILE = FileAccessor()
DATA = DataAccessor()
_ACCESSORS: dict[str, Accessor] = {"": FILE, "auto": FILE, "file": FILE, "data": DATA}


def accessor_for(
    scope: Scope, function: str, accessor: Any, *, allowed: tuple[str, ...] = SUPPORTED_ACCESSORS
) -> Accessor | None:
    """The accessor a query asked for (``file`` when NULL), or None after logging a one-line
    error when it is not supported here or by ``function`` (``allowed``)."""
    if accessor is None:
        return FILE
    if not isinstance(accessor, str):
        scope.error(f"{function}(): accessor must be a name, not {accessor!r}")
        return None
    name = accessor.strip().lower()
    found = _ACCESSORS.get(name)
    if found is None or (name and name not in allowed):
        supported = ", ".join(allowed)
        scope.error(
            f"{function}(): accessor '{accessor}' is not supported (supported: {supported})"
        )
        return None
    return found


def targets(
    scope: Scope, function: str, argument: str, value: Any, accessor: Accessor
) -> list[Target] | None:
    """One or more targets (the argument may be a list, as Velociraptor's repeated path
    arguments are), or None after logging the first bad one."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        scope.error(f"{function}(): {argument} is an empty list")
        return None
    found: list[Target] = []
    for item in values:
        target = accessor.target(scope, function, argument, item)
        if target is None:
            return None
        found.append(target)
    return found
