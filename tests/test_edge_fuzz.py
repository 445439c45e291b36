"""Hostile agents against a real server on loopback: arbitrary frames of every message type,
before and after authentication. Whatever arrives, the server stays up, the connection ends with
a documented close code and a reason (or the frame is taken), never 1011 or INTERNAL, and an
agent minding its own business on the same server carries on and completes its collection."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import types
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.protocol_client import handshake, open_socket, receive
from velotui.server.server import Server
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode

# What a hostile agent may be told. INTERNAL would be a bug on the server's side.
DOCUMENTED_CLOSE_CODES = {
    CloseCode.MESSAGE_TOO_BIG,
    CloseCode.PROTOCOL_ERROR,
    CloseCode.UNSUPPORTED_VERSION,
    CloseCode.AUTH_FAILED,
    CloseCode.FLOW_NOT_SCHEDULED,
    CloseCode.TRY_AGAIN_LATER,
}
ANSWER_TIMEOUT = 10.0
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    # One server (and one well-behaved agent) for all the examples of a test, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Deep(str):
    """Stands for ``depth`` lists nested in one another. msgpack's packer stops at 511 levels
    and its unpacker at 1,024: the frame gets the raw nesting spliced in after packing."""

    depth: int

    def __new__(cls, depth: int) -> Deep:
        marker = super().__new__(cls, f"\x00deep-{depth}\x00")
        marker.depth = depth
        return marker

    def splice(self, frame: bytes) -> bytes:
        packed = msgpack.packb(str(self))
        return frame.replace(packed, b"\x91" * self.depth + b"\xc0", 1)


def deep_markers(value: Any) -> list[Deep]:
    if isinstance(value, Deep):
        return [value]
    if isinstance(value, dict):
        return [m for item in value.values() for m in deep_markers(item)]
    if isinstance(value, list):
        return [m for item in value for m in deep_markers(item)]
    return []


json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
any_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
               | st.text(max_size=8) | st.binary(max_size=8))
any_values = st.recursive(
    any_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), children, max_size=4),
    max_leaves=20,
)
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
deep = st.integers(30, 1000).map(Deep)  # deeper than MAX_VALUE_DEPTH, up to msgpack's limit
# What a JSON value must not hold, alone or among ordinary values.
poison = st.one_of(not_finite, deep, st.binary(max_size=4),
                   st.just(msgpack.ExtType(1, b"x")), st.just({b"key": 1}))


@st.composite
def poisoned_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Ordinary rows with one poisoned value somewhere in them."""
    rows = draw(st.lists(st.dictionaries(st.text(max_size=3), json_scalars, max_size=3),
                         min_size=1, max_size=4))
    row = draw(st.sampled_from(rows))
    value = draw(poison)
    row[draw(st.text(max_size=3))] = draw(st.sampled_from([value, [1, value], {"in": value}]))
    return rows


wrong_types = st.one_of(
    st.sampled_from([None, True, 0, -1, 2**64 - 1, 1.5, "", "x" * 70_000, b"", b"\x00" * 40,
                     [], {}]),
    any_values,
)


def hostile_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for a field annotated ``annotation`` that the server must refuse or survive: of
    its type with hostile contents, or of another type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is float:
        same_type = not_finite | not_finite | st.sampled_from([1e308, -0.0, 2**64 - 1])
    elif annotation is int:
        same_type = st.sampled_from([2**63, 2**64 - 1, -(2**63), -1, 0])
    elif annotation is str:
        same_type = st.sampled_from(["x" * 300_000, "a\nb\x1b[2J\u202e", "\x00"])
    elif annotation is bytes:
        same_type = st.binary(max_size=100) | st.just(b"\x00" * 2_000_000)
    elif annotation is dict:
        same_type = (st.dictionaries(st.text(max_size=3), poison, min_size=1, max_size=3)
                     | st.integers(1_100, 30_000).map(lambda n: {str(i): i for i in range(n)}))
    elif origin is list and args == (dict,):
        same_type = (poisoned_rows() | st.lists(any_scalars, min_size=1, max_size=3)
                     | st.just([{}] * 10_001))
    elif origin is list:
        same_type = st.lists(any_scalars | poison, min_size=1, max_size=3) | st.just(["x"] * 5000)
    else:
        same_type = st.sampled_from([0, 1, None, "true"])
    return st.one_of(same_type, same_type, same_type, same_type, wrong_types, deep)


