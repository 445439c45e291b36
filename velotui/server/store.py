"""The SQLite store: one writer thread that commits in groups, and readers that never block it.

Every change goes through ``Store.write(op)``: ``op`` is a function of a ``sqlite3.Connection``
run on the writer thread. The writer takes every operation waiting, runs them in one transaction
(each in its own savepoint, so one failing operation does not undo the others), commits once with
a full sync, and only then resolves each caller's future. So thousands of agents mean one commit
per batch, not one per message, and whatever a caller was told is written has been synced.

Reads go through a few read-only aiosqlite connections, which in WAL mode see the last commit and
never wait for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    facts TEXT NOT NULL DEFAULT '{}',
    agent_labels TEXT NOT NULL DEFAULT '[]',
    operator_labels TEXT NOT NULL DEFAULT '[]',
    last_hunt_timestamp INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS flows (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    hunt_id TEXT,
    kind TEXT NOT NULL,
    query TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',
    timeout REAL NOT NULL,
    max_rows INTEGER NOT NULL,
    max_upload_bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    rows INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, flow_id)
);
CREATE INDEX IF NOT EXISTS flows_by_state ON flows (state);
CREATE INDEX IF NOT EXISTS flows_by_hunt ON flows (hunt_id, client_id);

CREATE TABLE IF NOT EXISTS flow_rows (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (client_id, flow_id, seq)
);

CREATE TABLE IF NOT EXISTS flow_logs (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (client_id, flow_id, seq)
);

CREATE TABLE IF NOT EXISTS hunts (
    hunt_id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL,
    client_condition TEXT NOT NULL,
    server_condition TEXT NOT NULL DEFAULT '',
    rate REAL NOT NULL DEFAULT 0,
    client_limit INTEGER NOT NULL DEFAULT 0,
    expires REAL NOT NULL,
    timeout REAL NOT NULL,
    max_rows INTEGER NOT NULL DEFAULT 0,
    max_upload_bytes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    stop_reason TEXT,
    created REAL NOT NULL,
    creator TEXT NOT NULL DEFAULT '',
    started REAL,
    start_timestamp INTEGER NOT NULL DEFAULT 0,
    stopped REAL
);

-- One row per client a hunt has looked at; its queue is the client's place in the hunt, so the
-- hunt's counts are a GROUP BY over this table and cannot drift from it.
CREATE TABLE IF NOT EXISTS hunt_clients (
    hunt_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT 'condition',
    flow_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    condition_flow_id TEXT,
    condition_attempt INTEGER NOT NULL DEFAULT 1,
    checked REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT,
    PRIMARY KEY (hunt_id, client_id)
);
CREATE INDEX IF NOT EXISTS hunt_clients_by_queue ON hunt_clients (hunt_id, queue, checked);

CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS uploads (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    upload_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, flow_id, upload_id)
);
"""


class StoreClosed(RuntimeError):
    """The store was closed while an operation waited."""


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.row_factory = sqlite3.Row
    return connection


class Store:
    """The database of one datastore. Open with ``await Store.open(path)``."""

    MAX_BATCH = 512
    READERS = 6

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._read_connections: list[aiosqlite.Connection] = []
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._opened = 0
        self._closed = False
        self.commits = 0  # for benchmarks and tests: how many transactions were committed
        self.operations = 0

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating when needed) the database at ``path`` in WAL mode."""
        store = cls(path)
        await asyncio.to_thread(store._prepare)
        store._writer_thread = threading.Thread(
            target=store._write_loop, name="velotui-store-writer", daemon=True
        )
        store._writer_thread.start()
        return store

    def _prepare(self) -> None:
        connection = _connect(self.path)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(SCHEMA)
            connection.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        finally:
            connection.close()

    # Writing ------------------------------------------------------------------------------------

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in the next group commit; returns its result once the commit is synced.
        Raises what ``op`` raised (its changes undone), or ``StoreClosed``."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((op, future, loop))
        return await future

    def _write_loop(self) -> None:
        connection = _connect(self.path)
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before anyone is told it happened.
        connection.execute("PRAGMA synchronous = FULL")
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit_batch(connection, batch)
                if stop:
                    return
        finally:
            connection.close()

    def _commit_batch(self, connection: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for op, future, loop in batch:
                connection.execute("SAVEPOINT op")
                try:
                    result = op(connection)
                except Exception as error:  # handed back to the caller, not swallowed
                    connection.execute("ROLLBACK TO op")
                    connection.execute("RELEASE op")
                    outcomes.append(((future, loop), None, error))
                else:
                    connection.execute("RELEASE op")
                    outcomes.append(((future, loop), result, None))
            connection.execute("COMMIT")
            self.commits += 1
            self.operations += len(batch)
        except Exception as error:  # the commit itself failed: nothing of the batch happened
            log.exception("store: a group commit failed")
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            outcomes = [((future, loop), None, error) for _op, future, loop in batch]
        for (future, loop), result, error in outcomes:
            loop.call_soon_threadsafe(_resolve, future, result, error)

    # Reading ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _checkout(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read connection for this caller alone until it is done.

        Never shared between readers in flight: SQLite keeps a connection's read snapshot open
        while any statement on it is unfinished, so a reader interleaved with another's long
        iteration would see the database as it was when that iteration began.
        """
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._idle.empty() and self._opened < self.READERS:
            self._opened += 1
            connection = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            connection.row_factory = sqlite3.Row
            await connection.execute("PRAGMA busy_timeout = 10000")
            self._read_connections.append(connection)
        else:
            connection = await self._idle.get()
        try:
            yield connection
        finally:
            self._idle.put_nowait(connection)

    async def fetch_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Every row of a read-only query."""
        async with self._checkout() as connection, connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        """The first row of a read-only query, or None."""
        async with self._checkout() as connection, connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def iterate(
        self, sql: str, params: tuple[Any, ...] = (), batch: int = 256
    ) -> AsyncIterator[sqlite3.Row]:
        """The rows of a read-only query, fetched ``batch`` at a time (memory stays flat; pass
        a small batch for rows that are large, like stored row batches). Holds one read
        connection until the iteration ends."""
        async with self._checkout() as connection, connection.execute(sql, params) as cursor:
            cursor.arraysize = batch
            while True:
                rows = await cursor.fetchmany()
                if not rows:
                    return
                for row in rows:
                    yield row

    async def close(self) -> None:
        """Finish every queued write, then close."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer_thread is not None:
            await asyncio.to_thread(self._writer_thread.join)
        for connection in self._read_connections:
            await connection.close()
        self._read_connections.clear()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
