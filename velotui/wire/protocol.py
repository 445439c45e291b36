"""Every message between agent and server, and how it is checked.

Messages are msgpack maps in binary websocket frames, each with a ``type``. Both sides import
this module; it depends on msgpack alone. Anything received goes through ``decode``, which
refuses a frame that is not a known message of the right direction with well-typed, bounded
fields, raising ``ProtocolError`` with the close code the connection ends with. What it accepts
the rest of the server can always store and print as JSON: numbers are finite, map keys are text,
nested values are JSON values (no bytes, no extension types) at most ``MAX_VALUE_DEPTH`` deep, and
no frame decodes into more than ``MAX_ITEMS_PER_FRAME`` values.

A session: the agent sends ``hello``; the server answers ``challenge`` with a fresh nonce; the
agent proves its key with ``auth``; the server sends ``welcome``. Then the agent checks in for
hunts, the server sends ``flow`` requests and ``cancel``s, the agent streams ``rows``, ``upload``
chunks, ``log`` lines and a final ``status``, each with a per-flow sequence number, and the server
``ack``s each one once it is durable. Unacknowledged messages are sent again after a reconnect;
the server applies each sequence number once.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import chain, compress, repeat
from operator import is_
from typing import Any, ClassVar

import msgpack

PROTOCOL_VERSION = 2
# The largest frame an authenticated agent may send (a batch of rows, an upload chunk).
MAX_FRAME_BYTES = 4 * 1024 * 1024
# Before an agent has proven its key it sends only hello (facts, labels, the flows it still
# holds: a few KiB from a real agent) and auth (under 100 bytes). Anyone who can open a socket
# gets this far, so what each such connection may make the server hold stays small.
MAX_HANDSHAKE_FRAME_BYTES = 64 * 1024
# Maps and lists nested inside one value (a row, the facts), the value itself counting as one.
# Real rows nest a few levels; every JSON encoder and printer down the line recurses, and a
# value that nests hundreds deep would make them fail later, for every operator reading it.
MAX_VALUE_DEPTH = 32
# Values in one frame: every value counts one, and every map and list one more (a container
# costs more memory than most values). A 4 MiB frame of tiny maps decodes into ~280 MB of Python
# objects; this caps a frame near 30 MB, while 1,000 rows of ten columns with a nested map and
# list in each count 21,000. Counted as msgpack completes each container, so a frame over the
# budget is refused before all of it is in memory.
MAX_ITEMS_PER_FRAME = 256 * 1024
MAX_ROWS_PER_BATCH = 10_000
# A hunt's client-side condition returns facts about a client, not evidence.
MAX_CHECKED_ROWS = 1000
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
    # The server is busy (too many agents authenticating, or enrolling new clients faster than
    # it admits them): come back later, not at once.
    TRY_AGAIN_LATER = 4029
    # The server failed while handling a message: a bug on its side, logged there.
    INTERNAL = 4500


# A refusal for now (TRY_AGAIN_LATER) says when to come back in its reason, in these words, so
# that a fleet reconnecting at once is spread over the next seconds rather than the next minute.
RETRY_HINT = re.compile(r"try again in (\d+(?:\.\d+)?) s")


def try_again_reason(what: str, seconds: float) -> str:
    """The reason of a TRY_AGAIN_LATER close: what is busy, and when to come back."""
    return f"{what}; try again in {max(seconds, 0.5):.1f} s"


def retry_hint(reason: str) -> float | None:
    """The seconds a TRY_AGAIN_LATER reason asks to wait, if it says."""
    match = RETRY_HINT.search(reason or "")
    return float(match.group(1)) if match else None


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
class Checked(Message):
    """The rows of a hunt flow's client-side condition (see ``FlowRequest.condition``), sent
    before anything of its collection."""

    TYPE: ClassVar[str] = "checked"
    FROM: ClassVar[str] = "agent"
    flow_id: str = _limit(128)
    seq: int
    rows: list[dict] = _default_limit(MAX_CHECKED_ROWS, [])


@dataclass(frozen=True, kw_only=True)
class Status(Message):
    """A flow's end: how it ended and what it produced. ``rows`` is how many rows the flow
    sent in all, ``bytes`` how many file bytes it uploaded. The flow's last rows may travel in
    ``final_rows`` (one message fewer for the many small flows of a hunt), and a hunt flow's
    condition rows in ``checked`` when nothing was sent before (one message for the whole flow
    of a client that did not match, or whose collection is small)."""

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
    checked: list[dict] | None = _default_limit(MAX_CHECKED_ROWS, None)


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
    """Run ``query`` as flow ``flow_id`` within these limits (0 means no limit).

    A hunt flow also has a ``condition``: the hunt's client-side condition, run first; its rows
    go to the server (``Checked``, or in the ``Status``). With ``hold`` the agent then waits for
    the server's ``Go``, which brings the query (the server judges the hidden condition first);
    without it, ``query`` runs at once when the condition returned a row, and the flow ends there
    when it returned none."""

    TYPE: ClassVar[str] = "flow"
    FROM: ClassVar[str] = "server"
    flow_id: str = _limit(128)
    query: str = _default_limit(MAX_QUERY, "")
    timeout: float = 600.0
    max_rows: int = 0
    max_upload_bytes: int = 0
    env: dict = _default_limit(1024, {})
    condition: str = _default_limit(MAX_QUERY, "")
    hold: bool = False


@dataclass(frozen=True, kw_only=True)
class Go(Message):
    """The server's judgement of a held hunt flow: run ``query`` (``run``: the hunt's
    collection, sent only now, so a client the hidden condition leaves out never receives it),
    or end the flow here. Acknowledges the flow's messages up to ``seq`` (its ``Checked``)."""

    TYPE: ClassVar[str] = "go"
    FROM: ClassVar[str] = "server"
    flow_id: str = _limit(128)
    seq: int
    run: bool = True
    query: str = _default_limit(MAX_QUERY, "")


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
        Checked,
        Status,
        Challenge,
        Welcome,
        FlowRequest,
        Go,
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


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ProtocolError("msgpack extension types are not part of the protocol")


