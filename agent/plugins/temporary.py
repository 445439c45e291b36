"""tempfile() and tempdir(): temporary files and folders that live as long as the query.

What a query creates is kept in ``QueryTemporaries``, one per query run (it lives in the run's
services). They are removed when the run is over: when the host calls ``remove_all()``, or else
when the run's context is released (CPython releases it as soon as the query's last row has been
read), and at the latest when the process exits. Those asked for with ``remove_last`` go after
the others, as in Velociraptor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile as tempfile_module
import weakref
from collections.abc import AsyncIterator
from typing import Any

from agent.plugins.arguments import os_error_text
from agent.plugins.blocking import call_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

TEMPORARIES_SERVICE = "temporaries"
PREFIX = "velotui-tmp-"


def _remove(paths: list[str], last: list[str]) -> None:
    for path in [*reversed(paths), *reversed(last)]:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    paths.clear()
    last.clear()


class QueryTemporaries:
    """The temporary files and folders one query run made."""

    def __init__(self) -> None:
        self._paths: list[str] = []
        self._last: list[str] = []
        self._finalizer = weakref.finalize(self, _remove, self._paths, self._last)

    def add(self, path: str, *, remove_last: bool = False) -> None:
        """Remove ``path`` (a file, or a folder with what it holds) when the query ends."""
        (self._last if remove_last else self._paths).append(path)

    def paths(self) -> list[str]:
        """What is still to be removed, in order of creation (those kept last at the end)."""
        return [*self._paths, *self._last]

    def remove_all(self) -> None:
        """Remove everything now (blocking); later additions are removed at the end again."""
        _remove(self._paths, self._last)


def temporaries(scope: Scope) -> QueryTemporaries:
    """The run's QueryTemporaries, made on first use."""
    found = scope.services.get(TEMPORARIES_SERVICE)
    if not isinstance(found, QueryTemporaries):
        found = QueryTemporaries()
        scope.services[TEMPORARIES_SERVICE] = found
    return found


@contextlib.asynccontextmanager
async def remove_temporaries_after(services: dict[str, Any]) -> AsyncIterator[None]:
    """Remove what the query run holding ``services`` made, once the block ends."""
    try:
        yield
    finally:
        made = services.get(TEMPORARIES_SERVICE)
        if isinstance(made, QueryTemporaries) and made.paths():
            await call_blocking(made.remove_all)


def _content(scope: Scope, data: Any) -> bytes | None:
    if data is None:
        return b""
    items = data if isinstance(data, list | tuple) else [data]
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            parts.append(item.encode("utf-8"))
        elif isinstance(item, bytes | bytearray):
            parts.append(bytes(item))
        else:
            scope.error(f"tempfile(): data must be a string or a list of strings, not {item!r}")
            return None
    return b"".join(parts)


def _write_temporary_file(content: bytes, suffix: str, executable: bool) -> str:
    descriptor, path = tempfile_module.mkstemp(prefix=PREFIX, suffix=suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(path, 0o700 if executable else 0o600)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


async def tempfile(
    scope: Scope,
    *,
    data: Any = None,
    extension: Any = None,
    permissions: Any = None,
    remove_last: Any = False,
) -> str | None:
    """The path of a new temporary file holding ``data`` (a string, or a list of strings
    joined), ending in ``extension``; ``permissions='x'`` makes it executable by its owner.
    Removed when the query ends. NULL when it cannot be made."""
    content = _content(scope, data)
    if content is None:
        return None
    if extension is not None and (not isinstance(extension, str) or "/" in extension
                                  or os.sep in extension):
        scope.error(f"tempfile(): extension must be a file name ending, not {extension!r}")
        return None
    if permissions not in (None, "", "x"):
        scope.error(f"tempfile(): permissions may only be 'x' (executable), not {permissions!r}")
        return None
    try:
        path = await call_blocking(_write_temporary_file, content, extension or "",
                                   permissions == "x")
    except OSError as error:
        scope.error(f"tempfile(): {os_error_text(error)}")
        return None
    temporaries(scope).add(path, remove_last=bool(remove_last))
    return path


async def tempdir(scope: Scope, *, remove_last: Any = False) -> str | None:
    """The path of a new empty temporary folder, removed with what it holds when the query
    ends. NULL when it cannot be made."""
    try:
        path = await call_blocking(tempfile_module.mkdtemp, "", PREFIX)
    except OSError as error:
        scope.error(f"tempdir(): {os_error_text(error)}")
        return None
    temporaries(scope).add(path, remove_last=bool(remove_last))
    return path


def register(registry: Registry) -> None:
    """Add tempfile() and tempdir() to the registry."""
    registry.function(tempfile)
    registry.function(tempdir)
