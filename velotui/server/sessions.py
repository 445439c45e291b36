"""One connected agent: the handshake that proves its key, then the messages it sends.

The agent says hello with its public key; its client ID is derived from that key. A client the
server has never seen must present the enrolment secret. The server sends a fresh nonce and the
agent signs it, every connection. Anything malformed closes this connection with a code and a
reason and leaves every other agent alone; so does a failure of the server's own while it handles
a message (``INTERNAL``, logged in one line).

Until an agent has proven its key its frames are small (``MAX_HANDSHAKE_FRAME_BYTES``), few of
them wait unread, and only ``MAX_UNAUTHENTICATED_CONNECTIONS`` such connections are served at
once; new client IDs enrol at ``ENROLMENTS_PER_SECOND``. Beyond either limit the agent is told to
come back later (``TRY_AGAIN_LATER``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
from velotui.server.token_bucket import TokenBucket
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode, ProtocolError

if TYPE_CHECKING:
    from velotui.server.server import Server

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 15.0
FLOW_MESSAGES = (protocol.Rows, protocol.Log, protocol.Upload, protocol.Status,
                 protocol.Checked)

# Connections between the websocket upgrade and a proven key. Anyone who reaches the port gets
# this far, and each such connection holds a hello-sized frame at most, so the caps bound what
# strangers make the server hold (each ~100 KB at worst: its TLS connection and most of a frame).
# A fleet reconnecting at once has paid its TLS handshakes already: beyond those authenticating,
# thousands more wait their turn (reading nothing), and only past those is anyone refused, told
# when to come back.
MAX_UNAUTHENTICATED_CONNECTIONS = 256
MAX_WAITING_CONNECTIONS = 4096
# About how many agents a second get through the handshake on one core, to tell those refused
# for now when to come back (until the server has measured its own rate during a storm).
HANDSHAKES_PER_SECOND = 500.0
# The measured rate is kept within these bounds, so that one odd second cannot send a fleet
# away for hours, nor call it back at once.
MIN_HANDSHAKES_PER_SECOND = 50.0
MAX_HANDSHAKES_PER_SECOND = 5000.0
# The longest a refused agent is told to wait: an agent caps any wait at its max_backoff, 60 s by
# default, and a promise it cannot keep would bunch the fleet up at that cap.
MAX_RETRY_SECONDS = 45.0
# How long a connection may wait its turn: an agent gives the server 30 s from its hello to the
# challenge, and one served after it has given up was a handshake wasted. So no more wait than
# the measured rate gets through in this long.
MAX_QUEUE_SECONDS = 15.0
# New client IDs admitted per second and at once. The enrolment secret is in every agent's
# config, so its holder must not fill the client table at line rate; a new fleet of thousands
# still enrols within minutes (refused agents wait and try again).
ENROLMENTS_PER_SECOND = 20.0
ENROLMENT_BURST = 100
# Frames received but not yet read, per connection, before the server stops reading the socket.
# The handshake is two frames, read one at a time; afterwards an agent streams rows and a few
# waiting keep its pipe full (websockets' own default).
HANDSHAKE_QUEUED_FRAMES = 1
AGENT_QUEUED_FRAMES = 16
INTERNAL_REASON = "the server could not handle a message"


class AgentGate:
    """What lets agent connections in: a cap on those authenticating at once (the rest wait
    their turn, up to a second cap, beyond which they are refused for now), and the rate at
    which client IDs the server has never seen may enrol. Known clients are never
    rate-limited."""

    def __init__(self, max_unauthenticated: int = MAX_UNAUTHENTICATED_CONNECTIONS,
                 enrolments: TokenBucket | None = None,
                 max_waiting: int = MAX_WAITING_CONNECTIONS) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.max_waiting = max_waiting
        self.enrolments = enrolments or TokenBucket(ENROLMENTS_PER_SECOND, ENROLMENT_BURST)
        self.unauthenticated = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._refusing = False  # to log the cap once per episode, not once per connection
        self.max_queue_seconds: float | None = MAX_QUEUE_SECONDS
        # Those refused are given times to come back one after the other, at the rate the
        # handshakes get through: the last time promised, and that rate as measured.
        self._promised = 0.0
        self.rate = HANDSHAKES_PER_SECOND
        self._second = 0.0
        self._this_second = 0

    @classmethod
    def for_own_fleet(cls, size: int) -> AgentGate:
        """A gate for a server whose process starts ``size`` agents of its own at once (a demo
        fleet, a benchmark): they may all wait their turn and enrol at once, on top of the
        usual rate."""
        gate = cls(enrolments=TokenBucket(ENROLMENTS_PER_SECOND, ENROLMENT_BURST + size),
                   max_waiting=max(size, MAX_WAITING_CONNECTIONS))
        gate.max_queue_seconds = None  # its agents started together, and wait together
        return gate

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def waiting_cap(self) -> int:
        """How many may wait now: ``max_waiting``, or fewer when the handshakes go slower than
        would see them all through within MAX_QUEUE_SECONDS."""
        if self.max_queue_seconds is None:
            return self.max_waiting
        return min(self.max_waiting,
                   max(int(self.rate * self.max_queue_seconds), self.max_unauthenticated))

    async def enter(self) -> bool:
        """Wait for a place among the connections authenticating (first come, first served);
        False, at once, when too many wait already."""
        if self.unauthenticated < self.max_unauthenticated and not self._waiters:
            self.unauthenticated += 1
            return True
        if len(self._waiters) >= self.waiting_cap():
            if not self._refusing:
                log.warning("%d agent connections are authenticating and %d wait: refusing"
                            " more for now", self.unauthenticated, len(self._waiters))
                self._refusing = True
            return False
        self._refusing = False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a place handed over by one that left
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.authenticated()  # handed a place just as we were cancelled: pass it on
            elif waiter in self._waiters:  # (one leaving may have dropped it, as cancelled)
                self._waiters.remove(waiter)
            raise
        return True

    def authenticated(self) -> None:
        """A connection let in by ``enter`` has proven its key or ended: its place goes to the
        next one waiting."""
        self._count_handshake()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.unauthenticated -= 1

    def _count_handshake(self, now: float | None = None) -> None:
        """Measure the handshakes' rate while there is a queue (a storm): a second's count, then
        the mean of that and the previous measure."""
        now = time.monotonic() if now is None else now
        if now - self._second >= 1.0:
            if self._waiters and now - self._second < 2.0:  # a full second, busy throughout
                measured = self._this_second / (now - self._second)
                self.rate = min(max((self.rate + measured) / 2, MIN_HANDSHAKES_PER_SECOND),
                                MAX_HANDSHAKES_PER_SECOND)
            self._second, self._this_second = now, 0
        self._this_second += 1

    def retry_in(self, now: float | None = None) -> float:
        """Seconds a connection refused now should wait. Each one refused is given the next
        free time after those already inside and those promised before it, at the rate
        handshakes get through: a whole fleet refused at once comes back spread out at the
        pace the server can take (not all at once a few seconds later, to be refused again
        and again, each refusal costing a TLS handshake), up to MAX_RETRY_SECONDS."""
        now = time.monotonic() if now is None else now
        inside = (self.unauthenticated + len(self._waiters)) / self.rate
        self._promised = max(self._promised + 1 / self.rate, now + 0.5 + inside)
        if self._promised - now > MAX_RETRY_SECONDS:
            # Past the cap, spread over it: beyond what it can promise the server is guessing.
            self._promised = now + MAX_RETRY_SECONDS
        return self._promised - now


def allow_full_frames(connection: ServerConnection) -> None:
    """Let ``connection`` (an authenticated agent or operator) send frames up to
    MAX_FRAME_BYTES, and as many unread as usual; the listener starts every connection with the
    handshake's small limits."""
    state = connection.protocol
    # websockets 16 and later call the limit max_message_size; 14 and 15 called it max_size.
    if hasattr(state, "max_message_size"):
        state.max_message_size = protocol.MAX_FRAME_BYTES
    else:
        state.max_size = protocol.MAX_FRAME_BYTES
    connection.recv_messages.high = AGENT_QUEUED_FRAMES
    connection.recv_messages.low = AGENT_QUEUED_FRAMES // 4


