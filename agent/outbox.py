"""Everything an agent has sent that the server has not yet acknowledged, kept on disk.

Every data message of a flow (rows, log, upload, status) gets the flow's next sequence number and
stays in the outbox file (``agent/outbox_file.py``) until the server's ``Ack(flow_id, seq)`` says
it is durable. After a reconnect, or a restart of the agent, the session resends all of it in the
order it was first put, so nothing is lost; the server applies each sequence number once, so
nothing is stored twice.

Durable before sent: a message is written by a group commit (one transaction, one fsync, for all
that was put meanwhile) and only then handed to the sender. A message the server may have seen is
therefore always on disk, with the seq it was sent with and the progress its producer recorded
with it; a restarted agent never sends a different message under a seq already used.
Acknowledgements are applied in memory at once and written with the next commit: one lost in a
crash only makes the server acknowledge a resent duplicate.

The bytes kept are bounded (``max_bytes`` of unacknowledged messages). When a message does not
fit:

- while the agent is connected (``server_connected``), its producer waits, first come first
  served, until acknowledgements free space: a flow is slowed down, never dropped;
- while it is not, waiting could last for ever, so the oldest flow still producing is refused:
  its next message raises ``FlowRefused`` (it should stop and put its Status) and an error is
  logged. The producer waits for the server unless its own flow was the one refused.

A flow's Status always fits, even in a full outbox: each flow has one, and it is what tells the
server how the flow ended (a refused one included). Memory holds only what messages are kept, not
their bytes, plus at most ``MAX_UNWRITTEN_BYTES`` of messages waiting for the next commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.outbox_file import (
    STORAGE_ERRORS,
    Acked,
    Forget,
    NewFlow,
    NewMessage,
    Operation,
    OutboxFile,
    Progress,
    StoredFlow,
)
from agent.outbox_memory import OutboxInMemory
from velotui.wire.protocol import MAX_FRAME_BYTES, Message, Status, encode

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Messages put but not yet committed; producers wait for the writer beyond this.
MAX_UNWRITTEN_BYTES = 8 * 1024 * 1024
# After a failed write (a full disk), the first wait before trying again, doubling up to the most.
WRITE_RETRY_DELAY = 1.0
MAX_WRITE_RETRY_DELAY = 60.0

log = logging.getLogger(__name__)

# Given the seq a message got, once it is certain to be kept: the progress records to store with
# it (see ``Outbox.put``).
Stored = Callable[[int], Mapping[str, Any] | None]


class FlowRefused(Exception):
    """The outbox is full and the server away: this flow may put nothing more but its Status."""


@dataclass(eq=False)
class OutboxEntry:
    """One message waiting for its acknowledgement; its bytes are in the outbox file."""

    flow_id: str
    seq: int
    size: int
    acked: bool = False
    written: bool = False


@dataclass(eq=False)
class _FlowRecord:
    last_seq: int = 0  # the seq of the newest message put
    acked_seq: int = 0
    status_seq: int = 0  # the seq of the flow's Status once put; no message may follow it
    refusal: str | None = None  # why the flow was refused, once it was
    unacked: collections.deque[OutboxEntry] = field(default_factory=collections.deque)
    space_waiter: asyncio.Future[None] | None = None
    # Held from choosing a seq until the message is stored, so a flow's seqs go in in order
    # even when several of its producers (rows, logs, uploads) wait for space at once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Outbox:
    """The unacknowledged messages of one agent, in the order they were put, kept in ``file``
    (or, for a simulated agent, in memory)."""

    def __init__(
        self, file: OutboxFile | OutboxInMemory, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """Take over ``file`` and what it holds (blocking: it reads the file)."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.server_connected = False  # set by the session: can acknowledgements come?
        self._file = file
        self._flows: dict[str, _FlowRecord] = {}
        # Unacknowledged entries keyed by (flow_id, seq); a dict keeps the order they were put.
        self._entries: dict[tuple[str, int], OutboxEntry] = {}
        self._unacked_bytes = 0  # bytes stored plus bytes reserved by producers about to store
        self._space_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._unsent: collections.deque[OutboxEntry] = collections.deque()
        self._unsent_ready = asyncio.Event()
        # The group commit: operations wait here for the writer task, which runs while any do.
        self._pending: list[Operation] = []
        self._pending_entries: list[OutboxEntry] = []
        self._unwritten_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()  # set when close() begins: failed writes are given up
        self._written = asyncio.Event()  # set (and replaced) after each commit
        self._closed = False
        self._to_resume = self._load()

    @classmethod
    def open(
        cls, path: str | Path | None, max_bytes: int = DEFAULT_MAX_BYTES, *, sync: bool = True
    ) -> Outbox:
        """The outbox kept in the file at ``path``, created if needed, with what it holds; with
        None, one in memory (it survives reconnects, not a restart).

        ``sync=False`` skips the fsyncs (see ``OutboxFile``). Blocking. Raises OSError when the
        file cannot be opened or created.
        """
        file = OutboxFile(Path(path), sync=sync) if path is not None else OutboxInMemory()
        try:
            return cls(file, max_bytes)
        except BaseException:
            file.close()
            raise

    def _load(self) -> list[StoredFlow]:
        try:
            stored = self._file.load()
        except STORAGE_ERRORS as error:
            raise OSError(f"cannot read the outbox {self._file.name}: {error}") from None
        for flow in stored.flows:
            self._flows[flow.flow_id] = _FlowRecord(
                last_seq=flow.last_seq, acked_seq=flow.last_seq, status_seq=flow.status_seq
            )
        for flow_id, seq, size in stored.messages:
            record = self._flows.get(flow_id)
            if record is None:
                continue  # cannot be: a flow's row is written with (or before) its messages
            entry = OutboxEntry(flow_id, seq, size, written=True)
            record.acked_seq = min(record.acked_seq, seq - 1)
            record.unacked.append(entry)
            self._entries[(flow_id, seq)] = entry
            self._unacked_bytes += size
        return [flow for flow in stored.flows if flow.request is not None and not flow.status_seq]

    def flows_to_resume(self) -> list[StoredFlow]:
        """The flows the file held that had begun (``begin_flow``) and not put their Status, in
        the order they began, with their request and progress; given once, then empty."""
        flows, self._to_resume = self._to_resume, []
        return flows

    # Producers -----------------------------------------------------------------------------

    def begin_flow(
        self, flow_id: str, request: bytes, progress: Mapping[str, Any] | None = None
    ) -> None:
        """Keep ``request`` (and ``progress``) with the flow, to resume it after a restart.

        Written with the next commit. Call it before the flow's first ``put``.
        """
        if flow_id not in self._flows:
            self._flows[flow_id] = _FlowRecord()
            self._queue(NewFlow(flow_id, request))
        if progress:
            self._queue(Progress(flow_id, dict(progress)))

    def note(self, flow_id: str, progress: Mapping[str, Any]) -> None:
        """Record progress of a known flow that no message carries (it is told to stop, say)."""
        if flow_id in self._flows:
            self._queue(Progress(flow_id, dict(progress)))

    async def put(
        self, flow_id: str, build: Callable[[int], Message], stored: Stored | None = None
    ) -> OutboxEntry:
        """Keep the message ``build(seq)`` with the flow's next seq; return its entry.

        ``stored(seq)`` is called once the message is certain to be kept (after any wait) and its
        result, progress records by name, is written in the same transaction as the message.
        Waits while the outbox is full (or the writer behind). Raises FlowRefused when the flow
        has been refused (the outbox is full and the agent offline), ValueError when the encoded
        message is larger than a frame may be, RuntimeError when the flow's Status has already
        been put.
        """
        record = self._flows.get(flow_id)
        if record is None:
            record = self._flows[flow_id] = _FlowRecord()
            self._queue(NewFlow(flow_id, None))
        async with record.lock:
            if record.status_seq:
                raise RuntimeError(f"flow {flow_id}: a message after its status")
            seq = record.last_seq + 1
            message = build(seq)
            is_status = isinstance(message, Status)
            if record.refusal is not None and not is_status:
                raise FlowRefused(record.refusal)
            frame = encode(message)
            if len(frame) > MAX_FRAME_BYTES:
                raise ValueError(f"a {message.TYPE} message of {len(frame)} bytes exceeds a frame")
            while self._unwritten_bytes >= MAX_UNWRITTEN_BYTES:
                await self._written.wait()
            if is_status:
                self._unacked_bytes += len(frame)  # every flow can end, even in a full outbox
            else:
                await self._reserve(record, len(frame))
            # Nothing below waits: the message is kept from here on.
            entry = OutboxEntry(flow_id, seq, len(frame))
            record.last_seq = seq
            if is_status:
                record.status_seq = seq
            record.unacked.append(entry)
            self._entries[(flow_id, seq)] = entry
            self._queue(NewMessage(flow_id, seq, frame, is_status), entry)
            progress = stored(seq) if stored is not None else None
            if progress:
                self._queue(Progress(flow_id, dict(progress)))
            return entry

    async def _reserve(self, record: _FlowRecord, size: int) -> None:
        if not self._space_waiters and self._fits(size):
            self._unacked_bytes += size
            return
        if not self.server_connected:
            self._refuse_oldest()
            if record.refusal is not None:
                raise FlowRefused(record.refusal)
        waiter = asyncio.get_running_loop().create_future()
        self._space_waiters.append((size, waiter))
        record.space_waiter = waiter
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._unacked_bytes -= size  # reserved for us just as we were cancelled
            elif (size, waiter) in self._space_waiters:
                self._space_waiters.remove((size, waiter))
            self._wake_space_waiters()  # whoever queued behind us may fit now
            raise
        finally:
            record.space_waiter = None

    def _fits(self, size: int) -> bool:
        # An empty outbox takes any message, so one large message can never wait forever.
        return self._unacked_bytes == 0 or self._unacked_bytes + size <= self.max_bytes

    def _wake_space_waiters(self) -> None:
        while self._space_waiters:
            size, waiter = self._space_waiters[0]
            if waiter.done():
                self._space_waiters.popleft()
                continue
            if not self._fits(size):
                break  # first come, first served: a big upload chunk is not overtaken forever
            self._space_waiters.popleft()
            self._unacked_bytes += size
            waiter.set_result(None)

    def _refuse_oldest(self) -> None:
        """Refuse the oldest flow still producing (no Status put, not refused yet)."""
        for flow_id, record in self._flows.items():
            if record.status_seq or record.refusal is not None:
                continue
            record.refusal = (
                f"the agent's outbox is full ({self._unacked_bytes} bytes unacknowledged, "
                f"bound {self.max_bytes}) while the server is unreachable: the flow was stopped"
            )
            log.error("flow %s refused: %s", flow_id, record.refusal)
            waiter = record.space_waiter
            if waiter is not None and not waiter.done():
                self._space_waiters = collections.deque(
                    item for item in self._space_waiters if item[1] is not waiter
                )
                waiter.set_exception(FlowRefused(record.refusal))
                self._wake_space_waiters()
            return

    # Acknowledgements ----------------------------------------------------------------------

    def ack(self, flow_id: str, seq: int) -> int:
        """Forget the flow's messages up to and including ``seq``; return how many were freed.

        Once the flow's Status is acknowledged the flow itself is forgotten. An ack for an
        unknown flow or an old seq frees nothing. Written to the file with the next commit.
        """
        record = self._flows.get(flow_id)
        if record is None or seq <= record.acked_seq:
            return 0
        record.acked_seq = min(seq, record.last_seq)
        freed = 0
        while record.unacked and record.unacked[0].seq <= record.acked_seq:
            entry = record.unacked.popleft()
            entry.acked = True
            del self._entries[(flow_id, entry.seq)]
            self._unacked_bytes -= entry.size
            freed += 1
        if record.status_seq and record.acked_seq >= record.status_seq:
            del self._flows[flow_id]
            self._queue(Forget(flow_id))
        elif freed:
            self._queue(Acked(flow_id, record.acked_seq))
        if freed:
            self._wake_space_waiters()
        return freed

    def drop_flow(self, flow_id: str) -> None:
        """Forget a flow the server ended before its Status (a held hunt flow whose condition
        did not match): everything it put has been acknowledged."""
        record = self._flows.pop(flow_id, None)
        if record is None:
            return
        for entry in record.unacked:  # none, unless the server ends a flow it has not read
            entry.acked = True
            self._entries.pop((flow_id, entry.seq), None)
            self._unacked_bytes -= entry.size
        self._queue(Forget(flow_id))
        self._wake_space_waiters()

    # The group commit ------------------------------------------------------------------------

    def _queue(self, operation: Operation, entry: OutboxEntry | None = None) -> None:
        if self._closed:
            raise RuntimeError("the outbox is closed")
        self._pending.append(operation)
        if entry is not None:
            self._pending_entries.append(entry)
            self._unwritten_bytes += entry.size
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_pending(), name="outbox writer"
            )

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                operations, self._pending = self._pending, []
                entries, self._pending_entries = self._pending_entries, []
                if not await self._commit(operations):
                    return
                for entry in entries:
                    entry.written = True
                    self._unwritten_bytes -= entry.size
                    if not entry.acked:
                        self._unsent.append(entry)
                self._unsent_ready.set()
                self._written.set()
                self._written = asyncio.Event()
        finally:
            self._writer = None

    async def _commit(self, operations: list[Operation]) -> bool:
        """Write ``operations``; True once written. A failure (a full disk) is logged and tried
        again, since no message may be sent before it is on disk; while the outbox closes, it is
        given up (False): what was not written was not sent, and a restarted flow makes it anew.
        """
        delay = WRITE_RETRY_DELAY
        while True:
            try:
                if self._file.blocking:
                    await asyncio.to_thread(self._file.write, operations)
                else:
                    self._file.write(operations)
                return True
            except STORAGE_ERRORS as error:
                if self._closing.is_set():
                    log.error("cannot write the outbox %s (%s) as it closes", self._file.name,
                              error)
                    return False
                log.error(
                    "cannot write the outbox %s (%s); trying again in %g s",
                    self._file.name, error, delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, MAX_WRITE_RETRY_DELAY)

    async def flush(self) -> None:
        """Return once everything put so far is written to the file."""
        while self._writer is not None:
            await asyncio.wait({self._writer})

    async def close(self) -> None:
        """Write what is pending and close the file; the outbox is unusable afterwards."""
        if self._closed:
            return
        self._closing.set()
        await self.flush()
        self._closed = True
        if self._file.blocking:
            await asyncio.to_thread(self._file.close)
        else:
            self._file.close()

    # The sender ------------------------------------------------------------------------------

    def rewind(self) -> list[OutboxEntry]:
        """Every unacknowledged entry already written, in the order put, to send first on a new
        connection.

        ``next_unsent`` then gives only entries written after this call.
        """
        self._unsent.clear()
        self._unsent_ready.clear()
        return [entry for entry in self._entries.values() if entry.written]

    async def next_unsent(self) -> OutboxEntry:
        """The oldest written entry not sent on this connection nor acknowledged; waits for one."""
        while True:
            while self._unsent:
                entry = self._unsent.popleft()
                if not entry.acked:
                    return entry
            self._unsent_ready.clear()
            await self._unsent_ready.wait()

    async def read_frame(self, entry: OutboxEntry) -> bytes | None:
        """The frame of a written ``entry``; None once it has been acknowledged."""
        if entry.acked:
            return None
        if not self._file.blocking:
            return self._file.read_frame(entry.flow_id, entry.seq)
        return await asyncio.to_thread(self._file.read_frame, entry.flow_id, entry.seq)

    async def unacked_frames(self) -> list[bytes]:
        """The frames of every unacknowledged entry, in the order put (writing them first)."""
        await self.flush()
        frames = [await self.read_frame(entry) for entry in self.entries()]
        return [frame for frame in frames if frame is not None]

    # Inspection ------------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The outbox's file (None: kept in memory)."""
        return self._file.path

    @property
    def unacked_bytes(self) -> int:
        """Bytes of messages kept for acknowledgement (plus any space reserved this moment)."""
        return self._unacked_bytes

    @property
    def waiting_for_space(self) -> int:
        """How many producers wait for acknowledgements to free space."""
        return sum(1 for _size, waiter in self._space_waiters if not waiter.done())

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[OutboxEntry]:
        """The unacknowledged entries, in the order put."""
        return list(self._entries.values())

    def flow_ids(self) -> list[str]:
        """Flows not yet forgotten: running, or with messages (or a Status) not yet acknowledged."""
        return list(self._flows)

    def knows(self, flow_id: str) -> bool:
        """True while ``flow_id`` is not forgotten (see ``flow_ids``)."""
        return flow_id in self._flows

    def last_seq(self, flow_id: str) -> int:
        """The seq of the flow's newest message put (0 when none, or when it is forgotten)."""
        record = self._flows.get(flow_id)
        return record.last_seq if record is not None else 0

    def refused(self, flow_id: str) -> bool:
        """True once the flow has been refused (see the module's docstring)."""
        record = self._flows.get(flow_id)
        return record is not None and record.refusal is not None
