"""The outbox's storage for the agents of a simulated fleet: the operations an ``OutboxFile``
applies, kept in memory.

Ten thousand simulated agents in one process cannot each hold a SQLite file open (three file
descriptors each) or a database in memory (tens of kilobytes each). Their outboxes survive
reconnects, as a real agent's does, but not a restart of the fleet's process.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

from agent.outbox_file import (
    Acked,
    Forget,
    NewFlow,
    NewMessage,
    Operation,
    Progress,
    StoredFlow,
    StoredOutbox,
)


class OutboxInMemory:
    """What an ``OutboxFile`` would hold, in dicts. Nothing here blocks."""

    blocking = False
    path: Path | None = None
    name = "(in memory)"

    def __init__(self) -> None:
        self._flows: dict[str, StoredFlow] = {}
        # Per flow, (position put, frame) by seq, oldest first.
        self._frames: dict[str, dict[int, tuple[int, bytes]]] = {}
        self._next_position = 0

    def load(self) -> StoredOutbox:
        messages = sorted(
            (position, flow_id, seq, len(frame))
            for flow_id, frames in self._frames.items()
            for seq, (position, frame) in frames.items()
        )
        return StoredOutbox(
            copy.deepcopy(list(self._flows.values())),
            [(flow_id, seq, size) for _position, flow_id, seq, size in messages],
        )

    def read_frame(self, flow_id: str, seq: int) -> bytes | None:
        found = self._frames.get(flow_id, {}).get(seq)
        return found[1] if found is not None else None

    def write(self, operations: Iterable[Operation]) -> None:
        for operation in operations:
            if isinstance(operation, NewMessage):
                frames = self._frames.setdefault(operation.flow_id, {})
                frames[operation.seq] = (self._next_position, operation.frame)
                self._next_position += 1
                flow = self._flows.get(operation.flow_id)
                if flow is not None:
                    flow.last_seq = operation.seq
                    if operation.is_status:
                        flow.status_seq = operation.seq
            elif isinstance(operation, Progress):
                if operation.flow_id in self._flows:
                    self._flows[operation.flow_id].progress.update(operation.values)
            elif isinstance(operation, Acked):
                frames = self._frames.get(operation.flow_id, {})
                while frames and next(iter(frames)) <= operation.seq:
                    del frames[next(iter(frames))]
            elif isinstance(operation, NewFlow):
                self._flows.setdefault(
                    operation.flow_id, StoredFlow(operation.flow_id, operation.request, 0, 0)
                )
            elif isinstance(operation, Forget):
                self._flows.pop(operation.flow_id, None)
                self._frames.pop(operation.flow_id, None)

    def close(self) -> None:
        self._flows.clear()
        self._frames.clear()
