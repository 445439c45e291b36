"""Flows: one query run on one client, from scheduling to its final state.

A flow is stored as ``queued`` before anything is sent, becomes ``running`` when it is handed to
a connected agent, and ends ``finished``, ``error``, ``timeout`` or ``cancelled``. The server
accepts data only for flows it scheduled on that client, applies each sequence number once, and
enforces the flow's limits itself (rows, upload bytes and files, log lines and bytes, time).

Every change is a guarded statement of the data layer, and this module's memory (the flows in
flight, for delivery and deadlines) follows only what the writer reports: data arriving while a
flow is cancelled cannot write it back as running, and a flow that has ended is never sent.
Each message is acknowledged to the agent only once it is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from velotui.server import failpoints
from velotui.server.data import AuditEntry, Database, FlowChange, FlowRecord
from velotui.server.data.flows import Ending, Ingested, UploadChunk
from velotui.server.data.records import DEADLINE_GRACE, DEFAULT_LIMITS
from velotui.server.data.store import EVERYTHING
from velotui.server.data.topics import CLIENT
from velotui.server.ids import new_flow_id
from velotui.server.upload_store import UploadStore, upload_key
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode, ProtocolError

log = logging.getLogger(__name__)

# Sending a thousand requests need not wait for the network, so it would hold the event loop;
# it lets others run every so many.
YIELD_EVERY = 50
EXPIRY_INTERVAL = 1.0


# The stored figures of a flow, copied into memory from what the writer reports.
_STORED = tuple(f.name for f in fields(FlowRecord) if f.name not in ("deadline", "kept_rows"))

ChangesListener = Callable[[list[FlowChange]], None]


@dataclass
class _InFlight:
    """What the manager keeps beside a flow in flight: the lock that orders its messages, and
    how far each of its uploads has come."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    uploads: dict[int, tuple[int, bool]] = field(default_factory=dict)


