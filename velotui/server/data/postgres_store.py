"""The PostgreSQL engine under the data layer, with the SQLite ``Store``'s interface: the data
layer's operations and reads run on either unchanged.

Writes: one writer thread holds one synchronous psycopg connection and commits in groups, as the
SQLite store does (each operation in its own savepoint; callers answered after the commit), so
the data layer's synchronous operations run as they are. Reads: two asyncio connection pools,
``agents`` and ``operators``, read-only, each statement its own snapshot of the last commit.

The data layer writes its SQL once, with ``?`` placeholders; here they become psycopg's ``%s``.
Several processes (frontends) on one database: every topic a committed transaction announced
is also NOTIFY'd on one channel, in that transaction (so it is sent only if it commits), and
each store LISTENs on that channel: what another process committed wakes this one's ``changed``
waiters and its ``listen`` listeners. Truth stays in the tables; a notification only says where
to look again. A lost listening connection is made again, and listeners are then told
everything may have changed.

Rows behave as ``sqlite3.Row`` does (by name and by index), and values come back as SQLite gives
them: aggregates over integers (PostgreSQL's NUMERIC) as int, booleans bound as 0 and 1, text
holding NUL as it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.types.string import StrDumperUnknown, TextLoader
from psycopg_pool import AsyncConnectionPool

from velotui.server.data.audit import chain_unchained
from velotui.server.data.schema import (
    ADDED_COLUMNS,
    POSTGRESQL_EXTRA_COLUMNS,
    POSTGRESQL_TABLES,
    SCHEMA_VERSION,
    postgresql_ddl,
)
from velotui.server.data.store import (
    _RECLAIM,
    EVERYTHING,
    POOL_SIZES,
    GroupWriter,
    Pool,
    StoreClosed,
    _resolve,
    commit_group,
    take_batch,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Taken for the transaction that creates or upgrades the schema, so that two servers starting
# on one database at once do it one after the other.
SCHEMA_LOCK = 0x76656C6F  # "velo"
# The channel every frontend NOTIFYs and LISTENs on; a payload is the sending store's origin,
# then its topics, one a line, kept under PostgreSQL's 8000-byte limit.
CHANNEL = "velotui"
PAYLOAD_BYTES = 7000
LISTEN_RETRY_MAX = 5.0
LISTEN_OPEN_TIMEOUT = 30.0


def notification_payloads(origin: str, topics: Iterable[str]) -> list[str]:
    """The NOTIFY payloads that carry ``topics`` from ``origin``: each ``origin`` then topics,
    one a line, none over PAYLOAD_BYTES."""
    payloads: list[str] = []
    lines = [origin]
    size = len(origin.encode())
    for topic in sorted(topics):
        length = len(topic.encode()) + 1
        if size + length > PAYLOAD_BYTES and len(lines) > 1:
            payloads.append("\n".join(lines))
            lines, size = [origin], len(origin.encode())
        lines.append(topic)
        size += length
    if len(lines) > 1:
        payloads.append("\n".join(lines))
    return payloads


def parse_notification(payload: str) -> tuple[str, set[str]]:
    """(origin, topics) of a payload made by ``notification_payloads``."""
    origin, _, rest = payload.partition("\n")
    return origin, set(rest.split("\n")) if rest else set()


class PostgresRow:
    """One row: ``row["name"]``, ``row[0]``, ``keys()``, iteration and ``dict(row)``, as
    ``sqlite3.Row`` (a name that appears twice gives its first column)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PostgresRow):
            return tuple(self._values) == tuple(other._values) and self._index == other._index
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PostgresRow({dict(zip(self._index, self._values, strict=False))!r})"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PostgresRow]:
    index: dict[str, int] = {}
    for position, column in enumerate(cursor.description or ()):
        index.setdefault(column.name, position)
    return lambda values: PostgresRow(values, index)


class _NumberLoader(Loader):
    """NUMERIC (what SUM over BIGINT gives) as SQLite gives it: int, or float."""

    def load(self, data: Any) -> int | float:
        text = bytes(data)
        try:
            return int(text)
        except ValueError:
            return float(text)


