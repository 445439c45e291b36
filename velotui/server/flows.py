"""Flows: one query run on one client, from scheduling to its final state.

A flow is written to the database as ``queued`` before anything is sent, becomes ``running`` when
it is handed to a connected agent, and ends ``finished``, ``error``, ``timeout`` or ``cancelled``.
The server accepts data only for flows it scheduled on that client, applies each sequence number
once, and enforces the flow's limits itself: rows beyond ``max_rows`` are not stored, upload bytes
beyond ``max_upload_bytes`` are refused, and a flow with no final status by its deadline (the agent
too slow, or away) ends as ``timeout``. Each change is acknowledged to the agent only once it is
committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from velotui.server.ids import new_flow_id
from velotui.server.store import Store
from velotui.server.uploads import file_sha256, upload_path, write_chunk
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode, ProtocolError

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("finished", "error", "timeout", "cancelled")
# How long past its own timeout a flow may take to report, for the trip to and from the agent.
DEADLINE_GRACE = 10.0
MAX_KEPT_ROWS = 1000
# Sending a thousand requests need not wait for the network, so it would hold the event loop;
# it lets others run every so many.
YIELD_EVERY = 50


@dataclass
class FlowRecord:
    """A flow as stored."""

    client_id: str
    flow_id: str
    hunt_id: str | None
    kind: str
    query: str
    env: dict[str, Any]
    timeout: float
    max_rows: int
    max_upload_bytes: int
    state: str
    created: float
    started: float | None = None
    finished: float | None = None
    rows: int = 0
    bytes: int = 0
    error: str | None = None
    last_seq: int = 0
    # A condition check's rows, kept as they arrive so judging it needs no read back (None:
    # not kept, or too many to keep; read them from the store).
    kept_rows: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_id, self.flow_id)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def deadline(self) -> float | None:
        if self.timeout <= 0:
            return None
        return self.created + self.timeout + DEADLINE_GRACE

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(self.finished - self.started, 0.0)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> FlowRecord:
        return cls(
            client_id=row["client_id"],
            flow_id=row["flow_id"],
            hunt_id=row["hunt_id"],
            kind=row["kind"],
            query=row["query"],
            env=json.loads(row["env"]),
            timeout=row["timeout"],
            max_rows=row["max_rows"],
            max_upload_bytes=row["max_upload_bytes"],
            state=row["state"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            rows=row["rows"],
            bytes=row["bytes"],
            error=row["error"],
            last_seq=row["last_seq"],
        )

    def describe(self) -> dict[str, Any]:
        """The flow as the operator API shows it."""
        return {
            "client_id": self.client_id,
            "flow_id": self.flow_id,
            "hunt_id": self.hunt_id,
            "kind": self.kind,
            "query": self.query,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "duration": self.duration,
            "rows": self.rows,
            "bytes": self.bytes,
            "error": self.error,
            "timeout": self.timeout,
            "max_rows": self.max_rows,
            "max_upload_bytes": self.max_upload_bytes,
        }


@dataclass
class _Outcome:
    """What applying one message did."""

    duplicate: bool = False
    ended: bool = False
    record: FlowRecord | None = None
    cancel_reason: str | None = None


FinishListener = Callable[[list[FlowRecord]], Awaitable[None]]
_COUNTERS = ("rows", "bytes", "state", "error", "finished", "started")


def _ended(record: FlowRecord, state: str, error: str | None) -> dict[str, Any]:
    """The changes that end ``record`` in ``state``."""
    now = time.time()
    return {
        "state": state,
        "error": error if state != "finished" else None,
        "finished": now,
        "started": record.started if record.started is not None else now,
    }


@dataclass
class _Watch:
    """Wakes whoever follows a flow (``velotui collect``) when it changes."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _pack_rows(rows: list[Any]) -> bytes:
    return msgpack.packb(rows, use_bin_type=True)