_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,  # map keys are text or bytes; bytes are refused below
    "use_list": True,
    "max_str_len": MAX_FRAME_BYTES,
    "max_array_len": MAX_ITEMS_PER_FRAME,
    "max_map_len": MAX_ITEMS_PER_FRAME,
    "max_ext_len": 0,
    "ext_hook": _refuse_extension,
}

# A frame that decodes with no byte string in it can still hold a value JSON cannot carry only
# where one of these bytes is followed by one of those: a float32 (0xca) or float64 (0xcb) whose
# first byte is 0x7f or 0xff has the exponent of NaN and the infinities, and a byte string
# (0xc4-0xc6) whose length starts with a zero byte may be empty. Valid UTF-8 text never holds
# these pairs, so in real rows they are rare (a number's bytes, now and then).
_SUSPECT_PAIRS = (
    (b"\xca", frozenset(b"\x7f\xff")),
    (b"\xcb", frozenset(b"\x7f\xff")),
    (b"\xc4", frozenset(b"\x00")),
    (b"\xc5", frozenset(b"\x00")),
    (b"\xc6", frozenset(b"\x00")),
)


def _may_hold_non_json(frame: bytes) -> bool:
    last = len(frame) - 1
    for lead, followers in _SUSPECT_PAIRS:
        position = frame.find(lead)  # memchr: a pass over the frame costs next to nothing
        while position >= 0:
            if position == last or frame[position + 1] in followers:
                return True
            position = frame.find(lead, position + 1)
    return False


@dataclass
class _Unpacked:
    payload: Any
    # Every map and list of the frame in the order msgpack completed them: each one after all
    # the maps and lists inside it, the message itself last.
    containers: list[Any]
    # No byte string and no NaN or infinity anywhere: every nested value is a JSON value.
    plain: bool


