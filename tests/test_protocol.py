"""The wire protocol: every message round-trips, and nothing else gets through."""

from __future__ import annotations

import json
import math
import tracemalloc

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from velotui.vql.values import to_json_value
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode, ProtocolError

EXAMPLES = [
    protocol.Hello(version=1, public_key=b"k" * 32, enrolment_secret="s", facts={"OS": "linux"},
                   labels=["A"], last_hunt_timestamp=5, running_flows=["F.1"]),
    protocol.Auth(signature=b"s" * 64),
    protocol.CheckIn(last_hunt_timestamp=7),
    protocol.Rows(flow_id="F.1", seq=1, rows=[{"a": 1, "b": [1, "x", None]}]),
    protocol.Log(flow_id="F.1", seq=2, level="warning", message="careful", time=1.5),
    protocol.Upload(flow_id="F.1", seq=3, upload_id=0, name="a.txt", offset=0, data=b"xyz",
                    eof=True, sha256="0" * 64),
    protocol.Status(flow_id="F.1", seq=4, state="error", error="boom", rows=1, bytes=3,
                    duration=0.5),
    protocol.Challenge(nonce=b"n" * 32),
    protocol.Welcome(client_id="C.0123456789abcdef", enrolled=True, server_time=1.0),
    protocol.FlowRequest(flow_id="F.1", query="SELECT 1 FROM scope()", timeout=5, max_rows=10,
                         max_upload_bytes=20, env={"x": 1}),
    protocol.Cancel(flow_id="F.1", reason="stop"),
    protocol.Ack(flow_id="F.1", seq=4),
    protocol.CheckNow(),
    protocol.HuntCheckpoint(last_hunt_timestamp=99),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.TYPE)
def test_every_message_round_trips_from_its_sender(message: protocol.Message) -> None:
    assert protocol.decode(protocol.encode(message), sender=message.FROM) == message
    other = "server" if message.FROM == "agent" else "agent"
    with pytest.raises(ProtocolError, match="may not be sent"):
        protocol.decode(protocol.encode(message), sender=other)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"type": "rows", "flow_id": "F.1", "seq": True}, "expected an integer"),
        ({"type": "rows", "flow_id": "F.1", "seq": 1, "rows": [{"a": 1}, 5]}, "expected a map"),
        ({"type": "rows", "flow_id": "F" * 200, "seq": 1}, "longer than 128"),
        ({"type": "status", "flow_id": "F.1", "seq": 1, "state": "exploded"}, "unknown state"),
        ({"type": "log", "flow_id": "F.1", "seq": 1, "level": "shout"}, "unknown level"),
        ({"type": "upload", "flow_id": "F.1", "seq": 1, "offset": -1}, "negative"),
        ({"type": "hello", "version": 1, "public_key": b"k" * 31}, "32 bytes"),
        ({"type": "hello", "version": 1, "public_key": b"k" * 32, "labels": "A"},
         "expected a list"),
        ({"type": "rows", "flow_id": "F.1", "seq": 2 ** 63}, "out of range"),
        ({"type": "auth"}, "missing field signature"),
    ],
)
def test_wrong_fields_are_refused(payload: dict, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem) as refused:
        protocol.decode(msgpack.packb(payload, use_bin_type=True), sender="agent")
    assert refused.value.code == CloseCode.PROTOCOL_ERROR


def test_a_frame_over_the_limit_is_refused_as_too_big() -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode(b"\x00" * (protocol.MAX_FRAME_BYTES + 1), sender="agent")
    assert refused.value.code == CloseCode.MESSAGE_TOO_BIG


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_never_crash(frame: bytes) -> None:
    try:
        message = protocol.decode(frame, sender="agent")
    except ProtocolError as error:
        assert error.reason
    else:  # astronomically unlikely, but if it decodes it must be a well-formed message
        assert message.FROM == "agent"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children,
                                                                      max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "flow_id", "seq", "rows", "level", "state",
                                        "data", "public_key", "version"]),
                       json_values | st.binary(max_size=40), max_size=6))
