"""The operator API: the ``Service`` methods over an authenticated websocket, as JSON.

A request is ``{"id": n, "method": name, "params": {...}}``. A plain method answers
``{"id": n, "result": ...}``; a streaming one sends ``{"id": n, "event": {...}}`` for each event
and then ``{"id": n, "result": null}``. A refusal is ``{"id": n, "error": {"message": ...}}``.
``{"id": n, "cancel": true}`` stops a stream. Requests run concurrently.

Each request acts as the operator the connection's token stands for NOW: a removed operator's
next request is refused (and the connection closed), a changed role applies from the next
request. A method the operator's role does not allow is refused with one line naming the role
it needs (see ``roles``); a method not marked with a role is never served.

An event that carries bytes as ``data`` (an export's ``chunk``) goes as one binary frame instead:
the length of a JSON header (4 bytes, big-endian), the header ``{"id": n, "event": {...}}`` with
the event's other fields, then the bytes as they are: no base64, a third fewer bytes on the wire.
Frames leave in the order the events come, and each send waits until the connection has taken the
previous ones, so a slow reader slows the stream down rather than making the server buffer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import struct
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from velotui.server.audit import refusal_entry
from velotui.server.operators import Operator
from velotui.server.roles import allows, required_role
from velotui.server.service import Service, ServiceError
from velotui.vql.values import to_json_value
from velotui.wire.protocol import CloseCode

if TYPE_CHECKING:
    from velotui.server.server import Server

log = logging.getLogger(__name__)
MAX_CONCURRENT_REQUESTS = 64
_HEADER_LENGTH = struct.Struct(">I")


def public_methods() -> dict[str, bool]:
    """Every method the API serves, and whether it streams."""
    return {
        name: bool(getattr(member, "streaming", False))
        for name, member in vars(Service).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


METHODS = public_methods()


def _encode(payload: dict[str, Any]) -> str:
    return json.dumps(to_json_value(payload), ensure_ascii=False, separators=(",", ":"))


def carries_bytes(event: dict[str, Any]) -> bool:
    """Whether ``event`` goes as a binary frame: its ``data`` is bytes."""
    return isinstance(event.get("data"), bytes | bytearray | memoryview)


def encode_binary_event(request_id: Any, event: dict[str, Any]) -> bytes:
    """The binary frame for ``event`` (whose ``data`` is bytes) answering ``request_id``."""
    fields = {key: value for key, value in event.items() if key != "data"}
    header = _encode({"id": request_id, "event": fields}).encode("utf-8")
    return b"".join((_HEADER_LENGTH.pack(len(header)), header, event["data"]))


def decode_binary_event(frame: bytes) -> dict[str, Any]:
    """``{"id": n, "event": {..., "data": bytes}}`` from a binary frame. Raises ValueError when
    the frame is not one."""
    if len(frame) < _HEADER_LENGTH.size:
        raise ValueError("a binary frame too short for its header")
    (length,) = _HEADER_LENGTH.unpack_from(frame)
    end = _HEADER_LENGTH.size + length
    if end > len(frame):
        raise ValueError("a binary frame shorter than its header says")
    message = json.loads(frame[_HEADER_LENGTH.size:end])
    if not isinstance(message, dict) or not isinstance(message.get("event"), dict):
        raise ValueError("a binary frame's header is not an event")
    message["event"]["data"] = frame[end:]
    return message


def refusal(method: str, operator: Operator) -> str | None:
    """Why ``operator`` may not call ``method`` (one line), or None when it may."""
    needed = required_role(getattr(Service, method, None))
    if needed is None:
        return f"{method} is not served: it states no role"
    if not allows(operator.role, needed):
        return f"{method} needs the {needed} role; {operator.name} is {operator.role}"
    return None


async def serve_operator(connection: ServerConnection, server: Server, credential: str
                         ) -> None:
    """Answer requests on one operator connection until it closes; ``credential`` is the hash
    of the token it showed."""
    tasks: dict[Any, asyncio.Task[None]] = {}
    send_lock = asyncio.Lock()

    async def send(payload: dict[str, Any] | bytes) -> None:
        frame = payload if isinstance(payload, bytes) else _encode(payload)
        async with send_lock:
            await connection.send(frame)

    try:
        async for frame in connection:
            try:
                request = json.loads(frame)
                if not isinstance(request, dict):
                    raise ValueError("a request must be an object")
            except ValueError as error:
                await send({"id": None, "error": {"message": f"bad request: {error}"}})
                continue
            request_id = request.get("id")
            if request.get("cancel"):
                task = tasks.get(request_id)
                if task is not None:
                    task.cancel()
                continue
            if len(tasks) >= MAX_CONCURRENT_REQUESTS:
                await send({"id": request_id, "error": {"message": "too many requests at once"}})
                continue
            operator = server.operators.by_hash(credential)
            if operator is None:
                await send({"id": request_id, "error": {
                    "message": "this token's operator was removed: the connection is closed"}})
                await connection.close(int(CloseCode.AUTH_FAILED), "operator removed")
                break
            task = asyncio.create_task(_answer(Service(server, operator), request, send))
            tasks[request_id] = task
            task.add_done_callback(lambda _t, key=request_id: tasks.pop(key, None))
    except ConnectionClosed:
        pass
    finally:
        for task in tasks.values():
            task.cancel()
        for task in list(tasks.values()):
            with contextlib.suppress(BaseException):
                await task


async def _answer(service: Service, request: dict[str, Any], send: Any) -> None:
    request_id = request.get("id")
    name = request.get("method")
    params = request.get("params") or {}
    try:
        if not isinstance(name, str) or name not in METHODS:
            raise ServiceError(f"no such method {name!r}")
        if not isinstance(params, dict):
            raise ServiceError("params must be an object")
        refused = refusal(name, service.operator)
        if refused is not None:
            raise ServiceError(refused)
        method = getattr(service, name)
        try:
            inspect.signature(method).bind(**params)
        except TypeError as error:
            raise ServiceError(f"{name}: {error}") from None
        if METHODS[name]:
            async with contextlib.aclosing(method(**params)) as events:
                async for event in events:
                    if carries_bytes(event):
                        await send(encode_binary_event(request_id, event))
                    else:
                        await send({"id": request_id, "event": event})
            await send({"id": request_id, "result": None})
        else:
            await send({"id": request_id, "result": await method(**params)})
            if name == "remove_operator":  # after the answer: the caller may be the one removed
                await service.server.shut_out_removed_operators()
    except asyncio.CancelledError:
        raise
    except ServiceError as error:
        await _record_refusal(service, name, params, str(error))
        await _send_error(send, request_id, str(error))
    except ConnectionClosed:
        pass
    except Exception as error:
        log.exception("operator request %s failed", name)
        await _send_error(send, request_id, f"internal error: {error.__class__.__name__}: {error}")


async def _record_refusal(service: Service, name: Any, params: Any, reason: str) -> None:
    """Record, in its own transaction and before the answer, the refusal of a call that would
    have acted (a read refused is not recorded)."""
    if not isinstance(name, str) or not isinstance(params, dict):
        return
    entry = refusal_entry(service.actor, name, params)
    if entry is None:
        return
    try:
        await service.server.audit.refused(entry, reason)
    except Exception:  # the refusal still reaches the operator
        log.exception("recording the refusal of %s failed", name)


async def _send_error(send: Any, request_id: Any, message: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await send({"id": request_id, "error": {"message": message}})
