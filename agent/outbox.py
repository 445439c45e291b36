"""Everything an agent has sent that the server has not yet acknowledged.

Every data message of a flow (rows, log, upload, status) gets the flow's next sequence number and
stays here, encoded, until the server's ``Ack(flow_id, seq)`` says it is durable. After a
reconnect the session resends all of it in the order it was first put, so nothing is lost; the
server applies each sequence number once, so nothing is stored twice.

The bytes kept are bounded. When the bound is reached, producers wait in ``put`` (in turn, first
come first served) until acknowledgements free space: a flow is slowed down, never dropped, and
the agent's memory does not grow with a slow or absent server.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from velotui.wire.protocol import MAX_FRAME_BYTES, Message, Status, encode

DEFAULT_MAX_BYTES = 8 * 1024 * 1024


@dataclass(eq=False)
class OutboxEntry:
    """One encoded message waiting for its acknowledgement."""

    flow_id: str
    seq: int
    frame: bytes
    acked: bool = False


@dataclass(eq=False)
class _FlowRecord:
    last_seq: int = 0  # the seq of the newest message put
    acked_seq: int = 0
    status_seq: int = 0  # the seq of the flow's Status once put; no message may follow it
    unacked: collections.deque[OutboxEntry] = field(default_factory=collections.deque)
    # Held from choosing a seq until the message is stored, so a flow's seqs go in in order
    # even when several of its producers (rows, logs, uploads) wait for space at once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Outbox:
    """The unacknowledged messages of one agent, in the order they were put."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._flows: dict[str, _FlowRecord] = {}
        # Unacknowledged entries keyed by (flow_id, seq); a dict keeps the order they were put.
        self._entries: dict[tuple[str, int], OutboxEntry] = {}
        self._unacked_bytes = 0  # bytes stored plus bytes reserved by producers about to store
        self._space_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._unsent: collections.deque[OutboxEntry] = collections.deque()
        self._unsent_ready = asyncio.Event()

    # Producers -----------------------------------------------------------------------------

    async def put(self, flow_id: str, build: Callable[[int], Message]) -> OutboxEntry:
        """Store the message ``build(seq)`` with the flow's next seq; return its entry.

        Waits while the outbox is full. Raises ValueError when the encoded message is larger than
        a frame may be, RuntimeError when the flow's Status has already been put.
        """
        record = self._flows.get(flow_id)
        if record is None:
            record = self._flows[flow_id] = _FlowRecord()
        async with record.lock:
            if record.status_seq:
                raise RuntimeError(f"flow {flow_id}: a message after its status")
            seq = record.last_seq + 1
            message = build(seq)
            frame = encode(message)
            if len(frame) > MAX_FRAME_BYTES:
                raise ValueError(f"a {message.TYPE} message of {len(frame)} bytes exceeds a frame")
            await self._reserve(len(frame))
            entry = OutboxEntry(flow_id, seq, frame)
            record.last_seq = seq
            if isinstance(message, Status):
                record.status_seq = seq
            record.unacked.append(entry)
            self._entries[(flow_id, seq)] = entry
            self._unsent.append(entry)
            self._unsent_ready.set()
            return entry

    async def _reserve(self, size: int) -> None:
        if not self._space_waiters and self._fits(size):
            self._unacked_bytes += size
            return
        waiter = asyncio.get_running_loop().create_future()
        self._space_waiters.append((size, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._unacked_bytes -= size  # reserved for us just as we were cancelled
            else:
                self._space_waiters.remove((size, waiter))
            self._wake_space_waiters()  # whoever queued behind us may fit now
            raise

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

    # Acknowledgements ----------------------------------------------------------------------

    def ack(self, flow_id: str, seq: int) -> int:
        """Forget the flow's messages up to and including ``seq``; return how many were freed.

        Once the flow's Status is acknowledged the flow itself is forgotten. An ack for an
        unknown flow or an old seq frees nothing.
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
            self._unacked_bytes -= len(entry.frame)
            freed += 1
        if record.status_seq and record.acked_seq >= record.status_seq:
            del self._flows[flow_id]
        if freed:
            self._wake_space_waiters()
        return freed

    # The sender ------------------------------------------------------------------------------

    def rewind(self) -> list[OutboxEntry]:
        """Every unacknowledged entry in the order put, to send first on a new connection.

        ``next_unsent`` then gives only entries put after this call.
        """
        self._unsent.clear()
        self._unsent_ready.clear()
        return list(self._entries.values())

    async def next_unsent(self) -> OutboxEntry:
        """The oldest entry not sent on this connection nor acknowledged; waits for one."""
        while True:
            while self._unsent:
                entry = self._unsent.popleft()
                if not entry.acked:
                    return entry
            self._unsent_ready.clear()
            await self._unsent_ready.wait()

    # Inspection ------------------------------------------------------------------------------

    @property
    def unacked_bytes(self) -> int:
        """Bytes of messages kept for acknowledgement (plus any space reserved this moment)."""
        return self._unacked_bytes

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
