"""The operator API of a running server, from elsewhere: the same methods as ``Service``.

``await RemoteService.connect(url, token, ca_pem)`` gives an object on which
``await remote.list_clients()`` and ``async for event in remote.collect(...)`` work exactly as on a
``Service`` in the same process, so the command line and ``velotui --connect`` share the code that
uses them.

Events that carry bytes (an export's chunks) arrive as binary frames and are handed over exactly
as ``Service`` yields them, ``data`` as bytes. At most MAX_CHUNKS_WAITING of them wait for a
stream's consumer: beyond that the connection is not read, and TCP slows the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from velotui.server.operator_api import METHODS, decode_binary_event
from velotui.server.service import ServiceError
from velotui.wire import protocol
from velotui.wire.tls import pinned_client_ssl_context

MAX_CHUNKS_WAITING = 8


class RemoteError(ServiceError):
    """The server refused a request, or the connection failed."""


class _Replies:
    """One request's replies, in order. Those from binary frames are bounded: the connection's
    reader waits for room, so a consumer that falls behind stops the reading instead of the
    chunks piling up here."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
        self._room = asyncio.Semaphore(MAX_CHUNKS_WAITING)
        self._closed = False

    def put(self, message: dict[str, Any]) -> None:
        self._queue.put_nowait((message, False))

    async def put_bounded(self, message: dict[str, Any]) -> None:
        if not self._closed:
            await self._room.acquire()
        if not self._closed:
            self._queue.put_nowait((message, True))

    async def get(self) -> dict[str, Any]:
        message, holds_room = await self._queue.get()
        if holds_room:
            self._room.release()
        return message

    def close(self) -> None:
        """Nobody reads these any more: a reader waiting for room drops its message."""
        self._closed = True
        self._room.release()


class RemoteService:
    """A connection to the operator API."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Replies] = {}
        self._reader = asyncio.create_task(self._read_forever(), name="operator-api-reader")

    @classmethod
    async def connect(cls, url: str, token: str, ca_pem: str) -> RemoteService:
        """Connect to ``url`` (``wss://host:port``) with the operator token, trusting only the
        datastore's CA. Raises RemoteError when the server cannot be reached or refuses."""
        endpoint = url.rstrip("/")
        if not endpoint.endswith(protocol.OPERATOR_PATH):
            endpoint += protocol.OPERATOR_PATH
        try:
            connection = await websockets.asyncio.client.connect(
                endpoint,
                ssl=pinned_client_ssl_context(ca_pem),
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=64 * 1024 * 1024,
                compression=None,
                open_timeout=10,
            )
        except InvalidStatus as error:
            status = error.response.status_code
            reason = "the token was refused" if status == 401 else f"HTTP {status}"
            raise RemoteError(f"cannot use the server at {url}: {reason}") from None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
            raise RemoteError(f"cannot reach the server at {url}: {error}") from None
        return cls(connection)

    async def close(self) -> None:
        await self._connection.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> RemoteService:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _read_forever(self) -> None:
        try:
            async for frame in self._connection:
                try:
                    message = (decode_binary_event(frame) if isinstance(frame, bytes)
                               else json.loads(frame))
                except ValueError:
                    continue  # not ours to answer; the request it belongs to cannot be known
                if not isinstance(message, dict):
                    continue
                replies = self._waiting.get(message.get("id"))
                if replies is None:
                    continue
                if isinstance(frame, bytes):
                    await replies.put_bounded(message)
                else:
                    replies.put(message)
        except ConnectionClosed:
            pass
        finally:
            for replies in self._waiting.values():
                replies.put({"error": {"message": "the connection to the server closed"}})

    async def _send(self, request_id: int, method: str, params: dict[str, Any]) -> None:
        try:
            await self._connection.send(json.dumps({"id": request_id, "method": method,
                                                    "params": params}))
        except ConnectionClosed:
            raise RemoteError("the connection to the server closed") from None

    async def call(self, method: str, **params: Any) -> Any:
        """The result of a plain method. Raises RemoteError with the server's message."""
        request_id = next(self._ids)
        replies = _Replies()
        self._waiting[request_id] = replies
        try:
            await self._send(request_id, method, params)
            reply = await replies.get()
        finally:
            self._waiting.pop(request_id, None)
            replies.close()
        if "error" in reply:
            raise RemoteError(reply["error"]["message"])
        return reply.get("result")

    async def stream(self, method: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """The events of a streaming method. Raises RemoteError with the server's message."""
        request_id = next(self._ids)
        replies = _Replies()
        self._waiting[request_id] = replies
        finished = False
        try:
            await self._send(request_id, method, params)
            while True:
                reply = await replies.get()
                if "error" in reply:
                    finished = True
                    raise RemoteError(reply["error"]["message"])
                if "event" in reply:
                    yield reply["event"]
                    continue
                finished = True
                return
        finally:
            self._waiting.pop(request_id, None)
            replies.close()
            if not finished:
                with contextlib.suppress(Exception):
                    await self._connection.send(json.dumps({"id": request_id, "cancel": True}))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in METHODS:
            raise AttributeError(name)
        if METHODS[name]:
            return lambda **params: self.stream(name, **params)

        async def call(**params: Any) -> Any:
            return await self.call(name, **params)

        return call