class AgentSession:
    """The server's side of one agent connection."""

    # Slots: one is held for every connected agent.
    __slots__ = ("__weakref__", "_authenticating", "_send_lock", "client_id", "connected_at",
                 "peer", "server", "websocket")

    def __init__(self, server: Server, websocket: ServerConnection) -> None:
        self.server = server
        self.websocket = websocket
        self.client_id = ""
        self.peer = _peer(websocket)
        self.connected_at = time.time()
        self._send_lock = asyncio.Lock()
        self._authenticating = False  # counted among the connections still authenticating

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
        """Serve the connection until it closes. Protocol violations close it with a reason, and
        so does anything else that goes wrong handling a message (INTERNAL)."""
        gate = self.server.agent_gate
        if not await gate.enter():
            await self.websocket.close(
                int(CloseCode.TRY_AGAIN_LATER),
                protocol.try_again_reason("too many agents are connecting", gate.retry_in()))
            return
        self._authenticating = True
        try:
            await self._handshake()
            await self._serve()
        except ProtocolError as error:
            log.warning("agent %s (%s) refused: %s", self.client_id or "?", self.peer,
                        error.reason)
            await self.websocket.close(int(error.code), error.reason)
        except ConnectionClosed:
            pass
        except Exception as error:
            # One line, not a traceback per hostile frame; the traceback is there with --verbose.
            log.warning("agent %s (%s): %s while handling a message; connection closed",
                        self.client_id or "?", self.peer, type(error).__name__)
            log.debug("the failure in full", exc_info=True)
            with contextlib.suppress(Exception):
                await self.websocket.close(int(CloseCode.INTERNAL), INTERNAL_REASON)
        finally:
            self._leave_handshake()
            await self._unregister()

    def _leave_handshake(self) -> None:
        if self._authenticating:
            self._authenticating = False
            self.server.agent_gate.authenticated()

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
        gate = self.server.agent_gate
        if known is None and not gate.enrolments.take():
            raise ProtocolError(
                protocol.try_again_reason("too many new clients are enrolling",
                                          1.0 / gate.enrolments.rate if gate.enrolments.rate
                                          else 60.0),
                CloseCode.TRY_AGAIN_LATER)
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
        self._leave_handshake()
        allow_full_frames(self.websocket)
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
        receive, decode = self.websocket.recv, protocol.decode
        while True:
            # Inline, not through _receive: an idle agent's connection waits here, and each
            # coroutine frame on its stack is memory held for every connected agent.
            message = decode(await receive(), sender="agent")
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