def test_random_maps_are_refused_or_valid(payload: dict) -> None:
    frame = msgpack.packb(payload, use_bin_type=True)
    try:
        protocol.decode(frame, sender="agent")
    except ProtocolError as error:
        assert error.reason


# Limits at the edge: numbers, nested values, depth and the value budget ----------------------


def nested(depth: int, leaf: object = 1, kind: str = "map") -> object:
    """A value of ``depth`` maps (or lists) inside one another around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if kind == "map" else [value]
    return value


def rows_frame(rows: list, single_float: bool = False) -> bytes:
    return msgpack.packb({"type": "rows", "flow_id": "F.1", "seq": 1, "rows": rows},
                         use_bin_type=True, use_single_float=single_float)


def hello_frame(facts: object) -> bytes:
    return msgpack.packb({"type": "hello", "version": 1, "public_key": b"k" * 32,
                          "facts": facts}, use_bin_type=True)


NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("number", NOT_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("payload", "sender"),
    [
        ({"type": "log", "flow_id": "F.1", "seq": 1, "time": None}, "agent"),
        ({"type": "status", "flow_id": "F.1", "seq": 1, "duration": None}, "agent"),
        ({"type": "welcome", "client_id": "C.1", "server_time": None}, "server"),
        ({"type": "flow", "flow_id": "F.1", "timeout": None}, "server"),
    ],
    ids=["log.time", "status.duration", "welcome.server_time", "flow.timeout"],
)
def test_number_fields_must_be_finite(payload: dict, sender: str, number: float) -> None:
    field_name = next(name for name, value in payload.items() if value is None)
    payload = {**payload, field_name: number}
    with pytest.raises(ProtocolError, match=f"field {field_name}: numbers must be finite"):
        protocol.decode(msgpack.packb(payload, use_bin_type=True), sender=sender)


@pytest.mark.parametrize("single_float", [False, True], ids=["float64", "float32"])
@pytest.mark.parametrize("number", NOT_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "place",
    [
        lambda n: rows_frame([{"a": 1}, {"x": n}]),
        lambda n: rows_frame([{"a": [1, 2, {"deep": [n]}]}]),
        lambda n: msgpack.packb({"type": "status", "flow_id": "F.1", "seq": 1,
                                 "final_rows": [{"x": n}]}),
        lambda n: hello_frame({"Load": n}),
    ],
    ids=["row", "nested in a row", "final_rows", "facts"],
)
def test_nested_numbers_must_be_finite(place, number: float, single_float: bool) -> None:
    frame = place(number)
    if single_float:  # the same value as a float32 (0xca), which agents never send but may
        frame = msgpack.packb(msgpack.unpackb(frame), use_bin_type=True, use_single_float=True)
    with pytest.raises(ProtocolError, match="numbers must be finite"):
        protocol.decode(frame, sender="agent")


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (rows_frame([{"a": b"bytes"}]), "a byte string is not a JSON value"),
        (rows_frame([{"a": b""}]), "a byte string is not a JSON value"),
        (rows_frame([{"a": [1, [b""]]}]), "a byte string is not a JSON value"),
        (rows_frame([{b"key": 1}]), "map keys must be text"),
        (rows_frame([{"a": {b"": 1}}]), "map keys must be text"),
        (hello_frame({"Hostname": b"\x00host"}), "a byte string is not a JSON value"),
        (rows_frame([{"a": msgpack.ExtType(5, b"x")}]), "not a msgpack frame"),
        (rows_frame([{"a": msgpack.ExtType(5, b"")}]), "extension types"),
        (rows_frame([{"a": msgpack.Timestamp(1, 0)}]), "not a msgpack frame"),
    ],
    ids=["bytes", "empty bytes", "nested bytes", "bytes key", "nested bytes key", "facts",
         "extension", "empty extension", "timestamp"],
)
def test_nested_values_are_json_values(frame: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem) as refused:
        protocol.decode(frame, sender="agent")
    assert refused.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("kind", ["map", "list"])
@pytest.mark.parametrize(
    ("make_frame", "first_level"),
    [
        (lambda value: rows_frame([{"a": 1}, value, {"b": 2}]), 0),
        (lambda value: rows_frame([value] * 40), 0),  # rows of one shape: the fast check
        (lambda value: hello_frame(value), 0),
    ],
    ids=["one row", "rows of one shape", "facts"],
)
def test_values_nest_at_most_max_depth(make_frame, first_level: int, kind: str) -> None:
    def value(depth: int) -> dict:
        # A row (or the facts) is a map: it is the first level.
        return {"v": nested(depth - 1, kind=kind)}

    limit = protocol.MAX_VALUE_DEPTH
    protocol.decode(make_frame(value(limit)), sender="agent")
    for too_deep in (limit + 1, 500):
        with pytest.raises(ProtocolError, match=f"nested more than {limit} deep"):
            protocol.decode(make_frame(value(too_deep)), sender="agent")


def test_many_shallow_containers_in_a_row_are_not_too_deep() -> None:
    # 40 small maps in one row: more nested containers than MAX_VALUE_DEPTH, none of them deep.
    row = {"items": [{"n": n} for n in range(40)]}
    message = protocol.decode(rows_frame([row, {"a": 1}, row]), sender="agent")
    assert message.rows[0] == row


def test_a_frame_over_the_value_budget_is_refused() -> None:
    # The message map (1 + 4 entries) and the rows list (1) count 6 besides the rows.
    budget = protocol.MAX_ITEMS_PER_FRAME - 6

    def rows_counting(total: int) -> list[dict]:
        row = {"k": [0] * 996}  # counts 1000: the row, its value, and 996 numbers
        assert protocol.json_value_items(row) == 1000
        rows = [row] * (total // 1000)
        rest = total % 1000
        if rest:
            rows.append({"k": [0] * (rest - 4)})
        return rows

    protocol.decode(rows_frame(rows_counting(budget)), sender="agent")
    with pytest.raises(ProtocolError, match="values in one frame"):
        protocol.decode(rows_frame(rows_counting(budget + 1)), sender="agent")


def test_a_frame_of_tiny_maps_is_refused_before_it_fills_memory() -> None:
    # Before the budget, 4 MiB of empty maps decoded into ~280 MB of dicts.
    junk = [[{}] * 200_000] * 20
    frame = msgpack.packb({"type": "rows", "flow_id": "F.1", "seq": 1, "junk": junk})
    assert len(frame) <= protocol.MAX_FRAME_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="values in one frame"):
            protocol.decode(frame, sender="agent")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024


hostile_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=5) | st.binary(max_size=3)
    | st.sampled_from([math.nan, math.inf, -math.inf, b"", 0.5, 1e300])
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.binary(max_size=2), children, max_size=4),
    max_leaves=25,
)
hostile_rows = st.one_of(
    st.lists(st.dictionaries(st.text(max_size=3), hostile_values, max_size=4), max_size=6),
    # Rows nested to one depth, or each to its own: the paths that check depth by position.
    st.builds(lambda depth, count, leaf: [{"v": nested(depth, leaf)} for _ in range(count)],
              st.integers(0, 40), st.integers(1, 8), hostile_scalars),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["map", "list"])), max_size=8).map(
        lambda shapes: [{"v": nested(depth, kind=kind)} for depth, kind in shapes]),
)


def exact_verdict(rows: list) -> bool:
    try:
        for row in rows:
            protocol.json_value_items(row)
    except ProtocolError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(hostile_rows, st.booleans())
def test_decode_accepts_exactly_the_rows_json_can_carry(rows: list, single_float: bool) -> None:
    """The quick checks (byte scans, positions) agree with a full walk of every value."""
    try:
        frame = rows_frame(rows, single_float=single_float)
    except OverflowError:  # a number too large for a float32
        assume(False)
    sent = msgpack.unpackb(frame, raw=False, strict_map_key=False)["rows"]
    try:
        message = protocol.decode(frame, sender="agent")
    except ProtocolError as error:
        assert not exact_verdict(sent), error.reason
    else:
        assert exact_verdict(sent)
        json.dumps(message.rows, allow_nan=False)  # what is accepted prints as JSON
        json.dumps(to_json_value(message.rows), allow_nan=False)