def _unpack(frame: bytes) -> _Unpacked:
    containers: list[Any] = []
    remaining = MAX_ITEMS_PER_FRAME

    def completed(container: Any) -> Any:
        # msgpack calls this as it completes each map and list, so the budget holds while the
        # frame is being decoded, not only once all of it is in memory.
        nonlocal remaining
        remaining -= 1 + len(container)
        if remaining < 0:
            raise ProtocolError(f"more than {MAX_ITEMS_PER_FRAME} values in one frame")
        containers.append(container)
        return container

    hooks = {"object_hook": completed, "list_hook": completed}
    try:
        try:
            # Most frames (rows, logs, statuses) hold no byte string: decoded with none allowed,
            # their nested values need no walk to be known to be JSON values.
            payload = msgpack.unpackb(frame, max_bin_len=0, **hooks, **_UNPACK_LIMITS)
            plain = not _may_hold_non_json(frame)
        except ValueError:
            # A byte string (hello's key, an upload's data) or a frame that breaks a limit.
            containers.clear()
            remaining = MAX_ITEMS_PER_FRAME
            payload = msgpack.unpackb(frame, max_bin_len=MAX_FRAME_BYTES, **hooks,
                                      **_UNPACK_LIMITS)
            plain = False
    except (
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        ValueError,
        TypeError,
        UnicodeDecodeError,
    ) as error:
        raise ProtocolError(f"not a msgpack frame: {error.__class__.__name__}") from None
    return _Unpacked(payload, containers, plain)


# The values a nested value (a row, the facts, a flow's env) may hold: what JSON can carry.
_JSON_SCALARS = frozenset({str, int, bool, type(None)})
_JSON_TYPES = _JSON_SCALARS | {float, dict, list}
_CONTAINER_TYPES = frozenset({dict, list})


def _check_json_values(name: str, values: list[Any]) -> int:
    """Check that each of ``values`` is a JSON value: null, a boolean, an integer, a finite
    number, text, or a list or text-keyed map of such values, with maps and lists nested at most
    MAX_VALUE_DEPTH deep. Returns what they count toward MAX_ITEMS_PER_FRAME. Raises
    ProtocolError.

    The walk goes level by level and each level is a few passes in C (map, set, compress)
    rather than a Python step per value."""
    count = 0
    depth = 0
    level = values
    while level:
        depth += 1
        count += len(level)
        kinds = set(map(type, level))
        if kinds <= _JSON_SCALARS:
            break
        if not kinds <= _JSON_TYPES:
            odd = next(kind for kind in kinds if kind not in _JSON_TYPES)
            raise ProtocolError(f"field {name}: a {_kind_name(odd)} is not a JSON value")
        level_types = list(map(type, level))
        if float in kinds:
            floats = compress(level, map(is_, level_types, repeat(float)))
            if not all(map(math.isfinite, floats)):
                raise ProtocolError(f"field {name}: numbers must be finite")
        if dict not in kinds and list not in kinds:
            break
        if depth > MAX_VALUE_DEPTH:
            raise ProtocolError(f"field {name}: nested more than {MAX_VALUE_DEPTH} deep")
        maps = list(compress(level, map(is_, level_types, repeat(dict))))
        if not set(map(type, chain.from_iterable(maps))) <= {str}:
            raise ProtocolError(f"field {name}: map keys must be text")
        lists = list(compress(level, map(is_, level_types, repeat(list))))
        count += len(maps) + len(lists)
        level = [*chain.from_iterable(map(dict.values, maps)), *chain.from_iterable(lists)]
    return count


def _deep_run(containers: list[Any], fields: list[Any], rows: list[Any]) -> int:
    """At least as many maps and lists as msgpack completed one after another, at most, that are
    none of the shallow ones: the message (last of ``containers``), its ``fields`` that are maps
    or lists, and the ``rows``.

    Everything nested inside one row (or one field) is completed in one unbroken run just before
    the row itself, so no value nests deeper below a shallow one than this run is long."""
    deep = len(containers) - 1 - len(fields) - len(rows)
    if deep < MAX_VALUE_DEPTH:
        return deep
    if rows and deep % len(rows) == 0:
        # Rows of one shape (one query's columns) hold as many nested maps and lists each, so
        # each row comes that many places after the one before it: a check by identity in C.
        per_row = deep // len(rows)
        placed = containers[per_row : len(rows) * (per_row + 1) : per_row + 1]
        if len(placed) == len(rows) and all(map(is_, placed, rows)):
            return max(per_row, len(containers) - len(rows) * (per_row + 1))
    shallow_ids = {id(containers[-1]), *map(id, fields), *map(id, rows)}
    marks = bytes(map(shallow_ids.__contains__, map(id, containers)))
    return max(map(len, marks.split(b"\x01")))


def _kind_name(kind: type) -> str:
    return {bytes: "byte string", float: "number"}.get(kind, kind.__name__)