def unpack_rows(data: bytes) -> list[dict[str, Any]]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class FlowManager:
    """Schedules flows, delivers them to agents, and applies what agents send back."""

    def __init__(self, store: Store, uploads_dir: Path, sessions: dict[str, Any]) -> None:
        self.store = store
        self.uploads_dir = uploads_dir
        self.sessions = sessions  # client_id -> live session (shared with the client directory)
        self.active: dict[tuple[str, str], FlowRecord] = {}
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._finish_listeners: list[FinishListener] = []
        self._expiry_task: asyncio.Task[None] | None = None

    # Start and stop -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the in-memory view of unfinished flows from the database."""
        rows = await self.store.fetch_all(
            "SELECT * FROM flows WHERE state IN ('queued', 'running')"
        )
        self.active = {(r["client_id"], r["flow_id"]): FlowRecord.from_row(r) for r in rows}
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="flow-expiry")

    async def close(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            try:
                await self._expiry_task
            except asyncio.CancelledError:
                pass

    def on_finished(self, listener: FinishListener) -> None:
        """Call ``listener`` with the flows that reach a final state (a list, so that ending
        many at once is handled at once)."""
        self._finish_listeners.append(listener)

    # Scheduling and delivery --------------------------------------------------------------------

    def prepare(
        self,
        client_id: str,
        query: str,
        *,
        timeout: float = 600.0,
        max_rows: int = 0,
        max_upload_bytes: int = 0,
        env: dict[str, Any] | None = None,
        hunt_id: str | None = None,
        kind: str = "collection",
        flow_id: str | None = None,
        now: float | None = None,
    ) -> FlowRecord:
        """A new flow, not yet stored: ``running`` if its client is connected (it is handed over
        as soon as it is stored), ``queued`` otherwise."""
        now = time.time() if now is None else now
        online = client_id in self.sessions
        return FlowRecord(
            client_id=client_id,
            flow_id=flow_id or new_flow_id(),
            hunt_id=hunt_id,
            kind=kind,
            query=query,
            env=dict(env or {}),
            timeout=float(timeout),
            max_rows=int(max_rows),
            max_upload_bytes=int(max_upload_bytes),
            state="running" if online else "queued",
            created=now,
            started=now if online else None,
            kept_rows=[] if kind == "condition" else None,
        )

    @staticmethod
    def insert(connection: sqlite3.Connection, records: list[FlowRecord]) -> None:
        """Store new flows, inside a caller's write (so a flow and what it is for are one
        transaction)."""
        connection.executemany(
            "INSERT INTO flows (client_id, flow_id, hunt_id, kind, query, env, timeout,"
            " max_rows, max_upload_bytes, state, created, started)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.client_id, r.flow_id, r.hunt_id, r.kind, r.query, json.dumps(r.env),
                 r.timeout, r.max_rows, r.max_upload_bytes, r.state, r.created, r.started)
                for r in records
            ],
        )

    async def adopt(self, records: list[FlowRecord]) -> None:
        """Take stored flows into the running set and hand each to its agent if connected."""
        for record in records:
            self.active[record.key] = record
        for count, record in enumerate(records, 1):
            session = self.sessions.get(record.client_id)
            if session is None:
                continue
            try:
                await self._send_request(session, record)
            except Exception:  # the agent left; the flow is sent again when it returns
                log.debug("could not hand %s to %s", record.flow_id, record.client_id)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a console in the same loop stays responsive

    async def schedule(self, client_id: str, query: str, **options: Any) -> FlowRecord:
        """Store one flow and hand it to its agent now if it is connected (see ``prepare``)."""
        record = self.prepare(client_id, query, **options)
        await self.store.write(lambda connection: self.insert(connection, [record]))
        await self.adopt([record])
        return record

    async def deliver(self, session: Any, record: FlowRecord) -> None:
        """Mark the flow running and send it to the agent."""
        if record.state == "queued":
            started = time.time()

            def mark(connection: sqlite3.Connection) -> None:
                connection.execute(
                    "UPDATE flows SET state = 'running', started = ? WHERE client_id = ?"
                    " AND flow_id = ? AND state = 'queued'",
                    (started, record.client_id, record.flow_id),
                )

            await self.store.write(mark)
            record.state = "running"
            record.started = started
        await self._send_request(session, record)

    async def _send_request(self, session: Any, record: FlowRecord) -> None:
        remaining = record.timeout
        if record.timeout > 0:
            remaining = max(record.created + record.timeout - time.time(), 1.0)
        await session.send(protocol.FlowRequest(
            flow_id=record.flow_id,
            query=record.query,
            timeout=remaining,
            max_rows=record.max_rows,
            max_upload_bytes=record.max_upload_bytes,
            env=record.env,
        ))
        self._notify(record.key)

    async def client_connected(self, session: Any, running_on_agent: list[str]) -> None:
        """A client came (back): flows it lost end in error, the rest are (re)delivered."""
        client_id = session.client_id
        running = set(running_on_agent)
        for record in [r for r in self.active.values() if r.client_id == client_id]:
            if record.state == "running" and record.flow_id in running:
                continue  # the agent still has it and will resend what we lack
            if record.state == "running" and record.last_seq > 0:
                await self.end_many([record], "error",
                                    "the agent lost the collection (restarted?)")
                continue
            # Queued, or handed over but nothing came back: (re)sending cannot duplicate rows.
            await self.deliver(session, record)

    # Agent messages -----------------------------------------------------------------------------

    async def handle(self, session: Any, message: protocol.Message) -> None:
        """Apply a Rows, Log, Upload or Status message and acknowledge it once durable.
        Raises ``ProtocolError`` for data of a flow never scheduled on this client, or a
        sequence number that skips ahead."""
        client_id = session.client_id
        flow_id: str = message.flow_id  # type: ignore[attr-defined]
        seq: int = message.seq  # type: ignore[attr-defined]
        record = self.active.get((client_id, flow_id))
        if record is None:
            await self._handle_inactive(session, flow_id, seq)
            return
        if seq <= record.last_seq:
            await session.send(protocol.Ack(flow_id=flow_id, seq=seq))
            return
        if seq != record.last_seq + 1:
            raise ProtocolError(f"{flow_id}: sequence {seq} after {record.last_seq}")
        if isinstance(message, protocol.Rows):
            outcome = await self._apply_rows(record, message)
        elif isinstance(message, protocol.Log):
            outcome = await self._apply_log(record, message)
        elif isinstance(message, protocol.Upload):
            outcome = await self._apply_upload(record, message)
        elif isinstance(message, protocol.Status):
            outcome = await self._apply_status(record, message)
        else:  # pragma: no cover - the session only passes flow messages
            raise ProtocolError(f"unexpected {message.TYPE}")
        await session.send(protocol.Ack(flow_id=flow_id, seq=seq))
        if outcome.cancel_reason is not None:
            await session.send(protocol.Cancel(flow_id=flow_id, reason=outcome.cancel_reason))
        if outcome.ended:
            await self._finished(record)
        else:
            self._notify(record.key)

    async def _handle_inactive(self, session: Any, flow_id: str, seq: int) -> None:
        row = await self.store.fetch_one(
            "SELECT state FROM flows WHERE client_id = ? AND flow_id = ?",
            (session.client_id, flow_id),
        )
        if row is None:
            raise ProtocolError(
                f"flow {flow_id[:40]} was not scheduled on this client",
                CloseCode.FLOW_NOT_SCHEDULED,
            )
        # The flow has ended here (timed out, cancelled, limit reached): take and drop the rest.
        await session.send(protocol.Ack(flow_id=flow_id, seq=seq))

    async def _commit(
        self, record: FlowRecord, seq: int, sql: str = "", params: tuple[Any, ...] = (),
        **changes: Any,
    ) -> None:
        """Write the message and the flow's new counters in one operation; the in-memory record
        takes the changes only once they are durable."""
        new = {name: changes.get(name, getattr(record, name)) for name in _COUNTERS}

        def op(connection: sqlite3.Connection) -> None:
            if sql:
                connection.execute(sql, params)
            connection.execute(
                "UPDATE flows SET last_seq = ?, rows = ?, bytes = ?, state = ?, error = ?,"
                " finished = ?, started = ? WHERE client_id = ? AND flow_id = ?",
                (seq, new["rows"], new["bytes"], new["state"], new["error"], new["finished"],
                 new["started"], record.client_id, record.flow_id),
            )

        await self.store.write(op)
        for name, value in new.items():
            setattr(record, name, value)
        record.last_seq = seq

    async def _apply_rows(self, record: FlowRecord, message: protocol.Rows) -> _Outcome:
        return await self._store_rows(record, message.seq, message.rows)

    async def _store_rows(self, record: FlowRecord, seq: int, rows: list[dict[str, Any]],
                          ending: dict[str, Any] | None = None) -> _Outcome:
        """Store a batch (cut at the flow's row limit, which then ends the flow in error), and
        ``ending`` (the flow's final state) with it when given."""
        outcome = _Outcome(ended=ending is not None)
        changes: dict[str, Any] = dict(ending or {})
        if record.max_rows and record.rows + len(rows) > record.max_rows:
            rows = rows[: max(record.max_rows - record.rows, 0)]
            reason = f"row limit of {record.max_rows} reached"
            changes = _ended(record, "error", reason)
            outcome.ended = True
            outcome.cancel_reason = reason
        changes["rows"] = record.rows + len(rows)
        if rows:
            await self._commit(
                record, seq,
                "INSERT INTO flow_rows (client_id, flow_id, seq, row_count, data)"
                " VALUES (?, ?, ?, ?, ?)",
                (record.client_id, record.flow_id, seq, len(rows), _pack_rows(rows)),
                **changes,
            )
            if record.kept_rows is not None:
                record.kept_rows.extend(rows)
                if len(record.kept_rows) > MAX_KEPT_ROWS:
                    record.kept_rows = None
        else:
            await self._commit(record, seq, **changes)
        return outcome

    async def _apply_log(self, record: FlowRecord, message: protocol.Log) -> _Outcome:
        await self._commit(
            record, message.seq,
            "INSERT INTO flow_logs (client_id, flow_id, seq, time, level, message)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (record.client_id, record.flow_id, message.seq, message.time or time.time(),
             message.level, message.message),
        )
        return _Outcome()

    async def _apply_upload(self, record: FlowRecord, message: protocol.Upload) -> _Outcome:
        size = len(message.data)
        if record.max_upload_bytes and record.bytes + size > record.max_upload_bytes:
            reason = f"upload limit of {record.max_upload_bytes} bytes reached"
            await self._commit(record, message.seq, **_ended(record, "error", reason))
            return _Outcome(ended=True, cancel_reason=reason)
        row = await self.store.fetch_one(
            "SELECT size, complete FROM uploads WHERE client_id = ? AND flow_id = ?"
            " AND upload_id = ?",
            (record.client_id, record.flow_id, message.upload_id),
        )
        stored_size = row["size"] if row is not None else 0
        if (row is not None and row["complete"]) or message.offset != stored_size:
            raise ProtocolError(
                f"upload {message.upload_id}: chunk at {message.offset}, expected {stored_size}"
            )
        path = upload_path(self.uploads_dir, record.client_id, record.flow_id, message.upload_id)
        await asyncio.to_thread(write_chunk, path, message.offset, message.data)
        sha256 = None
        if message.eof:
            sha256 = await asyncio.to_thread(file_sha256, path)
            if message.sha256 and message.sha256.lower() != sha256:
                log.warning("%s %s upload %s: the agent's SHA-256 differs from the bytes received",
                            record.client_id, record.flow_id, message.upload_id)
        relative = str(path.relative_to(self.uploads_dir))
        await self._commit(
            record, message.seq,
            "INSERT INTO uploads (client_id, flow_id, upload_id, name, path, size, sha256,"
            " complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, flow_id,"
            " upload_id) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,"
            " complete = excluded.complete",
            (record.client_id, record.flow_id, message.upload_id, message.name, relative,
             message.offset + size, sha256, 1 if message.eof else 0),
            bytes=record.bytes + size,
        )
        return _Outcome()

    async def _apply_status(self, record: FlowRecord, message: protocol.Status) -> _Outcome:
        ending = _ended(record, message.state, message.error)
        outcome = await self._store_rows(record, message.seq, message.final_rows, ending)
        outcome.cancel_reason = None  # the agent has finished; there is nothing to cancel
        return outcome

    # Ending flows from the server's side --------------------------------------------------------

    async def cancel(self, client_id: str, flow_id: str, reason: str = "cancelled by the operator"
                     ) -> FlowRecord | None:
        """End an unfinished flow as cancelled and tell its agent to stop."""
        record = self.active.get((client_id, flow_id))
        if record is None:
            return None
        await self.end_many([record], "cancelled", reason)
        return record

    async def end_many(self, records: list[FlowRecord], state: str, error: str) -> None:
        """End unfinished flows in ``state`` in one write, and tell their agents to stop."""
        records = [r for r in records if r.active]
        if not records:
            return
        changes = [(r, _ended(r, state, error)) for r in records]

        def op(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "UPDATE flows SET state = ?, error = ?, finished = ?, started = ?"
                " WHERE client_id = ? AND flow_id = ?",
                [(c["state"], c["error"], c["finished"], c["started"], r.client_id, r.flow_id)
                 for r, c in changes],
            )

        await self.store.write(op)
        for record, change in changes:
            for name, value in change.items():
                setattr(record, name, value)
        for record in records:
            session = self.sessions.get(record.client_id)
            if session is None:
                continue
            try:
                await session.send(protocol.Cancel(flow_id=record.flow_id, reason=error))
            except Exception:  # the agent is going away; the flow has ended here regardless
                log.debug("could not send cancel to %s", record.client_id, exc_info=True)
        await self._finished_many(records)

    async def _finished(self, record: FlowRecord) -> None:
        await self._finished_many([record])

    async def _finished_many(self, records: list[FlowRecord]) -> None:
        for record in records:
            self.active.pop(record.key, None)
            self._notify(record.key)
        for listener in self._finish_listeners:
            try:
                await listener(records)
            except Exception:
                log.exception("a flow-finished listener failed")

    async def expire_due(self, now: float | None = None) -> list[FlowRecord]:
        """End every unfinished flow past its deadline as ``timeout``; returns them."""
        now = time.time() if now is None else now
        due = [r for r in self.active.values() if r.deadline is not None and r.deadline < now]
        by_timeout: dict[float, list[FlowRecord]] = {}
        for record in due:
            by_timeout.setdefault(record.timeout, []).append(record)
        for timeout, records in by_timeout.items():
            await self.end_many(
                records, "timeout",
                f"no result within {timeout:g} s (the agent was away or too slow)",
            )
        return due

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.expire_due()
            except Exception:
                log.exception("expiring flows failed")

    # Following flows ----------------------------------------------------------------------------

    def _notify(self, key: tuple[str, str]) -> None:
        watch = self._watches.pop(key, None)
        if watch is not None:
            watch.changed.set()

    def watch(self, client_id: str, flow_id: str) -> asyncio.Event:
        """An event set at the flow's next change (take it before reading what you follow)."""
        return self._watches.setdefault((client_id, flow_id), _Watch()).changed

    async def get(self, client_id: str, flow_id: str) -> FlowRecord | None:
        record = self.active.get((client_id, flow_id))
        if record is not None:
            return record
        row = await self.store.fetch_one(
            "SELECT * FROM flows WHERE client_id = ? AND flow_id = ?", (client_id, flow_id)
        )
        return FlowRecord.from_row(row) if row is not None else None

    async def row_batches(self, client_id: str, flow_id: str, after_seq: int = 0
                          ) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """(seq, rows) of every stored batch after ``after_seq``, in order."""
        async for row in self.store.iterate(
            "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq > ?"
            " ORDER BY seq",
            (client_id, flow_id, after_seq),
            batch=4,  # a stored batch may be megabytes
        ):
            yield row["seq"], unpack_rows(row["data"])

    async def logs(self, client_id: str, flow_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT seq, time, level, message FROM flow_logs WHERE client_id = ? AND flow_id = ?"
            " AND seq > ? ORDER BY seq",
            (client_id, flow_id, after_seq),
        )
        return [dict(row) for row in rows]

    async def uploads(self, client_id: str, flow_id: str) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT upload_id, name, path, size, sha256, complete FROM uploads"
            " WHERE client_id = ? AND flow_id = ? ORDER BY upload_id",
            (client_id, flow_id),
        )
        return [dict(row) for row in rows]
