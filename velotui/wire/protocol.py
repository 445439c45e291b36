"""Every message between agent and server, and how it is checked.

Messages are msgpack maps in binary websocket frames, each with a ``type``. Both sides import
this module; it depends on msgpack alone. Anything received goes through ``decode``, which
refuses a frame that is not a known message of the right direction with well-typed, bounded
fields, raising ``ProtocolError`` with the close code the connection ends with.

A session: the agent sends ``hello``; the server answers ``challenge`` with a fresh nonce; the
agent proves its key with ``auth``; the server sends ``welcome``. Then the agent checks in for
hunts, the server sends ``flow`` requests and ``cancel``s, the agent streams ``rows``, ``upload``
chunks, ``log`` lines and a final ``status``, each with a per-flow sequence number, and the server
``ack``s each one once it is durable. Unacknowledged messages are sent again after a reconnect;
the server applies each sequence number once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import msgpack

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_ROWS_PER_BATCH = 10_000
MAX_UPLOAD_CHUNK_BYTES = 1024 * 1024
MAX_TEXT = 64 * 1024
MAX_QUERY = 256 * 1024
MAX_NAME = 4096
AGENT_PATH = "/agent"
OPERATOR_PATH = "/api"


class CloseCode(IntEnum):
    """Why a connection was closed (websocket close codes)."""

    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    PROTOCOL_ERROR = 4000
    UNSUPPORTED_VERSION = 4001
    AUTH_FAILED = 4003
    FLOW_NOT_SCHEDULED = 4004
    REPLACED = 4005


class ProtocolError(Exception):
    """A frame that breaks the protocol; the connection closes with ``code`` and ``reason``."""

    def __init__(self, reason: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason[:120]  # websocket close reasons are limited to 123 bytes
        self.code = code


def _limit(maximum: int) -> Any:
    """A required field of at most ``maximum`` characters, bytes or items."""
    return field(metadata={"max": maximum})


def _default_limit(maximum: int, default: Any) -> Any:
    """An optional field of at most ``maximum`` characters, bytes or items."""
    if isinstance(default, list | dict):
        return field(default_factory=type(default), metadata={"max": maximum})
    return field(default=default, metadata={"max": maximum})


FLOW_STATES = ("finished", "error", "timeout", "cancelled")
LOG_LEVELS = ("error", "warning", "info", "debug")


class Message:
    """Base of every message. ``TYPE`` is the wire name; ``FROM`` says who may send it."""

    TYPE: ClassVar[str]
    FROM: ClassVar[str]  # "agent" or "server"


# Agent to server ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    FROM: ClassVar[str] = "agent"
    version: int
    public_key: bytes = _limit(32)
    enrolment_secret: str | None = _default_limit(256, None)
    facts: dict = _default_limit(1024, {})
    labels: list[str] = _default_limit(256, [])
    last_hunt_timestamp: int = 0
    running_flows: list[str] = _default_limit(1024, [])
    agent_version: str = _default_limit(64, "")


@dataclass(frozen=True, kw_only=True)
class Auth(Message):
    TYPE: ClassVar[str] = "auth"
    FROM: ClassVar[str] = "agent"
    signature: bytes = _limit(64)


@dataclass(frozen=True, kw_only=True)
class CheckIn(Message):
    """The agent asks for hunts newer than the newest one it was checked for."""

    TYPE: ClassVar[str] = "check_in"
    FROM: ClassVar[str] = "agent"
    last_hunt_timestamp: int


@dataclass(frozen=True, kw_only=True)
class Rows(Message):
    TYPE: ClassVar[str] = "rows"
    FROM: ClassVar[str] = "agent"
    flow_id: str = _limit(128)
    seq: int
    rows: list[dict] = _default_limit(MAX_ROWS_PER_BATCH, [])


@dataclass(frozen=True, kw_only=True)
class Log(Message):
    TYPE: ClassVar[str] = "log"
    FROM: ClassVar[str] = "agent"
    flow_id: str = _limit(128)
    seq: int
    level: str = _default_limit(16, "info")
    message: str = _default_limit(MAX_TEXT, "")
    time: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Upload(Message):
    """One chunk of an uploaded file; ``eof`` marks the last, which carries the SHA-256."""

    TYPE: ClassVar[str] = "upload"
    FROM: ClassVar[str] = "agent"
    flow_id: str = _limit(128)
    seq: int
    upload_id: int = 0
    name: str = _default_limit(MAX_NAME, "")
    offset: int = 0
    data: bytes = _default_limit(MAX_UPLOAD_CHUNK_BYTES, b"")
    eof: bool = False
    sha256: str | None = _default_limit(64, None)


@dataclass(frozen=True, kw_only=True)
class Status(Message):
    """A flow's end: how it ended and what it produced. ``rows`` is how many rows the flow
    sent in all, ``bytes`` how many file bytes it uploaded. The flow's last rows may travel in
    ``final_rows`` (one message fewer for the many small flows of a hunt)."""

    TYPE: ClassVar[str] = "status"
    FROM: ClassVar[str] = "agent"
    flow_id: str = _limit(128)
    seq: int
    state: str = _default_limit(16, "finished")
    error: str | None = _default_limit(MAX_TEXT, None)
    rows: int = 0
    bytes: int = 0
    duration: float = 0.0
    final_rows: list[dict] = _default_limit(MAX_ROWS_PER_BATCH, [])


# Server to agent ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Challenge(Message):
    TYPE: ClassVar[str] = "challenge"
    FROM: ClassVar[str] = "server"
    nonce: bytes = _limit(64)
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    FROM: ClassVar[str] = "server"
    client_id: str = _limit(64)
    enrolled: bool = False
    server_time: float = 0.0


@dataclass(frozen=True, kw_only=True)
class FlowRequest(Message):
    """Run ``query`` as flow ``flow_id`` within these limits (0 means no limit)."""

    TYPE: ClassVar[str] = "flow"
    FROM: ClassVar[str] = "server"
    flow_id: str = _limit(128)
    query: str = _default_limit(MAX_QUERY, "")
    timeout: float = 600.0
    max_rows: int = 0
    max_upload_bytes: int = 0
    env: dict = _default_limit(1024, {})


@dataclass(frozen=True, kw_only=True)
class Cancel(Message):
    TYPE: ClassVar[str] = "cancel"
    FROM: ClassVar[str] = "server"
    flow_id: str = _limit(128)
    reason: str = _default_limit(MAX_TEXT, "")


@dataclass(frozen=True, kw_only=True)
class Ack(Message):
    """Everything of ``flow_id`` up to and including ``seq`` is durable."""

    TYPE: ClassVar[str] = "ack"
    FROM: ClassVar[str] = "server"
    flow_id: str = _limit(128)
    seq: int


@dataclass(frozen=True, kw_only=True)
class CheckNow(Message):
    """A hunt has started: check in now rather than at the next poll."""

    TYPE: ClassVar[str] = "check_now"
    FROM: ClassVar[str] = "server"


@dataclass(frozen=True, kw_only=True)
class HuntCheckpoint(Message):
    """The agent has been checked for every hunt up to this timestamp: remember it."""

    TYPE: ClassVar[str] = "hunt_checkpoint"
    FROM: ClassVar[str] = "server"
    last_hunt_timestamp: int = 0


MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Auth,
        CheckIn,
        Rows,
        Log,
        Upload,
        Status,
        Challenge,
        Welcome,
        FlowRequest,
        Cancel,
        Ack,
        CheckNow,
        HuntCheckpoint,
    )
}

# Encoding ----------------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The frame for ``message``."""
    payload = {"type": message.TYPE}
    for item in dataclasses.fields(message):  # type: ignore[arg-type]
        payload[item.name] = getattr(message, item.name)
    return msgpack.packb(payload, use_bin_type=True)


