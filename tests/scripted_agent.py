"""An agent whose every move the test makes: it speaks the real protocol with a real identity,
records every frame the server sends it, answers hunt condition checks with its facts, and sends
rows, logs, uploads and statuses for its collections only when the test says so. For races held
open at a named point, where a real agent would move on by itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.protocol_client import handshake
from velotui.server.server import Server
from velotui.wire import protocol


class ScriptedAgent:
    def __init__(self, server: Server, state_dir: Path, facts: dict[str, Any]) -> None:
        self.server = server
        self.state_dir = state_dir
        self.facts = facts
        self.client_id = ""
        self.received: list[protocol.Message] = []
        self.frames: list[bytes] = []  # every frame the server sent, as it came
        self.collections: asyncio.Queue[protocol.FlowRequest] = asyncio.Queue()
        self.seq: dict[str, int] = {}
        self._acks: dict[tuple[str, int], asyncio.Event] = {}
        self._changed = asyncio.Event()
        self._connection: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> ScriptedAgent:
        self._connection, welcome = await handshake(self.server, self.state_dir,
                                                    facts=self.facts, frames=self.frames)
        assert isinstance(welcome, protocol.Welcome), welcome
        self.client_id = welcome.client_id
        self._reader = asyncio.create_task(self._read_forever())
        return self

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read_forever(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await self._connection.recv()
                self.frames.append(frame)
                message = protocol.decode(frame, sender="server")
                self.received.append(message)
                self._changed.set()
                if isinstance(message, protocol.Ack):
                    self._acks.setdefault((message.flow_id, message.seq), asyncio.Event()).set()
                elif isinstance(message, protocol.FlowRequest):
                    if message.flow_id.split(".")[-1] == "C" or ".C." in message.flow_id:
                        # A hunt's condition check: the client condition's row is our facts.
                        await self.status(message.flow_id, final_rows=[self.facts], wait=False)
                    elif message.condition:
                        # A hunt flow: its condition's row is our facts; then its collection,
                        # at once or once the server says so.
                        await self.checked(message.flow_id, [self.facts], wait=False)
                        if not message.hold:
                            self.collections.put_nowait(message)
                    else:
                        self.collections.put_nowait(message)
                elif isinstance(message, protocol.Go) and message.run:
                    self.collections.put_nowait(protocol.FlowRequest(
                        flow_id=message.flow_id, query=message.query))

    async def wait_for(self, predicate: Any, timeout: float = 30) -> protocol.Message:
        """The first frame received (so far or later) for which ``predicate`` is true."""
        async def search() -> protocol.Message:
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(search(), timeout)

    async def next_collection(self, timeout: float = 30) -> protocol.FlowRequest:
        return await asyncio.wait_for(self.collections.get(), timeout)

    async def _send(self, flow_id: str, build: Any, wait: bool) -> int:
        seq = self.seq.get(flow_id, 0) + 1
        self.seq[flow_id] = seq
        acked = self._acks.setdefault((flow_id, seq), asyncio.Event())
        await self._connection.send(protocol.encode(build(seq)))
        if wait:
            await asyncio.wait_for(acked.wait(), 30)
        return seq

    async def rows(self, flow_id: str, rows: list[dict[str, Any]], wait: bool = True) -> int:
        return await self._send(flow_id, lambda seq: protocol.Rows(
            flow_id=flow_id, seq=seq, rows=rows), wait)

    async def log(self, flow_id: str, message: str, wait: bool = True) -> int:
        return await self._send(flow_id, lambda seq: protocol.Log(
            flow_id=flow_id, seq=seq, level="info", message=message, time=1.0), wait)

    async def upload(self, flow_id: str, upload_id: int, data: bytes, wait: bool = True) -> int:
        digest = hashlib.sha256(data).hexdigest()
        return await self._send(flow_id, lambda seq: protocol.Upload(
            flow_id=flow_id, seq=seq, upload_id=upload_id, name=f"file-{upload_id}",
            offset=0, data=data, eof=True, sha256=digest), wait)

    async def checked(self, flow_id: str, rows: list[dict[str, Any]], wait: bool = True) -> int:
        return await self._send(flow_id, lambda seq: protocol.Checked(
            flow_id=flow_id, seq=seq, rows=rows), wait)

    async def status(self, flow_id: str, state: str = "finished", final_rows: Any = (),
                     wait: bool = True, error: str | None = None) -> int:
        return await self._send(flow_id, lambda seq: protocol.Status(
            flow_id=flow_id, seq=seq, state=state, final_rows=list(final_rows), error=error),
            wait)

    def acked(self, flow_id: str, seq: int) -> bool:
        event = self._acks.get((flow_id, seq))
        return event is not None and event.is_set()

    def flows_received(self) -> list[str]:
        return [m.flow_id for m in self.received if isinstance(m, protocol.FlowRequest)]

    def collections_received(self) -> list[str]:
        """Flows whose collection query reached this agent: a plain flow's request, a hunt
        flow's that runs at once, or a held one's go-ahead."""
        return [m.flow_id for m in self.received
                if (isinstance(m, protocol.FlowRequest) and m.query)
                or (isinstance(m, protocol.Go) and m.run)]

    def cancels_received(self) -> list[str]:
        return [m.flow_id for m in self.received if isinstance(m, protocol.Cancel)]
