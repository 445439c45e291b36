"""One connected agent: the handshake that proves its key, then the messages it sends.

The agent says hello with its public key; its client ID is derived from that key. A client the
server has never seen must present the enrolment secret. The server sends a fresh nonce and the
agent signs it, every connection. Anything malformed closes this connection with a code and a
reason and leaves every other agent alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from velotui.server.client_identity import (
    client_id_for,
    new_nonce,
    secrets_equal,
    verify_signature,
)
from velotui.server.clients import KeyMismatch
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode, ProtocolError

if TYPE_CHECKING:
    from velotui.server.server import Server

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 15.0
FLOW_MESSAGES = (protocol.Rows, protocol.Log, protocol.Upload, protocol.Status)


class AgentSession:
    """The server's side of one agent connection."""

    def __init__(self, server: Server, websocket: ServerConnection) -> None:
        self.server = server
        self.websocket = websocket
        self.client_id = ""
        self.peer = _peer(websocket)
        self.connected_at = time.time()
        self._send_lock = asyncio.Lock()

    async def send(self, message: protocol.Message,
                   unless: Callable[[], bool] | None = None) -> bool:
        """Send ``message``; with ``unless``, only if it is false once this connection is ours
        to write on (so a decision taken meanwhile elsewhere is not overtaken). True if
        sent."""
        frame = protocol.encode(message)
        async with self._send_lock:
            if unless is not None and unless():
                return False
            await self.websocket.send(frame)
        return True

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code, reason)

    async def _receive(self, timeout: float | None = None) -> protocol.Message:
        if timeout is None:
            frame = await self.websocket.recv()
        else:
            try:
                frame = await asyncio.wait_for(self.websocket.recv(), timeout)
            except TimeoutError:
                raise ProtocolError("handshake timed out") from None
        return protocol.decode(frame, sender="agent")

    async def run(self) -> None:
        """Serve the connection until it closes. Protocol violations close it with a reason."""
        try:
            await self._handshake()
            await self._serve()
        except ProtocolError as error:
            log.warning("agent %s (%s) refused: %s", self.client_id or "?", self.peer,
                        error.reason)
            await self.websocket.close(int(error.code), error.reason)
        except ConnectionClosed:
            pass
        finally:
            await self._unregister()

    async def _handshake(self) -> None:
        hello = await self._receive(HANDSHAKE_TIMEOUT)
        if not isinstance(hello, protocol.Hello):
            raise ProtocolError(f"expected hello, got {hello.TYPE}")
        if hello.version != protocol.PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {hello.version} is not {protocol.PROTOCOL_VERSION}",
                CloseCode.UNSUPPORTED_VERSION,
            )
        client_id = client_id_for(hello.public_key)
        directory = self.server.directory
        known = directory.get(client_id)
        if known is None and not secrets_equal(
            hello.enrolment_secret or "", self.server.enrolment_secret
        ):
            raise ProtocolError("enrolment refused: wrong enrolment secret",
                                CloseCode.AUTH_FAILED)
        if known is not None and known.public_key != hello.public_key:
            raise ProtocolError("this client ID belongs to another key", CloseCode.AUTH_FAILED)
        if known is not None and known.revoked is not None:
            raise ProtocolError("this client was revoked", CloseCode.AUTH_FAILED)
        nonce = new_nonce()
        await self.send(protocol.Challenge(nonce=nonce))
        auth = await self._receive(HANDSHAKE_TIMEOUT)
        if not isinstance(auth, protocol.Auth):
            raise ProtocolError(f"expected auth, got {auth.TYPE}")
        if not verify_signature(hello.public_key, nonce, auth.signature):
            raise ProtocolError("signature does not match the key", CloseCode.AUTH_FAILED)
        try:
            _record, enrolled = await directory.record_hello(
                client_id, hello.public_key, hello.facts, list(hello.labels),
                hello.last_hunt_timestamp,
            )
        except KeyMismatch:
            raise ProtocolError("this client ID belongs to another key",
                                CloseCode.AUTH_FAILED) from None
        self.client_id = client_id
        previous = directory.sessions.get(client_id)
        directory.sessions[client_id] = self
        if previous is not None:
            await previous.close(int(CloseCode.REPLACED), "a newer connection for this client")
        if enrolled:
            log.info("enrolled %s (%s) from %s", client_id, hello.facts.get("Hostname"), self.peer)
        await self.send(protocol.Welcome(client_id=client_id, enrolled=enrolled,
                                         server_time=time.time()))
        await self.server.flows.client_connected(self, list(hello.running_flows))
        await self.server.client_checked_in(self, hello.last_hunt_timestamp)

    async def _serve(self) -> None:
        flows = self.server.flows
        while True:
            message = await self._receive()
            if isinstance(message, FLOW_MESSAGES):
                await flows.handle(self, message)
            elif isinstance(message, protocol.CheckIn):
                await self.server.directory.touch(self.client_id, message.last_hunt_timestamp)
                await self.server.client_checked_in(self, message.last_hunt_timestamp)
            else:
                raise ProtocolError(f"unexpected {message.TYPE} after the handshake")

    async def _unregister(self) -> None:
        directory = self.server.directory
        if self.client_id and directory.sessions.get(self.client_id) is self:
            del directory.sessions[self.client_id]
            try:
                await directory.touch(self.client_id)
            except Exception:  # the store may be closing with the server
                log.debug("could not record last_seen for %s", self.client_id, exc_info=True)
            await self.server.client_disconnected(self)


def _peer(websocket: Any) -> str:
    try:
        host, port = websocket.remote_address[:2]
    except Exception:
        return "?"
    return f"{host}:{port}"
