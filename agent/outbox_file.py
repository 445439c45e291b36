"""The outbox on disk: one SQLite file in the agent's state folder (``outbox.sqlite``).

It holds every message the server has not acknowledged, encoded as sent, and for each flow its
request and how far it got (opaque progress records), so a restarted agent can resend the one and
continue the other. Three tables:

- ``flows``: one row per flow not yet forgotten, in the order the flows began (``ordinal``), with
  its encoded request (NULL for a flow that cannot be resumed), the seq of its newest message and
  of its Status (0: not put yet);
- ``messages``: the unacknowledged frames, by (flow_id, seq), in the order put (``position``);
- ``progress``: per flow, named msgpack values written in the same transaction as the message they
  describe (the flow runner's resume point).

Every change goes through ``write``: one transaction for a batch of operations, so a batch is on
disk entirely or not at all. The file is in WAL mode with ``synchronous=FULL`` (each commit is
fsynced) unless opened with ``sync=False``, which keeps the order and survives a killed process but
not a power cut. Space freed by acknowledged messages is reused, and handed back to the file
system once it is large or the outbox is empty (``auto_vacuum=INCREMENTAL``).

One connection serves reads and writes (three file descriptors; reads are short). The operations
and what a load returns are shared with ``agent.outbox_memory``, the stand-in of simulated agents.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

SCHEMA_VERSION = 1
# What reading or writing the file may raise: the outbox retries or reports these.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error)
# Freed pages beyond this are returned to the file system at the next write.
COMPACT_FREE_BYTES = 16 * 1024 * 1024
# SQLite's own result codes for a file that is not, or no longer, a database.
_DAMAGED_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE flows (
    ordinal INTEGER PRIMARY KEY,
    flow_id TEXT NOT NULL UNIQUE,
    request BLOB,
    last_seq INTEGER NOT NULL DEFAULT 0,
    status_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    position INTEGER PRIMARY KEY,
    flow_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    UNIQUE (flow_id, seq)
);
CREATE TABLE progress (
    flow_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (flow_id, key)
) WITHOUT ROWID;
"""


class _WrongVersion(sqlite3.DatabaseError):
    """A file of another format version: moved aside like a damaged one."""


# Operations, applied in the order given -------------------------------------------------------


@dataclass(frozen=True)
class NewFlow:
    flow_id: str
    request: bytes | None


@dataclass(frozen=True)
class NewMessage:
    flow_id: str
    seq: int
    frame: bytes
    is_status: bool = False


@dataclass(frozen=True)
class Progress:
    flow_id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Acked:
    flow_id: str
    seq: int


@dataclass(frozen=True)
class Forget:
    flow_id: str


Operation = NewFlow | NewMessage | Progress | Acked | Forget


# What a file holds ----------------------------------------------------------------------------


@dataclass
class StoredFlow:
    """A flow as the file kept it."""

    flow_id: str
    request: bytes | None
    last_seq: int
    status_seq: int
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredOutbox:
    """Everything a file holds: flows in the order they began, and the (flow_id, seq, size) of
    each unacknowledged message in the order put."""

    flows: list[StoredFlow]
    messages: list[tuple[str, int, int]]


