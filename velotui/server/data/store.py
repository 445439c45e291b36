"""The SQLite engine under the data layer: one writer thread that commits in groups, and two
pools of readers, so that the agents' path never waits behind an operator's reads.

Every change goes through ``Store.write(op)``: ``op`` is a function of a ``Transaction`` run on
the writer thread. The writer takes every operation waiting, runs them in one transaction (each
in its own savepoint, so one failing operation does not undo the others), commits once with a
full sync, and only then resolves each caller's future. So thousands of agents mean one commit
per batch, not one per message, and whatever a caller was told is written has been synced.

Reads go through read-only aiosqlite connections, which in WAL mode see the last commit and never
wait for the writer. A read holds its connection for one statement and hands back every row:
nothing keeps a connection while its caller awaits someone else (big results are read in pages
by the caller). The agents' pool (ingest, recruitment, the foreman) is separate from the
operators' pool (results, exports, the console), so readers cannot starve ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from velotui.server import failpoints
from velotui.server.data.audit import chain_unchained
from velotui.server.data.schema import ADDED_COLUMNS, SCHEMA_VERSION, TABLES

log = logging.getLogger(__name__)
T = TypeVar("T")
Row = sqlite3.Row
Pool = Literal["agents", "operators"]
POOL_SIZES: dict[str, int] = {"agents": 2, "operators": 4}


class StoreClosed(RuntimeError):
    """The store was closed while an operation waited."""


class Transaction:
    """What a write operation may do: run statements inside the writer's transaction.

    A thin layer over the DB-API connection so the data layer's operations read the same on
    another backend: rows come back as mappings, ``changed`` says how many rows a statement
    touched."""

    __slots__ = ("_connection", "announced")
    dialect = "sqlite"
    # What a statement raises on a broken constraint (a duplicate key), for an op to catch.
    IntegrityError: type[Exception] = sqlite3.IntegrityError

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.announced: set[str] = set()

    def announce(self, topic: str) -> None:
        """Wake whoever waits on ``topic`` (``Store.changed``) once this transaction commits."""
        self.announced.add(topic)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._connection.execute(sql, params)

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it inserted, updated or deleted."""
        return self._connection.execute(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a statement (a SELECT, or a change with RETURNING), or None."""
        cursor = self._connection.execute(sql, params)
        row = cursor.fetchone()
        cursor.fetchall()  # a RETURNING statement is complete only once fully read
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a statement (a SELECT, or a change with RETURNING)."""
        return self._connection.execute(sql, params).fetchall()


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.row_factory = sqlite3.Row
    return connection


# What a listener is told when it cannot know what changed (its database connection was lost
# and is back): reload everything.
EVERYTHING = "*"

TopicsListener = Callable[[set[str]], None]


class TopicWaiters:
    """Who waits for which topic to change (``changed``), woken from any thread (``wake``), and
    who listens for what other processes on the same database committed (``listen``)."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()
        self._listeners: list[TopicsListener] = []

    def listen(self, listener: TopicsListener) -> None:
        """Call ``listener`` (on the event loop) with the topics each transaction of ANOTHER
        process on this database announced, once it committed; with ``{EVERYTHING}`` when
        notifications may have been missed. On SQLite (one process) it is never called."""
        self._listeners.append(listener)

    def _tell_listeners(self, topics: set[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(topics)
            except Exception:  # a listener's failure is its own; the others are still told
                log.exception("a topics listener failed")

    def changed(self, topic: str) -> asyncio.Event:
        """An event set once a transaction announcing ``topic`` commits after this call (take
        it before reading, so nothing committed in between is missed)."""
        event = asyncio.Event()
        with self._waiters_lock:
            self._waiters.setdefault(topic, []).append((asyncio.get_running_loop(), event))
        return event

    def forget(self, topic: str, event: asyncio.Event) -> None:
        """Stop waking ``event`` (its waiter gave up)."""
        with self._waiters_lock:
            waiters = self._waiters.get(topic, [])
            self._waiters[topic] = [w for w in waiters if w[1] is not event]

    def _wake_all(self) -> None:
        self._wake(set(self._waiters))

    def _wake(self, topics: set[str]) -> None:
        with self._waiters_lock:
            woken = [w for topic in topics for w in self._waiters.pop(topic, [])]
        for loop, event in woken:
            with contextlib.suppress(RuntimeError):  # its loop closed
                loop.call_soon_threadsafe(event.set)


def take_batch(pending: queue.SimpleQueue[Any], first: Any, limit: int
               ) -> tuple[list[Any], Any, bool]:
    """The operations waiting behind ``first`` (up to ``limit`` in all) for one group commit;
    a reclaim met on the way (to run once the batch commits), and whether ``close`` was."""
    batch = [first]
    while len(batch) < limit:
        try:
            item = pending.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, None, True
        if item[0] is _RECLAIM:
            return batch, item, False
        batch.append(item)
    return batch, None, False


class GroupWriter(TopicWaiters):
    """What both stores share on the writing side: one queue their writer thread empties in
    group commits (``commit_group``), and the counters benchmarks and tests read."""

    MAX_BATCH = 512

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0  # how many transactions were committed
        self.operations = 0

    async def write(self, op: Callable[[Any], T]) -> T:
        """Run ``op`` in the next group commit; returns its result once the commit is durable.
        Raises what ``op`` raised (its changes undone), or ``StoreClosed``."""
        return await self._queued(op)

    async def _queued(self, op: Any) -> Any:
        """Queue ``op`` (an operation, or ``_RECLAIM``) for the writer; its outcome."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, future, loop))
        return await future


class Store(GroupWriter):
    """The database of one datastore. Open with ``await Store.open(path)``."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._read_connections: list[aiosqlite.Connection] = []
        self._idle: dict[str, asyncio.Queue[aiosqlite.Connection]] = {
            pool: asyncio.Queue() for pool in POOL_SIZES
        }
        self._opened = dict.fromkeys(POOL_SIZES, 0)

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating or upgrading when needed) the database at ``path`` in WAL mode."""
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
            # Pages freed by deleting a hunt can be handed back to the file system (reclaim);
            # this takes effect on a new database, an older one gains it at its first VACUUM.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(TABLES)
            _add_missing_columns(connection)
            connection.execute("BEGIN IMMEDIATE")
            chain_unchained(Transaction(connection))  # audit records of an older velotui
            connection.execute("COMMIT")
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        finally:
            connection.close()
        # The database and its journal hold every result: the server's user alone reads them.
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    # Writing ------------------------------------------------------------------------------------

    async def reclaim(self) -> None:
        """Hand the database's free pages back to the file system, after the writes queued
        before it: an incremental vacuum (a full VACUUM the first time, on a database made
        before incremental vacuuming), then the write-ahead log truncated."""
        await self._queued(_RECLAIM)

    def _write_loop(self) -> None:
        connection = _connect(self.path)
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before anyone is told it happened.
        connection.execute("PRAGMA synchronous = FULL")
        transaction = Transaction(connection)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                if first[0] is _RECLAIM:
                    _run_outside(connection, first, _reclaim_space)
                    continue
                # A reclaim met on the way runs outside the transaction, once the batch commits.
                batch, after, stop = take_batch(self._queue, first, self.MAX_BATCH)
                commit_group(self, connection.execute, transaction, batch,
                             begin="BEGIN IMMEDIATE")
                if after is not None:
                    _run_outside(connection, after, _reclaim_space)
                if stop:
                    return
        finally:
            connection.close()

    async def size(self) -> int:
        """The database's size on disk in bytes, with its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    # Reading ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _checkout(self, pool: Pool) -> AsyncIterator[aiosqlite.Connection]:
        """A read connection of ``pool`` for this caller alone until it is done.

        Never shared between readers in flight: SQLite keeps a connection's read snapshot open
        while any statement on it is unfinished, so a reader interleaved with another's would
        see the database as it was when that one began.
        """
        if self._closed:
            raise StoreClosed("the store is closed")
        idle = self._idle[pool]
        if idle.empty() and self._opened[pool] < POOL_SIZES[pool]:
            self._opened[pool] += 1
            connection = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            connection.row_factory = sqlite3.Row
            await connection.execute("PRAGMA busy_timeout = 10000")
            self._read_connections.append(connection)
        else:
            connection = await idle.get()
        try:
            yield connection
        finally:
            idle.put_nowait(connection)

    async def fetch_all(self, sql: str, params: Sequence[Any] = (), *,
                        pool: Pool = "operators") -> list[Row]:
        """Every row of a read-only query (read whole: page big results with LIMIT)."""
        async with self._checkout(pool) as connection, connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: Sequence[Any] = (), *,
                        pool: Pool = "operators") -> Row | None:
        """The first row of a read-only query, or None."""
        async with self._checkout(pool) as connection, connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

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


_RECLAIM = object()  # a queue item's operation: reclaim free pages (outside a transaction)


def _reclaim_space(connection: sqlite3.Connection) -> None:
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # incremental
        # Through executescript: it steps the pragma to its end (a cursor frees one page).
        connection.executescript("PRAGMA incremental_vacuum;")
    else:
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("VACUUM")  # rewrites the file, and makes it incremental from now
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _run_outside(connection: sqlite3.Connection, item: Any,
                 action: Callable[[sqlite3.Connection], None]) -> None:
    _marker, future, loop = item
    try:
        action(connection)
    except Exception as error:
        log.exception("store: reclaiming free space failed")
        loop.call_soon_threadsafe(_resolve, future, None, error)
    else:
        loop.call_soon_threadsafe(_resolve, future, None, None)


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    for table, column, definition in ADDED_COLUMNS:
        present = {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def commit_group(store: Any, execute: Callable[..., Any], transaction: Any, batch: list[Any], *,
                 begin: str, before_commit: Callable[[set[str]], None] | None = None) -> None:
    """The group commit of either store: each operation of ``batch`` in its own savepoint of
    one transaction, one commit, and only then each caller answered. An operation that raised
    is undone alone and its error handed back to its caller; a failed commit fails them all.
    ``before_commit`` sees the topics announced, still inside the transaction."""
    outcomes: list[tuple[Any, Any, BaseException | None]] = []
    announced: set[str] = set()
    try:
        execute(begin)
        for op, future, loop in batch:
            execute("SAVEPOINT op")
            transaction.announced = set()
            try:
                result = op(transaction)
            except Exception as error:  # handed back to the caller, not swallowed
                execute("ROLLBACK TO SAVEPOINT op")
                execute("RELEASE SAVEPOINT op")
                outcomes.append(((future, loop), None, error))
            else:
                execute("RELEASE SAVEPOINT op")
                announced |= transaction.announced
                outcomes.append(((future, loop), result, None))
        if before_commit is not None:
            before_commit(announced)
        execute("COMMIT")
        store.commits += 1
        store.operations += len(batch)
        if "audit" in announced:
            failpoints.reach_in_writer("audit.after_commit")
        if announced:
            store._wake(announced)
    except Exception as error:  # the commit itself failed: nothing of the batch happened
        log.exception("store: a group commit failed")
        with contextlib.suppress(Exception):
            execute("ROLLBACK")
        outcomes = [((future, loop), None, error) for _op, future, loop in batch]
    for (future, loop), result, error in outcomes:
        loop.call_soon_threadsafe(_resolve, future, result, error)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