def valid_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of the right type for a field annotated ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | valid_values(inner)
    simple = {
        bool: st.booleans(),
        int: st.integers(0, 2**31),
        float: st.floats(0, 1e6),
        str: st.text(max_size=16),
        bytes: st.binary(min_size=32, max_size=64),
        dict: st.dictionaries(st.text(max_size=5), json_scalars, max_size=5),
    }
    if annotation in simple:
        return simple[annotation]
    if origin is list and args == (str,):
        return st.lists(st.text(max_size=10), max_size=5)
    if origin is list and args == (dict,):
        return st.lists(st.dictionaries(st.text(max_size=5), json_scalars, max_size=4),
                        max_size=5)
    raise AssertionError(f"no strategy for {annotation!r}")


# Fields whose valid values are narrower than their type.
VALID_BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "version": st.just(protocol.PROTOCOL_VERSION),
    "public_key": st.binary(min_size=32, max_size=32),
    "signature": st.binary(min_size=64, max_size=64),
    "seq": st.integers(1, 3),
    "level": st.sampled_from(protocol.LOG_LEVELS),
    "state": st.sampled_from(protocol.FLOW_STATES),
    "offset": st.integers(0, 10),
    "upload_id": st.integers(0, 3),
    "sha256": st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
}


def _field_values(cls: type[protocol.Message]) -> dict[str, st.SearchStrategy[Any]]:
    hints = typing.get_type_hints(cls)
    return {item.name: VALID_BY_NAME[item.name] if item.name in VALID_BY_NAME
            else valid_values(hints[item.name])
            for item in dataclasses.fields(cls)}  # type: ignore[arg-type]


@st.composite
def message_payloads(draw: st.DrawFn, cls: type[protocol.Message]) -> dict[str, Any]:
    """A map of ``cls``'s type with any of its fields, each valid or hostile."""
    hints = typing.get_type_hints(cls)
    return draw(st.fixed_dictionaries(
        {"type": st.just(cls.TYPE)},
        optional={name: values | hostile_values(hints[name])
                  for name, values in _field_values(cls).items()}))


@st.composite
def one_hostile_field(draw: st.DrawFn, targets: list[tuple[type[protocol.Message], str]],
                      pinned: dict[str, Any]) -> dict[str, Any]:
    """A message that is valid (``pinned`` fields as given) but for one field, picked among
    ``targets``, which holds a hostile value."""
    cls, name = draw(st.sampled_from(targets))
    payload = {"type": cls.TYPE,
               **{field: draw(values) for field, values in _field_values(cls).items()},
               **pinned}
    if name:
        payload[name] = draw(hostile_values(typing.get_type_hints(cls)[name]))
    return payload


def _targets(*classes: type[protocol.Message]) -> list[tuple[type[protocol.Message], str]]:
    """Every (message, field) pair, and each message with no hostile field."""
    return [(cls, name) for cls in classes
            for name in ["", *(item.name for item in dataclasses.fields(cls))]]  # type: ignore


any_payload = st.one_of(
    *(message_payloads(cls) for cls in protocol.MESSAGES.values()),
    st.fixed_dictionaries({"type": any_values}, optional={"seq": any_values}),
)
FLOW_MESSAGES = (protocol.Rows, protocol.Log, protocol.Upload, protocol.Status)