class _BoolAsInteger(Dumper):
    """True and False bound as 1 and 0: the schema's flags are integers, as in SQLite."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


# PostgreSQL's text cannot hold NUL, which SQLite's can (an agent's upload name or log line may):
# NUL is written as ESCAPE "0" and ESCAPE itself (a noncharacter no text carries) doubled, and
# read back as it was, so that what is stored is what was given on both databases.
_ESCAPE = "\U0010ffff"
_ESCAPED = re.compile(_ESCAPE + "(.)", re.DOTALL)


class _TextDumper(StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        if "\x00" in obj or _ESCAPE in obj:
            obj = obj.replace(_ESCAPE, _ESCAPE * 2).replace("\x00", _ESCAPE + "0")
        return super().dump(obj)


class _TextLoader(TextLoader):
    def load(self, data: Any) -> Any:
        text = super().load(data)
        if _ESCAPE in text:
            return _ESCAPED.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), text)
        return text


def _adapt(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    connection.adapters.register_loader("numeric", _NumberLoader)
    connection.adapters.register_dumper(bool, _BoolAsInteger)
    connection.adapters.register_dumper(str, _TextDumper)
    for name in ("text", "varchar"):
        connection.adapters.register_loader(name, _TextLoader)
    connection.row_factory = _row_factory  # type: ignore[assignment]


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as ``%s`` (and ``%`` doubled), outside quotes."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class PostgresTransaction:
    """What a write operation may do, as ``store.Transaction`` on SQLite."""

    __slots__ = ("_cursor", "announced")
    dialect = "postgresql"
    IntegrityError: type[Exception] = psycopg.errors.IntegrityError

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._cursor = connection.cursor()
        self.announced: set[str] = set()

    def announce(self, topic: str) -> None:
        """Wake whoever waits on ``topic`` (``changed``) once this transaction commits."""
        self.announced.add(topic)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(translate(sql), params)

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it inserted, updated or deleted."""
        return self._cursor.execute(translate(sql), params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        params = list(params)
        if params:
            self._cursor.executemany(translate(sql), params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a statement (a SELECT, or a change with RETURNING), or None."""
        return self._cursor.execute(translate(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a statement (a SELECT, or a change with RETURNING)."""
        return self._cursor.execute(translate(sql), params).fetchall()


def _connect(url: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(url, autocommit=True)
    _adapt(connection)
    return connection


class PostgresStore(GroupWriter):
    """A datastore's database on PostgreSQL. Open with ``await PostgresStore.open(url)``.

    ``changed(topic)`` wakes waiters after this process's commits and, through LISTEN/NOTIFY,
    after other processes' commits too; ``listen`` listeners hear only the others' (this
    process's memory already follows its own commits)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._pools: dict[str, AsyncConnectionPool] = {}
        # Tells this store's own notifications from the others' (they come back to it too).
        self.origin = uuid.uuid4().hex[:16]
        self.listener_pid: int | None = None  # the listening session's backend, for tests
        self._listening = asyncio.Event()
        self._listen_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to the database at ``url``, creating or upgrading its schema. Raises
        psycopg.OperationalError when it cannot be reached."""
        store = cls(url)
        connection = await asyncio.to_thread(_connect, url)
        try:
            await asyncio.to_thread(_prepare, connection)
        except BaseException:
            connection.close()
            raise
        for pool, size in POOL_SIZES.items():
            store._pools[pool] = AsyncConnectionPool(
                url, min_size=1, max_size=size, open=False, configure=_configure_reader,
                kwargs={"autocommit": True,
                        "options": "-c default_transaction_read_only=on"},
                name=f"velotui-{pool}",
            )
        try:
            for pool in store._pools.values():
                await pool.open(wait=True)
        except BaseException:
            connection.close()
            for pool in store._pools.values():
                await pool.close()
            raise
        store._writer_thread = threading.Thread(
            target=store._write_loop, args=(connection,), name="velotui-store-writer",
            daemon=True)
        store._writer_thread.start()
        store._listen_task = asyncio.create_task(store._listen_forever(),
                                                 name="velotui-store-listener")
        # Listening before anyone relies on hearing others: nothing committed later is missed.
        try:
            await asyncio.wait_for(store._listening.wait(), LISTEN_OPEN_TIMEOUT)
        except TimeoutError:
            await store.close()
            raise psycopg.OperationalError(
                f"could not LISTEN within {LISTEN_OPEN_TIMEOUT:g} s") from None
        return store

    # Hearing other frontends --------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        lost = False
        delay = 0.1
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except psycopg.Error as error:
                log.warning("store: cannot listen on PostgreSQL (%s); again in %.1f s",
                            str(error).strip().splitlines()[0] if str(error) else error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)
                continue
            delay = 0.1
            try:
                await connection.execute(f"LISTEN {CHANNEL}")
                self.listener_pid = connection.info.backend_pid
                if lost:
                    # What was committed while nobody listened is unknown: everything changed.
                    log.warning("store: listening again on PostgreSQL: reloading everything")
                    self._wake_all()
                    self._tell_listeners({EVERYTHING})
                self._listening.set()
                async for notification in connection.notifies():
                    origin, topics = parse_notification(notification.payload)
                    if origin == self.origin or not topics:
                        continue
                    self._wake(topics)
                    self._tell_listeners(topics)
            except psycopg.Error as error:
                log.warning("store: the listening connection to PostgreSQL was lost (%s)",
                            str(error).strip().splitlines()[0] if str(error) else error)
            finally:
                self.listener_pid = None
                with contextlib.suppress(Exception):
                    await connection.close()
            lost = True

    # Writing ------------------------------------------------------------------------------------

    async def reclaim(self) -> None:
        """Let PostgreSQL reuse the space of deleted rows (VACUUM; it hands back to the file
        system what is at the end of a table), after the writes queued before it."""
        await self._queued(_RECLAIM)

    async def size(self) -> int:
        """The database's size in bytes."""
        row = await self.fetch_one("SELECT pg_database_size(current_database()) AS size")
        return int(row["size"]) if row is not None else 0

    def _write_loop(self, connection: psycopg.Connection[Any]) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                if connection.broken:  # the server went away: a new session for what follows
                    connection = self._reconnect(connection)
                if first[0] is _RECLAIM:
                    _vacuum(connection, first)
                    continue
                batch, after, stop = take_batch(self._queue, first, self.MAX_BATCH)
                self._commit_batch(connection, batch)
                if after is not None:
                    _vacuum(connection, after)
                if stop:
                    return
        finally:
            connection.close()

    def _reconnect(self, broken: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        broken.close()
        try:
            return _connect(self.url)
        except psycopg.Error:
            log.exception("store: cannot reconnect to PostgreSQL")
            return broken  # each batch fails (and says so) until the database is back

    def _commit_batch(self, connection: psycopg.Connection[Any], batch: list[Any]) -> None:
        def notify(announced: set[str]) -> None:
            for payload in notification_payloads(self.origin, announced):
                # In the transaction: sent on its commit only, and never before it.
                connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

        commit_group(self, connection.execute, PostgresTransaction(connection), batch,
                     begin="BEGIN", before_commit=notify)

    # Reading ------------------------------------------------------------------------------------

    async def fetch_all(self, sql: str, params: Sequence[Any] = (), *,
                        pool: Pool = "operators") -> list[Any]:
        """Every row of a read-only query (read whole: page big results with LIMIT)."""
        if self._closed:
            raise StoreClosed("the store is closed")
        async with self._pools[pool].connection() as connection:
            cursor = await connection.execute(translate(sql), params)
            return await cursor.fetchall()

    async def fetch_one(self, sql: str, params: Sequence[Any] = (), *,
                        pool: Pool = "operators") -> Any:
        """The first row of a read-only query, or None."""
        if self._closed:
            raise StoreClosed("the store is closed")
        async with self._pools[pool].connection() as connection:
            cursor = await connection.execute(translate(sql), params)
            return await cursor.fetchone()

    async def close(self) -> None:
        """Finish every queued write, then close."""
        if self._closed:
            return
        self._closed = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
        self._queue.put(None)
        if self._writer_thread is not None:
            await asyncio.to_thread(self._writer_thread.join)
        for pool in self._pools.values():
            await pool.close()


async def _configure_reader(connection: psycopg.AsyncConnection[Any]) -> None:
    _adapt(connection)


def _prepare(connection: psycopg.Connection[Any]) -> None:
    """Create the schema or bring it up to date, and record its version, in one transaction
    (PostgreSQL's DDL is transactional: a failed upgrade leaves the database as it was)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        connection.execute(POSTGRESQL_TABLES)  # several statements: no parameters
        for table, column, definition in ADDED_COLUMNS:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
                               f" {postgresql_ddl(definition)}")
        for table, column, definition in POSTGRESQL_EXTRA_COLUMNS:
            connection.execute(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}")
        transaction = PostgresTransaction(connection)
        chain_unchained(transaction)  # audit records of an older velotui
        transaction.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


def _vacuum(connection: psycopg.Connection[Any], item: Any) -> None:
    _marker, future, loop = item
    try:
        connection.execute("VACUUM")  # outside a transaction: the connection autocommits
    except Exception as error:
        log.exception("store: reclaiming free space failed")
        loop.call_soon_threadsafe(_resolve, future, None, error)
    else:
        loop.call_soon_threadsafe(_resolve, future, None, None)