class OutboxFile:
    """One outbox file. Methods block (call them in a thread from async code) and are safe to call
    from several threads (one at a time uses the connection)."""

    blocking = True

    def __init__(self, path: Path, sync: bool = True) -> None:
        """Open (or create) the file at ``path``. A damaged file, or one of another version, is
        moved aside (``<name>.damaged-<time>``) with an error logged, and a new one started.
        Raises OSError when the file cannot be opened or created."""
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._connection = self._connect(sync)
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorcode", None) not in _DAMAGED_CODES and not isinstance(
                error, _WrongVersion
            ):
                raise OSError(f"cannot open the outbox {self.path}: {error}") from None
            aside = self._move_aside()
            log.error(
                "the outbox %s is unusable (%s); moved to %s, starting an empty one: its "
                "unacknowledged messages are lost",
                self.path, error, aside,
            )
            try:
                self._connection = self._connect(sync)
            except sqlite3.Error as second:
                raise OSError(f"cannot create the outbox {self.path}: {second}") from None

    @property
    def name(self) -> str:
        """What to call it in messages."""
        return str(self.path)

    def _connect(self, sync: bool) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if os.name == "posix":
                os.chmod(self.path, 0o600)  # rows may be sensitive: the owner's alone
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables == 0:
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before any table
                connection.execute("PRAGMA journal_mode = WAL")
                connection.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise _WrongVersion(f"outbox format {version}, this agent reads {SCHEMA_VERSION}")
            else:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("SELECT count(*) FROM flows").fetchone()  # reads the schema
            connection.execute(f"PRAGMA synchronous = {'FULL' if sync else 'NORMAL'}")
            # The log of a big burst is cut back once it has been copied into the file.
            connection.execute("PRAGMA journal_size_limit = 4194304")
        except BaseException:
            connection.close()
            raise
        return connection

    def _move_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{aside}{suffix}"))
        return aside

    # Reading -----------------------------------------------------------------------------------

    def load(self) -> StoredOutbox:
        """Everything the file holds."""
        with self._lock:
            flows = {
                flow_id: StoredFlow(flow_id, request, last_seq, status_seq)
                for flow_id, request, last_seq, status_seq in self._connection.execute(
                    "SELECT flow_id, request, last_seq, status_seq FROM flows ORDER BY ordinal"
                )
            }
            for flow_id, key, value in self._connection.execute(
                "SELECT flow_id, key, value FROM progress"
            ):
                if flow_id in flows:
                    flows[flow_id].progress[key] = msgpack.unpackb(value, raw=False)
            messages = [
                (flow_id, seq, size)
                for flow_id, seq, size in self._connection.execute(
                    "SELECT flow_id, seq, length(frame) FROM messages ORDER BY position"
                )
            ]
        return StoredOutbox(list(flows.values()), messages)

    def read_frame(self, flow_id: str, seq: int) -> bytes | None:
        """The frame of message (flow_id, seq); None once it is gone (acknowledged)."""
        with self._lock:
            row = self._connection.execute(
                "SELECT frame FROM messages WHERE flow_id = ? AND seq = ?", (flow_id, seq)
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    # Writing -----------------------------------------------------------------------------------

    def write(self, operations: Iterable[Operation]) -> None:
        """Apply ``operations`` in order in one transaction (fsynced unless opened with
        ``sync=False``). Raises sqlite3.Error (the transaction is then rolled back, the file as it
        was) or OSError."""
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                freed = False
                for operation in operations:
                    freed |= _apply(connection, operation)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            if freed:
                self._compact()

    def _compact(self) -> None:
        free_pages = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
        if not free_pages:
            return
        page_size = self._connection.execute("PRAGMA page_size").fetchone()[0]
        empty = self._connection.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        if empty or free_pages * page_size > COMPACT_FREE_BYTES:
            # executescript runs the pragma to its end; execute would free one page.
            self._connection.executescript("PRAGMA incremental_vacuum;")
            if empty:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _apply(connection: sqlite3.Connection, operation: Operation) -> bool:
    """Apply one operation; True when it deleted something."""
    if isinstance(operation, NewMessage):
        connection.execute(
            "INSERT OR REPLACE INTO messages (flow_id, seq, frame) VALUES (?, ?, ?)",
            (operation.flow_id, operation.seq, operation.frame),
        )
        connection.execute(
            "UPDATE flows SET last_seq = ?, status_seq = CASE WHEN ? THEN ? ELSE status_seq END"
            " WHERE flow_id = ?",
            (operation.seq, operation.is_status, operation.seq, operation.flow_id),
        )
        return False
    if isinstance(operation, Progress):
        connection.executemany(
            "INSERT OR REPLACE INTO progress (flow_id, key, value) VALUES (?, ?, ?)",
            [
                (operation.flow_id, key, msgpack.packb(value, use_bin_type=True))
                for key, value in operation.values.items()
            ],
        )
        return False
    if isinstance(operation, Acked):
        connection.execute(
            "DELETE FROM messages WHERE flow_id = ? AND seq <= ?",
            (operation.flow_id, operation.seq),
        )
        return True
    if isinstance(operation, NewFlow):
        connection.execute(
            "INSERT OR IGNORE INTO flows (flow_id, request) VALUES (?, ?)",
            (operation.flow_id, operation.request),
        )
        return False
    for table in ("messages", "progress", "flows"):
        connection.execute(f"DELETE FROM {table} WHERE flow_id = ?", (operation.flow_id,))
    return True