def _unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=MAX_FRAME_BYTES,
            max_bin_len=MAX_FRAME_BYTES,
            max_array_len=1_000_000,
            max_map_len=100_000,
        )
    except (
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        ValueError,
        TypeError,
        UnicodeDecodeError,
    ) as error:
        raise ProtocolError(f"not a msgpack frame: {error.__class__.__name__}") from None


Checker = Callable[[Any], Any]
_UNION_TYPES = (typing.Union, types.UnionType)


def _checker(annotation: Any, name: str, maximum: int | None) -> Checker:
    """A function that returns a value when it fits ``annotation`` and ``maximum`` and raises
    ProtocolError otherwise. Built once per field: decoding runs for every message."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNION_TYPES:
        inner = _checker(next(a for a in args if a is not type(None)), name, maximum)
        return lambda value: None if value is None else inner(value)
    if annotation is bool:
        def check_bool(value: Any) -> bool:
            if value is not True and value is not False:
                raise ProtocolError(f"field {name}: expected a boolean")
            return value

        return check_bool
    if annotation is int:
        def check_int(value: Any) -> int:
            if value.__class__ is not int:
                raise ProtocolError(f"field {name}: expected an integer")
            if not -(2**63) <= value < 2**63:
                raise ProtocolError(f"field {name}: integer out of range")
            return value

        return check_int
    if annotation is float:
        def check_float(value: Any) -> float:
            if value.__class__ is not float and value.__class__ is not int:
                raise ProtocolError(f"field {name}: expected a number")
            return float(value)

        return check_float
    if annotation is str or annotation is bytes:
        kind, unit = (str, "characters") if annotation is str else (bytes, "bytes")
        expected = "text" if annotation is str else "bytes"

        def check_sized(value: Any) -> Any:
            if value.__class__ is not kind:
                raise ProtocolError(f"field {name}: expected {expected}")
            if maximum is not None and len(value) > maximum:
                raise ProtocolError(f"field {name}: longer than {maximum} {unit}")
            return value

        return check_sized
    if annotation is dict or origin is dict:
        def check_map(value: Any) -> dict:
            if value.__class__ is not dict:
                raise ProtocolError(f"field {name}: expected a map")
            if maximum is not None and len(value) > maximum:
                raise ProtocolError(f"field {name}: more than {maximum} entries")
            if not all(k.__class__ is str for k in value):
                raise ProtocolError(f"field {name}: map keys must be text")
            return value

        return check_map
    if origin is list:
        item_type = args[0] if args else Any
        item = _checker(item_type, f"{name}[]", MAX_TEXT) if item_type is not dict else None

        def check_list(value: Any) -> list:
            if value.__class__ is not list:
                raise ProtocolError(f"field {name}: expected a list")
            if maximum is not None and len(value) > maximum:
                raise ProtocolError(f"field {name}: more than {maximum} items")
            if item is None:
                # Rows: thousands a message, so the check stays cheap. Map keys are already
                # text or bytes (the decoder's strict_map_key); only the item type is left.
                if not all(element.__class__ is dict for element in value):
                    raise ProtocolError(f"field {name}[]: expected a map")
                return value
            return [item(element) for element in value]

        return check_list
    raise TypeError(f"no check for {annotation!r}")  # a programming error, not bad input


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    check: Checker
    required: bool


def _specs(cls: type[Message]) -> list[_FieldSpec]:
    hints = typing.get_type_hints(cls)
    return [
        _FieldSpec(
            name=item.name,
            check=_checker(hints[item.name], item.name, item.metadata.get("max")),
            required=item.default is dataclasses.MISSING
            and item.default_factory is dataclasses.MISSING,
        )
        for item in dataclasses.fields(cls)  # type: ignore[arg-type]
    ]


_SPECS = {kind: _specs(cls) for kind, cls in MESSAGES.items()}


def decode(frame: bytes | str, sender: str) -> Message:
    """The message in ``frame``, which ``sender`` ("agent" or "server") sent.

    Raises ``ProtocolError`` for a text frame, an oversized frame, bad msgpack, an unknown type,
    a type the sender may not send, or a missing, mistyped or oversized field.
    """
    if not isinstance(frame, bytes | bytearray):
        raise ProtocolError("text frames are not part of the protocol")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError("frame too big", CloseCode.MESSAGE_TOO_BIG)
    payload = _unpack(bytes(frame))
    if not isinstance(payload, dict):
        raise ProtocolError("a message must be a map")
    kind = payload.get("type")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {str(kind)[:32]!r}")
    if sender != cls.FROM:
        raise ProtocolError(f"{kind!r} may not be sent by the {sender}")
    values: dict[str, Any] = {}
    for spec in _SPECS[kind]:
        if spec.name not in payload:
            if spec.required:
                raise ProtocolError(f"{kind}: missing field {spec.name}")
            continue
        values[spec.name] = spec.check(payload[spec.name])
    message = cls(**values)
    validate_semantics(message)
    return message


def validate_semantics(message: Message) -> None:
    """Checks beyond types: sizes that must be exact and values from fixed sets."""
    if isinstance(message, Hello) and len(message.public_key) != 32:
        raise ProtocolError("hello: public_key must be 32 bytes")
    if isinstance(message, Auth) and len(message.signature) != 64:
        raise ProtocolError("auth: signature must be 64 bytes")
    if isinstance(message, Status) and message.state not in FLOW_STATES:
        raise ProtocolError(f"status: unknown state {message.state!r}")
    if isinstance(message, Log) and message.level not in LOG_LEVELS:
        raise ProtocolError(f"log: unknown level {message.level!r}")
    if isinstance(message, Rows | Log | Upload | Status) and message.seq < 1:
        raise ProtocolError("seq must be 1 or more")
    if isinstance(message, Upload) and (message.offset < 0 or message.upload_id < 0):
        raise ProtocolError("upload: negative offset or id")