class FlowManager:
    """Schedules flows, delivers them to agents, and applies what agents send back."""

    def __init__(self, db: Database, upload_store: UploadStore, sessions: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.upload_store = upload_store
        self.sessions = sessions  # client_id -> live session (shared with the client directory)
        self.clock = clock
        self.active: dict[tuple[str, str], FlowRecord] = {}
        self._by_client: dict[str, dict[str, FlowRecord]] = {}  # the same flows, per client
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self._watches: dict[tuple[str, str], asyncio.Event] = {}
        self._listeners: list[ChangesListener] = []
        # Flows and hunts being ended right now: none of their flows may be sent meanwhile.
        self._held_flows: set[tuple[str, str]] = set()
        self._held_hunts: set[str] = set()
        self._expiry_task: asyncio.Task[None] | None = None
        # Clients whose flows another frontend stored or ended (heard through the store), and
        # when each flow in flight was taken in (to tell a read that began before it).
        self._heard_clients: set[str] = set()
        self._heard = asyncio.Event()
        self._follow_task: asyncio.Task[None] | None = None
        self._taken_in = 0
        self._taken_in_at: dict[tuple[str, str], int] = {}

    # Start and stop -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the flows in flight from the database; their deadlines carry on from what
        was left of each when the server stopped."""
        now = self.clock()
        for record in await self.db.flows.active():
            record.set_deadline(now)
            self._add_active(record)
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="flow-expiry")
        self.db.store.listen(self._heard_from_others)
        self._follow_task = asyncio.create_task(self._follow_forever(), name="flow-follower")

    async def close(self) -> None:
        for task in (self._expiry_task, self._follow_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def on_changes(self, listener: ChangesListener) -> None:
        """Call ``listener`` with every committed batch of flow changes that ended flows or
        moved clients (it must not fail; a failure is logged, and reconciliation repairs what
        the listener would have done)."""
        self._listeners.append(listener)

    # Scheduling and delivery --------------------------------------------------------------------

    def prepare(
        self,
        client_id: str,
        query: str,
        *,
        timeout: float = DEFAULT_LIMITS.timeout,
        max_rows: int = DEFAULT_LIMITS.max_rows,
        max_upload_bytes: int = DEFAULT_LIMITS.max_upload_bytes,
        max_logs: int = DEFAULT_LIMITS.max_logs,
        max_log_bytes: int = DEFAULT_LIMITS.max_log_bytes,
        max_uploads: int = DEFAULT_LIMITS.max_uploads,
        env: dict[str, Any] | None = None,
        hunt_id: str | None = None,
        kind: str = "collection",
        flow_id: str | None = None,
        now: float | None = None,
        condition: str = "",
        hold: bool = False,
        artifacts: str = "",
    ) -> FlowRecord:
        """A new flow, not yet stored: ``running`` if its client is connected (it is handed over
        as soon as it is stored), ``queued`` otherwise. A hunt flow (kind "hunt") runs
        ``condition`` first (and with ``hold`` waits for the server's judgement)."""
        now = time.time() if now is None else now
        online = client_id in self.sessions
        record = FlowRecord(
            client_id=client_id,
            flow_id=flow_id or new_flow_id(),
            hunt_id=hunt_id,
            kind=kind,
            query=query,
            env=dict(env or {}),
            timeout=float(timeout),
            max_rows=int(max_rows),
            max_upload_bytes=int(max_upload_bytes),
            max_logs=int(max_logs),
            max_log_bytes=int(max_log_bytes),
            max_uploads=int(max_uploads),
            condition=condition,
            hold=hold,
            stage="check" if kind == "hunt" else "",
            state="running" if online else "queued",
            created=now,
            started=now if online else None,
            kept_rows=[] if kind == "condition" else None,
            artifacts=artifacts,
        )
        record.set_deadline(self.clock(), now)
        return record

    async def adopt(self, records: Sequence[FlowRecord]) -> None:
        """Take stored flows into the set in flight and hand each to its agent if connected
        (one another frontend's notice brought here first was handed over then)."""
        records = [record for record in records if record.key not in self.active]
        for record in records:
            self._add_active(record)
        for count, record in enumerate(records, 1):
            session = self.sessions.get(record.client_id)
            if session is not None:
                await self._send_request(session, record)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a console in the same loop stays responsive

    async def schedule(self, client_id: str, query: str, audit: AuditEntry | None = None,
                       **options: Any) -> FlowRecord:
        """Store one flow and hand it to its agent now if it is connected (see ``prepare``);
        ``audit`` (its target gains the flow's ID) is recorded with it."""
        record = self.prepare(client_id, query, **options)
        if audit is not None:
            audit = replace(audit, target=f"{audit.target}/{record.flow_id}")
        await self.db.flows.insert([record], audit)
        await self.adopt([record])
        return record

    async def deliver(self, session: Any, record: FlowRecord) -> None:
        """Mark the flow running (if it has not ended meanwhile) and send it to the agent."""
        if not self._may_send(record):
            return
        stored = await self.db.flows.mark_running(record.client_id, record.flow_id, time.time())
        if stored is None:
            # It ended while we asked (whoever ended it here has told memory; elsewhere, this
            # is how memory learns it).
            if self.active.get(record.key) is record:
                self._remove_active(record.key)
            return
        self._copy_stored(record, stored)
        await self._send_request(session, record)

    def in_flight_of(self, client_id: str) -> list[FlowRecord]:
        """The client's flows not yet ended."""
        return list(self._by_client.get(client_id, {}).values())

    def _add_active(self, record: FlowRecord) -> None:
        self._taken_in += 1
        self._taken_in_at[record.key] = self._taken_in
        self.active[record.key] = record
        self._by_client.setdefault(record.client_id, {})[record.flow_id] = record

    def _remove_active(self, key: tuple[str, str]) -> None:
        self.active.pop(key, None)
        self._taken_in_at.pop(key, None)
        flows = self._by_client.get(key[0])
        if flows is not None:
            flows.pop(key[1], None)
            if not flows:
                del self._by_client[key[0]]

    def _may_send(self, record: FlowRecord) -> bool:
        return (
            record.active
            and self.active.get(record.key) is record
            and record.key not in self._held_flows
            and record.hunt_id not in self._held_hunts
        )

    async def _send_request(self, session: Any, record: FlowRecord) -> None:
        remaining = record.timeout
        if record.deadline is not None:
            remaining = max(record.deadline - self.clock() - _grace(record), 1.0)
        request = protocol.FlowRequest(
            flow_id=record.flow_id,
            # A held hunt flow's query comes with its go-ahead, to the clients that match only.
            query="" if record.hold else record.query,
            timeout=remaining,
            max_rows=record.max_rows,
            max_upload_bytes=record.max_upload_bytes,
            env=record.env,
            condition=record.condition,
            hold=record.hold,
        )
        try:
            # Checked once the connection is ours to write on: a stop or cancel committed while
            # we waited for it means this flow is never sent.
            await session.send(request, unless=lambda: not self._may_send(record))
        except Exception:  # the agent left; the flow is sent again when it returns
            log.debug("could not hand %s to %s", record.flow_id, record.client_id)
        self._notify(record.key)

    async def send_go(self, session: Any, record: FlowRecord, run: bool) -> None:
        """Tell the agent of a held hunt flow what the server-side condition decided: run its
        query (which comes with it), or end the flow there."""
        try:
            await session.send(protocol.Go(flow_id=record.flow_id, seq=record.last_seq, run=run,
                                           query=record.query if run else ""))
        except Exception:  # the agent left: told again when it returns (or the flow ended)
            log.debug("could not send go to %s", record.client_id, exc_info=True)

    def collecting(self, key: tuple[str, str]) -> FlowRecord | None:
        """A held hunt flow the server-side condition let through: memory follows the commit
        that moved it on to its collection. The flow, if in flight."""
        record = self.active.get(key)
        if record is not None:
            record.stage = "collect"
        return record

    async def client_connected(self, session: Any, running_on_agent: list[str]) -> None:
        """A client came (back): flows it lost end in error, the rest are (re)delivered."""
        client_id = session.client_id
        in_flight = self.in_flight_of(client_id)
        if self.db.store.dialect != "sqlite":
            # Other frontends may have stored, moved on or ended its flows while it was away.
            # (Flows stored here meanwhile were handed over as they were stored.)
            taken_in = await self.refresh_clients([client_id], tell_agents=False)
            in_flight = [record for record in in_flight
                         if self.active.get(record.key) is record] + taken_in
        running = set(running_on_agent)
        for flow_id in running - {record.flow_id for record in in_flight}:
            # Ended here while the agent was away (a stop, a cancel, a restart of ours): the
            # agent is told to stop it; whatever it still sends is acknowledged and dropped.
            await session.send(protocol.Cancel(flow_id=flow_id,
                                               reason="the flow has ended on the server"))
        for record in in_flight:
            if record.state == "running" and record.flow_id in running:
                if record.hold and record.stage == "collect":
                    # Judged while the agent was away: it still waits for its go-ahead.
                    await self.send_go(session, record, run=True)
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
        Raises ``ProtocolError`` for data of a flow never scheduled on this client, a sequence
        number that skips ahead, or an upload chunk at the wrong place."""
        client_id = session.client_id
        flow_id: str = message.flow_id  # type: ignore[attr-defined]
        seq: int = message.seq  # type: ignore[attr-defined]
        key = (client_id, flow_id)
        in_flight = self._in_flight.setdefault(key, _InFlight())
        async with in_flight.lock:
            record = self.active.get(key)
            if record is not None and seq <= record.last_seq:
                await session.send(protocol.Ack(flow_id=flow_id, seq=seq))
                return
            await failpoints.reach("ingest.before_commit")
            result = await self._ingest(record, in_flight, client_id, message)
            if result.verdict == "unknown":
                self._in_flight.pop(key, None)
                raise ProtocolError(f"flow {flow_id[:40]} was not scheduled on this client",
                                    CloseCode.FLOW_NOT_SCHEDULED)
            if result.verdict == "gap":
                raise ProtocolError(f"{flow_id}: sequence {seq} after {result.last_seq}")
            if result.verdict in ("bad_upload", "misplaced"):
                raise ProtocolError(result.detail)
            change = result.change
            if change is not None:
                await failpoints.reach("ingest.after_commit")
                if change.ended:
                    await failpoints.reach("finish.after_commit")
                if record is not None and result.stored_rows and record.kept_rows is not None:
                    record.kept_rows.extend(result.stored_rows)
                if record is not None and change.checked_rows is not None:
                    record.kept_rows = change.checked_rows  # the server-side condition's rows
                self.apply([change])
            if record is None:  # ended or unknown: nothing of it is kept in memory
                self._in_flight.pop(key, None)
            await session.send(protocol.Ack(flow_id=flow_id, seq=seq))
            if change is not None and change.cancel_reason is not None:
                await session.send(protocol.Cancel(flow_id=flow_id,
                                                   reason=change.cancel_reason))

    async def _ingest(self, record: FlowRecord | None, in_flight: _InFlight, client_id: str,
                      message: protocol.Message) -> Ingested:
        flows = self.db.flows
        now = time.time()
        if isinstance(message, protocol.Rows):
            return await flows.ingest_rows(client_id, message.flow_id, message.seq,
                                           message.rows, None, now)
        if isinstance(message, protocol.Status):
            return await flows.ingest_rows(client_id, message.flow_id, message.seq,
                                           message.final_rows,
                                           Ending(message.state, message.error), now,
                                           checked=message.checked)
        if isinstance(message, protocol.Checked):
            return await flows.ingest_checked(client_id, message.flow_id, message.seq,
                                              message.rows, now)
        if isinstance(message, protocol.Log):
            return await flows.ingest_log(client_id, message.flow_id, message.seq,
                                          message.time or now, message.level, message.message,
                                          now)
        if isinstance(message, protocol.Upload):
            return await self._ingest_upload(record, in_flight, client_id, message, now)
        raise ProtocolError(f"unexpected {message.TYPE}")  # the session passes flow messages

    async def _ingest_upload(self, record: FlowRecord | None, in_flight: _InFlight,
                             client_id: str, message: protocol.Upload, now: float) -> Ingested:
        """Write the chunk at its offset and sync it, then record it. The chunk is written only
        when the flow is in flight, the offset is where the upload stands and no limit stops it:
        a finished upload's bytes are never touched again."""
        if record is None:
            # Not a flow in flight here: the agent's flow ID is nothing to build a path from,
            # and the writer only says what it is (ended, or never scheduled).
            return await self.db.flows.ingest_upload(client_id, message.flow_id, message.seq,
                                                     None, now)
        key = upload_key(client_id, message.flow_id, message.upload_id)
        chunk = UploadChunk(message.upload_id, message.name, message.offset, len(message.data),
                            message.eof, key, None)
        if self._chunk_fits(record, in_flight, message):
            await asyncio.to_thread(self.upload_store.write_chunk, key, message.offset,
                                    message.data)
            sha256 = None
            if message.eof:
                sha256 = await asyncio.to_thread(self.upload_store.finish, key)
                if message.sha256 and message.sha256.lower() != sha256:
                    log.warning("%s %s upload %s: the agent's SHA-256 differs from the bytes"
                                " received", client_id, message.flow_id, message.upload_id)
            chunk = UploadChunk(chunk.upload_id, chunk.name, chunk.offset, chunk.size,
                                chunk.eof, chunk.path, sha256)
            written = True
        else:
            written = False
        result = await self.db.flows.ingest_upload(client_id, message.flow_id, message.seq,
                                                   chunk, now)
        stored = result.verdict == "applied" and not (result.change and result.change.ended)
        if stored:
            in_flight.uploads[message.upload_id] = (message.offset + len(message.data),
                                                    message.eof)
        elif written:  # not recorded after all: the file ends where the record says it does
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.upload_store.cut, key, message.offset)
        return result

    def _chunk_fits(self, record: FlowRecord, in_flight: _InFlight,
                    message: protocol.Upload) -> bool:
        if record.max_upload_bytes and record.bytes + len(message.data) > record.max_upload_bytes:
            return False
        known = in_flight.uploads.get(message.upload_id)
        if known is None:
            if message.offset != 0:
                return False  # a resumed upload after a restart: the writer checks it
            return not (record.max_uploads and record.uploads >= record.max_uploads)
        size, complete = known
        return not complete and message.offset == size

    # Ending flows from the server's side --------------------------------------------------------

    async def cancel(self, client_id: str, flow_id: str, reason: str = "cancelled by the operator",
                     audit: AuditEntry | None = None) -> FlowRecord | None:
        """End an unfinished flow as cancelled and tell its agent to stop; None when it is
        not in flight."""
        record = self.active.get((client_id, flow_id))
        if record is None:
            return None
        changes = await self.end_many([record], "cancelled", reason, audit)
        return changes[0].record if changes else None

    async def end_many(self, records: Sequence[FlowRecord], state: str, error: str,
                       audit: AuditEntry | None = None) -> list[FlowChange]:
        """End unfinished flows in ``state`` in one write, and tell their agents to stop.
        Returns what ended (a flow that ended otherwise meanwhile is left as it ended)."""
        keys = [r.key for r in records if r.active]
        if not keys:
            return []
        self._held_flows.update(keys)
        try:
            if state == "cancelled":
                await failpoints.reach("cancel.before_commit")
            changes = await self.db.flows.end(keys, Ending(state, error), time.time(), audit)
            await failpoints.reach("finish.after_commit")
            self.apply(changes)
            # Those not ended here had ended already (another frontend ended them).
            for key in set(keys) - {change.record.key for change in changes}:
                self._remove_active(key)
                self._in_flight.pop(key, None)
        finally:
            self._held_flows.difference_update(keys)
        await self.tell_agents(changes)
        return changes

    # Other frontends ---------------------------------------------------------------------------

    def _heard_from_others(self, topics: set[str]) -> None:
        """Another frontend stored or ended flows of these clients: read them again if this
        frontend holds the client's connection or keeps any of its flows."""
        for topic in topics:
            if topic == EVERYTHING:
                self._heard_clients.update(self.sessions)
                self._heard_clients.update(self._by_client)
            elif topic.startswith(CLIENT):
                client_id = topic[len(CLIENT):]
                if client_id in self.sessions or client_id in self._by_client:
                    self._heard_clients.add(client_id)
        if self._heard_clients:
            self._heard.set()

    async def _follow_forever(self) -> None:
        while True:
            await self._heard.wait()
            self._heard.clear()
            clients, self._heard_clients = self._heard_clients, set()
            try:
                await self.refresh_clients(sorted(clients))
            except Exception:  # the next notice, or the agent's next connection, tries again
                log.exception("following other frontends' flows failed")

    async def refresh_clients(self, client_ids: Sequence[str], *, tell_agents: bool = True
                              ) -> list[FlowRecord]:
        """Make memory follow the table for these clients' flows: a flow ended elsewhere
        leaves the set in flight (its agent, if connected here, is told to stop it); a flow
        stored elsewhere for a client connected here is taken in and handed over. Without
        ``tell_agents`` (the client is connecting now) nothing is sent, and what memory has
        is brought up to what the table says. Returns the flows taken in."""
        taken_in: list[FlowRecord] = []
        if not client_ids:
            return taken_in
        read_after = self._taken_in  # flows taken in later may be newer than what is read
        stored = await self.db.flows.active_of(client_ids)
        for client_id in client_ids:
            table = {record.flow_id: record for record in stored.get(client_id, [])}
            session = self.sessions.get(client_id)
            for flow_id, record in list(self._by_client.get(client_id, {}).items()):
                if flow_id in table:
                    if not tell_agents:
                        self._copy_stored(record, table[flow_id])
                    continue
                if (self._taken_in_at.get(record.key, 0) > read_after
                        or record.key in self._held_flows):
                    continue
                self._remove_active(record.key)
                self._in_flight.pop(record.key, None)
                self._notify(record.key)
                if session is not None and tell_agents:
                    with contextlib.suppress(Exception):  # it left: told when it returns
                        await session.send(protocol.Cancel(
                            flow_id=flow_id, reason="the flow has ended on the server"))
            if session is None:
                continue
            for flow_id, record in table.items():
                if (client_id, flow_id) in self.active:
                    continue
                record.set_deadline(self.clock())
                self._add_active(record)
                taken_in.append(record)
                if tell_agents:
                    await self.deliver(session, record)
        return taken_in

    @contextlib.asynccontextmanager
    async def holding_hunt(self, hunt_id: str) -> AsyncIterator[None]:
        """None of the hunt's flows is sent while this is held (around a stop's commit and
        its aftermath)."""
        self._held_hunts.add(hunt_id)
        try:
            yield
        finally:
            self._held_hunts.discard(hunt_id)

    def apply(self, changes: Sequence[FlowChange]) -> None:
        """Memory follows committed changes: figures copied, ended flows leave the set in
        flight, watchers and listeners are told (agents are told by ``tell_agents``)."""
        ended = []
        for change in changes:
            stored = change.record
            record = self.active.get(stored.key)
            if record is not None:
                self._copy_stored(record, stored)
                change.record = record
            if change.ended:
                ended.append(change)
                self._remove_active(stored.key)
                self._in_flight.pop(stored.key, None)
            self._notify(stored.key)
        if ended or any(change.moves or change.checked_rows is not None for change in changes):
            for listener in self._listeners:
                try:
                    listener(list(changes))
                except Exception:
                    log.exception("a flow-change listener failed")

    async def tell_agents(self, changes: Sequence[FlowChange]) -> None:
        """Tell the agents of flows the server ended to stop them."""
        for count, change in enumerate(changes, 1):
            record = change.record
            session = self.sessions.get(record.client_id)
            if session is None or not change.ended:
                continue
            try:
                await session.send(protocol.Cancel(flow_id=record.flow_id,
                                                   reason=record.error or record.state))
            except Exception:  # the agent is going away; the flow has ended here regardless
                log.debug("could not send cancel to %s", record.client_id, exc_info=True)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    @staticmethod
    def _copy_stored(record: FlowRecord, stored: FlowRecord) -> None:
        fields = vars(stored)
        vars(record).update({name: fields[name] for name in _STORED})

    async def expire_due(self, now: float | None = None) -> list[FlowRecord]:
        """End every unfinished flow past its deadline as ``timeout`` (``now`` on the monotonic
        clock, default the manager's clock)."""
        now = self.clock() if now is None else now
        due = [r for r in self.active.values() if r.deadline is not None and r.deadline < now]
        by_timeout: dict[float, list[FlowRecord]] = {}
        for record in due:
            by_timeout.setdefault(record.timeout, []).append(record)
        ended: list[FlowRecord] = []
        for timeout, records in by_timeout.items():
            changes = await self.end_many(
                records, "timeout",
                f"no result within {timeout:g} s (the agent was away or too slow)",
            )
            ended += [change.record for change in changes]
        return ended

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            try:
                await self.expire_due()
            except Exception:
                log.exception("expiring flows failed")

    # Following flows ----------------------------------------------------------------------------

    def _notify(self, key: tuple[str, str]) -> None:
        watch = self._watches.pop(key, None)
        if watch is not None:
            watch.set()

    def watch(self, client_id: str, flow_id: str) -> asyncio.Event:
        """An event set at the flow's next change (take it before reading what you follow)."""
        return self._watches.setdefault((client_id, flow_id), asyncio.Event())

    async def get(self, client_id: str, flow_id: str) -> FlowRecord | None:
        record = self.active.get((client_id, flow_id))
        if record is not None:
            return record
        return await self.db.flows.get(client_id, flow_id)

    def row_batches(self, client_id: str, flow_id: str, after_seq: int = 0
                    ) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """(seq, rows) of every stored batch after ``after_seq``, in order, read in pages."""
        return self.db.flows.row_batches(client_id, flow_id, after_seq)

    async def logs(self, client_id: str, flow_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        return await self.db.flows.logs(client_id, flow_id, after_seq)

    async def uploads(self, client_id: str, flow_id: str) -> list[dict[str, Any]]:
        return await self.db.flows.uploads(client_id, flow_id)


def _grace(record: FlowRecord) -> float:
    return DEADLINE_GRACE if record.timeout > 0 else 0.0
