"""sqlite(): run a query against an SQLite database file found on the machine, read-only.

Browsers and system services keep their databases open: the file may be locked, or in WAL mode
with recent rows still in the ``-wal`` file (which a read-only reader may not be able to
replay). Then the database and its ``-wal`` and ``-journal`` files are copied into a temporary
folder and the copy is queried, so the query sees what the owner committed and never waits for
it nor changes its files. Every connection is ``query_only``: a statement that would write is
refused with SQLite's own message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

from agent.plugins.accessors import FILE, Accessor, Target, accessor_for
from agent.plugins.blocking import stream_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

# SQLite's header: bytes 18 and 19 are 2 in a WAL database.
_HEADER_BYTES = 20
_WAL_VERSION = 2
_COMPANIONS = ("-wal", "-journal")


class SQLiteProblem(Exception):
    """The database could not be opened or queried; the message says why, in one line."""


def _is_wal(path: str) -> bool:
    with open(path, "rb") as handle:
        header = handle.read(_HEADER_BYTES)
    return len(header) == _HEADER_BYTES and header[18] == _WAL_VERSION


def _open_read_only(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=0, check_same_thread=False)
    try:
        connection.execute("PRAGMA query_only = ON")
        # Reading the schema takes the first lock: a locked file fails here, not mid-query.
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _copy_database(path: str, folder: str) -> str:
    copy = os.path.join(folder, os.path.basename(path) or "database")
    shutil.copyfile(path, copy)
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(path + suffix, copy + suffix)
    return copy


def _open_copy(path: str, folder: str) -> sqlite3.Connection:
    copy = _copy_database(path, folder)
    # Opened read-write so that SQLite replays the copied WAL or rolls back the copied journal;
    # query_only keeps the query itself from writing.
    connection = sqlite3.connect(copy, timeout=0, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    return connection


def _rows(reader: Accessor, target: Target, query: str, parameters: Any
          ) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as cleanup:
        path = cleanup.enter_context(reader.local_path(target))
        folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="velotui-sqlite-"))
        try:
            if not os.path.isfile(path):
                raise SQLiteProblem("not a file" if os.path.exists(path)
                                    else "No such file or directory")
            connection = None
            if reader is FILE and not _is_wal(path):
                # Locked, or a journal to roll back that a reader may not: query a copy.
                with contextlib.suppress(sqlite3.OperationalError):
                    connection = _open_read_only(path)
            if connection is None:
                connection = _open_copy(path, folder)
            cleanup.callback(connection.close)
            cursor = connection.execute(query, parameters)
            names = [column[0] for column in cursor.description or ()]
            while batch := cursor.fetchmany(256):
                for values in batch:
                    yield dict(zip(names, values, strict=True))
        except sqlite3.Error as error:
            raise SQLiteProblem(str(error)) from error
        except OSError as error:
            raise SQLiteProblem(error.strerror or str(error)) from error


def _parameters(scope: Scope, args: Any) -> list[Any] | dict[str, Any] | None:
    if args is None:
        return []
    if isinstance(args, dict):
        return dict(args)
    values = list(args) if isinstance(args, list | tuple) else [args]
    for value in values:
        if value is not None and not isinstance(value, str | int | float | bytes):
            scope.error(f"sqlite(): args must be strings, numbers or NULL, not {value!r}")
            return None
    return values


async def sqlite(
    scope: Scope, *, file: Any, query: Any, accessor: Any = None, args: Any = None
) -> AsyncIterator[dict[str, Any]]:
    """One row per result row of ``query`` (columns named as the query names them) run on the
    database ``file``, read-only; ``args`` fill its ``?`` (a list or one value) or ``:name``
    (a dict) parameters."""
    reader = accessor_for(scope, "sqlite", accessor)
    target = reader.target(scope, "sqlite", "file", file) if reader else None
    if not isinstance(query, str) or not query.strip():
        scope.error(f"sqlite(): query must be an SQL statement, not {query!r}")
        return
    parameters = _parameters(scope, args)
    if reader is None or target is None or parameters is None:
        return
    try:
        async for row in stream_blocking(_rows(reader, target, query, parameters)):
            yield row
    except SQLiteProblem as problem:
        scope.error(f"sqlite(): {reader.describe(target)}: {problem}")


def register(registry: Registry) -> None:
    """Add sqlite() to the registry."""
    registry.plugin(sqlite)