@st.composite
def frames(draw: st.DrawFn, flow_id: str | None = None, secret: str | None = None
           ) -> bytes | str:
    """One frame. Mostly the message that matters at that point with one hostile field: a
    hello carrying the enrolment ``secret`` (before authentication), or a flow message for the
    live flow ``flow_id`` with the next sequence number (after it), so that the hostile value
    gets as far as it can. Else any message, one cut short, or anything at all."""
    kind = draw(st.sampled_from(["aimed"] * 5 + ["message"] * 2
                                + ["truncated", "value", "bytes", "text", "big"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(max_size=50))
    if kind == "big":
        return draw(st.sampled_from([b"\x80" * 100_000, b"\xc0" * (protocol.MAX_FRAME_BYTES + 1)]))
    if kind == "value":
        payload = draw(wrong_types | poison)
    elif kind == "aimed" and flow_id is not None:
        payload = draw(one_hostile_field(_targets(*FLOW_MESSAGES),
                                         {"flow_id": flow_id, "seq": 1}))
    elif kind == "aimed":
        pinned = {"version": protocol.PROTOCOL_VERSION,
                  "enrolment_secret": secret if draw(st.booleans()) else None}
        payload = draw(one_hostile_field(_targets(protocol.Hello), pinned))
    else:
        payload = draw(any_payload)
    frame = msgpack.packb(payload, use_bin_type=True,
                          use_single_float=draw(st.booleans()) and _fits_float32(payload))
    for marker in deep_markers(payload):
        frame = marker.splice(frame)
    if kind == "truncated" and len(frame) > 1:
        frame = frame[: draw(st.integers(1, len(frame) - 1))]
    return frame


def _fits_float32(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True, use_single_float=True)
    except (OverflowError, ValueError, TypeError):
        return False
    return True


async def outcome(connection: ClientConnection) -> protocol.Message | None:
    """The server's answer to the last frame, or None when it closed the connection (with a
    documented code and a reason: asserted)."""
    try:
        answer = await asyncio.wait_for(connection.recv(), ANSWER_TIMEOUT)
    except ConnectionClosed as closed:
        assert_documented_close(closed)
        return None
    return protocol.decode(answer, sender="server")


def assert_documented_close(closed: ConnectionClosed) -> None:
    received = closed.rcvd
    assert received is not None, "the connection dropped without a close frame"
    assert received.code in DOCUMENTED_CLOSE_CODES, (received.code, received.reason)
    assert received.reason
    event(f"closed with {CloseCode(received.code).name}")  # see --hypothesis-show-statistics


@dataclasses.dataclass
class Bystander:
    """An authenticated agent with a collection under way, which must never notice the fuzz:
    after each example it sends a batch of rows and has it acknowledged, and after the last the
    collection completes."""

    connection: ClientConnection
    flow_id: str
    client_id: str
    seq: int = 0

    async def still_fine(self) -> None:
        self.seq += 1
        await self.connection.send(protocol.encode(protocol.Rows(
            flow_id=self.flow_id, seq=self.seq, rows=[{"Batch": self.seq}])))
        assert await receive(self.connection) == protocol.Ack(flow_id=self.flow_id, seq=self.seq)

    async def complete_collection(self, server: Server) -> None:
        rows = self.seq
        self.seq += 1
        await self.connection.send(protocol.encode(protocol.Status(
            flow_id=self.flow_id, seq=self.seq, rows=rows)))
        assert await receive(self.connection) == protocol.Ack(flow_id=self.flow_id, seq=self.seq)
        record = await server.flows.get(self.client_id, self.flow_id)
        assert (record.state, record.rows) == ("finished", rows)


@pytest.fixture
async def bystander(server: Server, tmp_path: Path) -> AsyncIterator[Bystander]:
    """Runs alongside every example of a fuzz test, on the same server; completes its collection
    once they are all done."""
    connection, welcome = await handshake(server, tmp_path / "bystander")
    assert isinstance(welcome, protocol.Welcome)
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM info()")
    assert isinstance(await receive(connection), protocol.FlowRequest)
    bystander = Bystander(connection, flow.flow_id, welcome.client_id)
    yield bystander
    await bystander.complete_collection(server)
    newcomer, answer = await handshake(server, tmp_path / "newcomer")  # the door is still open
    assert isinstance(answer, protocol.Welcome)
    await newcomer.close()
    await connection.close()


# Frames are drawn before the server exists: they name its live flow and its enrolment secret
# by stand-ins of the same length, swapped for the real ones as they are sent.
LIVE_FLOW = "F." + "0" * 13
SECRET = "s" * 43


def with_real(frame: bytes | str, stand_in: str, real: str) -> bytes | str:
    assert len(real) == len(stand_in)
    if isinstance(frame, str):
        return frame
    return frame.replace(msgpack.packb(stand_in), msgpack.packb(real))


def regression(payload: dict[str, Any]) -> bytes:
    """A frame the fuzz once had to find: kept as an explicit example."""
    frame = msgpack.packb(payload, use_bin_type=True)
    for marker in deep_markers(payload):
        frame = marker.splice(frame)
    return frame


@FUZZ_SETTINGS
@given(first=frames(secret=SECRET), second=frames(secret=SECRET))
@example(  # deep facts once made `velotui clients` fail for every operator
    first=regression({"type": "hello", "version": 1, "public_key": b"k" * 32,
                      "enrolment_secret": SECRET, "facts": {"Hostname": Deep(500)}}),
    second=b"",
)
async def test_hostile_frames_before_authentication(
    server: Server, bystander: Bystander, first: bytes | str, second: bytes | str
) -> None:
    secret = server.datastore.enrolment_secret()
    connection = await open_socket(server)
    try:
        await connection.send(with_real(first, SECRET, secret))
        answer = await outcome(connection)
        if isinstance(answer, protocol.Challenge):  # a hello was taken: now anything but auth
            event("hello taken")
            await connection.send(with_real(second, SECRET, secret))
            await outcome(connection)
    finally:
        await connection.close()
    await bystander.still_fine()


@dataclasses.dataclass
class Hostile:
    """One identity for every post-authentication example (a known client reconnecting is not
    held back by the enrolment rate), with a finished flow: rows for it are always answered
    with an ack, so one sent after a hostile frame shows that the server has dealt with it."""

    state: Path
    finished_flow: str

    @property
    def barrier(self) -> bytes:
        return protocol.encode(protocol.Rows(flow_id=self.finished_flow, seq=1, rows=[]))


@pytest.fixture
async def hostile(server: Server, tmp_path: Path) -> Hostile:
    connection, welcome = await handshake(server, tmp_path / "hostile")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    assert isinstance(await receive(connection), protocol.FlowRequest)
    await connection.send(protocol.encode(protocol.Status(flow_id=flow.flow_id, seq=1)))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    await connection.close()
    return Hostile(tmp_path / "hostile", flow.flow_id)


def _is_request_for(message: protocol.Message, flow_id: str) -> bool:
    return isinstance(message, protocol.FlowRequest) and message.flow_id == flow_id


@FUZZ_SETTINGS
@given(sent=st.lists(frames(flow_id=LIVE_FLOW), min_size=1, max_size=3))
@example(sent=[regression({"type": "log", "flow_id": LIVE_FLOW, "seq": 1, "time": math.nan})])
@example(sent=[regression({"type": "rows", "flow_id": LIVE_FLOW, "seq": 1,
                           "rows": [{"a": 1}, {"deep": Deep(500)}]})])
async def test_hostile_frames_after_authentication(
    server: Server, bystander: Bystander, hostile: Hostile, sent: list[bytes | str]
) -> None:
    connection, welcome = await handshake(server, hostile.state)
    assert isinstance(welcome, protocol.Welcome)
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    barrier_ack = protocol.Ack(flow_id=hostile.finished_flow, seq=1)
    try:
        # Flows of earlier examples still open come first, then the new one.
        while not _is_request_for(await receive(connection), flow.flow_id):
            pass
        for frame in sent:
            await connection.send(with_real(frame, LIVE_FLOW, flow.flow_id))
            await connection.send(hostile.barrier)
            while (answer := await outcome(connection)) not in (barrier_ack, None):
                event(f"answered with {answer.TYPE}")
            if answer is None:
                break  # closed, with a documented code
            event("taken")
    except ConnectionClosed as closed:  # closed while we were still sending
        assert_documented_close(closed)
    finally:
        await connection.close()
    await bystander.still_fine()
