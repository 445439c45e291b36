"""The wire protocol: every message round-trips, and nothing else gets through."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