def json_value_items(value: Any) -> int:
    """What ``value`` counts toward MAX_ITEMS_PER_FRAME: one for it and for each value nested in
    it, and one more for each map and list among them. An agent checks each row with it before
    sending it.

    Raises ProtocolError when the protocol would refuse ``value`` inside a row or the facts: not
    a JSON value, a number that is not finite, a map key that is not text, or nested more than
    MAX_VALUE_DEPTH deep."""
    return _value_items(value, 1)


def _value_items(value: Any, depth: int) -> int:
    # One value at a time, recursively: an agent checks rows one by one, and for a single row
    # this costs less than _check_json_values' passes. The recursion stops at MAX_VALUE_DEPTH.
    kind = value.__class__
    if kind is dict or kind is list:
        if depth > MAX_VALUE_DEPTH:
            raise ProtocolError(f"nested more than {MAX_VALUE_DEPTH} deep")
        if kind is dict:
            if not all(key.__class__ is str for key in value):
                raise ProtocolError("map keys must be text")
            items = value.values()
        else:
            items = value
        count = 2
        for item in items:
            item_kind = item.__class__
            if item_kind is str or item_kind is int or item_kind is bool or item is None:
                count += 1
            else:
                count += _value_items(item, depth + 1)
        return count
    if kind is float:
        if not math.isfinite(value):
            raise ProtocolError("numbers must be finite")
        return 1
    if kind in _JSON_SCALARS:
        return 1
    raise ProtocolError(f"a {_kind_name(kind)} is not a JSON value")


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
            number = float(value)  # msgpack integers (< 2**64) always fit a float
            if not math.isfinite(number):
                raise ProtocolError(f"field {name}: numbers must be finite")
            return number

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
            return value  # what it holds: _check_nested_values

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
                # Rows: each a map (what it holds: _check_nested_values).
                if value and set(map(type, value)) != {dict}:
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


def _nested_fields(cls: type[Message]) -> tuple[tuple[str, bool], ...]:
    """The fields of ``cls`` that hold nested values: (name, whether it is a list of them)."""
    hints = typing.get_type_hints(cls)
    fields = []
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[item.name]
        if typing.get_origin(hint) in _UNION_TYPES:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if hint is dict or typing.get_origin(hint) is dict:
            fields.append((item.name, False))
        elif typing.get_origin(hint) is list and typing.get_args(hint) == (dict,):
            fields.append((item.name, True))
    return tuple(fields)


_NESTED_FIELDS = {kind: _nested_fields(cls) for kind, cls in MESSAGES.items()}


def _check_nested_values(kind: str, values: dict[str, Any], unpacked: _Unpacked) -> None:
    """Check what the message's rows and maps (facts, env) hold: JSON values, at most
    MAX_VALUE_DEPTH deep. Raises ProtocolError."""
    fields = [(name, is_list) for name, is_list in _NESTED_FIELDS[kind] if values.get(name)]
    if not fields:
        return
    if unpacked.plain:
        # Every value is a JSON value already; only the depth is left, and it needs a walk only
        # when a long run of nested maps and lists makes a deep one possible.
        top = [v for v in unpacked.payload.values() if v.__class__ in _CONTAINER_TYPES]
        rows: list[Any] = []
        for name, is_list in fields:
            if is_list:
                rows += values[name]
        if _deep_run(unpacked.containers, top, rows) < MAX_VALUE_DEPTH:
            return
    for name, is_list in fields:
        _check_json_values(name, values[name] if is_list else [values[name]])


def decode(frame: bytes | str, sender: str) -> Message:
    """The message in ``frame``, which ``sender`` ("agent" or "server") sent.

    Raises ``ProtocolError`` for a text frame, an oversized frame, bad msgpack, an unknown type,
    a type the sender may not send, or a missing, mistyped or oversized field.
    """
    if not isinstance(frame, bytes | bytearray):
        raise ProtocolError("text frames are not part of the protocol")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError("frame too big", CloseCode.MESSAGE_TOO_BIG)
    unpacked = _unpack(frame if frame.__class__ is bytes else bytes(frame))
    payload = unpacked.payload
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
    _check_nested_values(kind, values, unpacked)
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
    if isinstance(message, Rows | Log | Upload | Status | Checked) and message.seq < 1:
        raise ProtocolError("seq must be 1 or more")
    if isinstance(message, Upload) and (message.offset < 0 or message.upload_id < 0):
        raise ProtocolError("upload: negative offset or id")
