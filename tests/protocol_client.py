"""A bare protocol client for tests that must send what a real agent never would (garbage,
wrong keys, data for flows nobody scheduled). It speaks through the real protocol module and the
real agent identity; it is a test's hands, not a stand-in for the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from agent.identity import AgentIdentity
from velotui.server.server import Server
from velotui.wire import protocol
from velotui.wire.tls import pinned_client_ssl_context


async def open_socket(server: Server, **options: Any) -> ClientConnection:
    return await websockets.asyncio.client.connect(
        server.agent_url, ssl=pinned_client_ssl_context(server.datastore.ca_pem()),
        max_size=None, compression=None, **options,
    )


async def receive(connection: ClientConnection, frames: list[bytes] | None = None
                  ) -> protocol.Message:
    """The next message from the server (its frame kept in ``frames`` when given)."""
    frame = await connection.recv()
    if frames is not None:
        frames.append(frame)
    return protocol.decode(frame, sender="server")


async def handshake(
    server: Server, state_dir: Path, *, secret: str | None = None,
    identity: AgentIdentity | None = None, sign_with: AgentIdentity | None = None,
    facts: dict[str, Any] | None = None, frames: list[bytes] | None = None,
) -> tuple[ClientConnection, protocol.Message]:
    """Connect and say hello; returns the socket and the server's answer to the signature
    (``Welcome``), or raises ConnectionClosed when the server refuses."""
    identity = identity or AgentIdentity.load_or_create(state_dir)
    connection = await open_socket(server)
    await connection.send(protocol.encode(protocol.Hello(
        version=protocol.PROTOCOL_VERSION,
        public_key=identity.public_key_bytes,
        enrolment_secret=server.datastore.enrolment_secret() if secret is None else secret,
        facts=facts or {"Hostname": "test-host", "OS": "linux"},
        labels=["Test"],
    )))
    challenge = await receive(connection, frames)
    assert isinstance(challenge, protocol.Challenge)
    signer = sign_with or identity
    await connection.send(protocol.encode(protocol.Auth(signature=signer.sign(challenge.nonce))))
    return connection, await receive(connection, frames)
