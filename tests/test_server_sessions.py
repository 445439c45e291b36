"""The server's side of agent connections: who gets in, and what closes a connection."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from pathlib import Path

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent.identity import AgentIdentity
from tests.fleet import until
from tests.protocol_client import handshake, open_socket, receive
from velotui.server.remote import RemoteService
from velotui.server.server import Server
from velotui.server.sessions import MAX_RETRY_SECONDS, AgentGate
from velotui.server.token_bucket import TokenBucket
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode

pytestmark = pytest.mark.both_backends


async def closed_with(connection, timeout: float = 10) -> tuple[int, str]:
    """Wait for the server to close ``connection``; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(connection.recv(), timeout)
        await asyncio.wait_for(connection.recv(), timeout)
    received = closed.value.rcvd
    assert received is not None, "the connection dropped without a close frame"
    return received.code, received.reason


async def test_a_new_agent_enrols_with_the_secret_and_is_welcomed(server: Server,
                                                                  tmp_path: Path) -> None:
    connection, answer = await handshake(server, tmp_path / "a")
    assert isinstance(answer, protocol.Welcome)
    assert answer.enrolled is True
    identity = AgentIdentity.load_or_create(tmp_path / "a")
    assert answer.client_id == identity.client_id
    record = server.directory.get(identity.client_id)
    assert record is not None and record.hostname == "test-host"
    assert server.directory.is_online(identity.client_id)
    await connection.close()

    again, answer = await handshake(server, tmp_path / "a", secret="")
    assert isinstance(answer, protocol.Welcome) and answer.enrolled is False
    await again.close()


async def test_a_wrong_enrolment_secret_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(server, tmp_path / "a", secret="guess")
    assert closed.value.rcvd.code == CloseCode.AUTH_FAILED
    assert "enrolment" in closed.value.rcvd.reason
    assert server.directory.all() == []


async def test_a_wrong_key_for_an_existing_id_is_refused(server: Server, tmp_path: Path) -> None:
    victim = AgentIdentity.load_or_create(tmp_path / "victim")
    connection, _ = await handshake(server, tmp_path / "victim", identity=victim)
    await connection.close()
    attacker = AgentIdentity.load_or_create(tmp_path / "attacker")
    # The attacker presents the victim's public key but can only sign with its own.
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(server, tmp_path / "x", identity=victim, sign_with=attacker)
    assert closed.value.rcvd.code == CloseCode.AUTH_FAILED
    assert "signature" in closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\xc1\xc1\xc1", CloseCode.PROTOCOL_ERROR, "not a msgpack frame"),
        ("hello", CloseCode.PROTOCOL_ERROR, "text frames"),
        (msgpack.packb({"type": "hello", "version": "1", "public_key": b"k" * 32}),
         CloseCode.PROTOCOL_ERROR, "field version: expected an integer"),
        (msgpack.packb({"type": "launch_missiles"}), CloseCode.PROTOCOL_ERROR,
         "unknown message type"),
        (msgpack.packb({"type": "ack", "flow_id": "F.1", "seq": 1}), CloseCode.PROTOCOL_ERROR,
         "may not be sent by the agent"),
        (msgpack.packb([1, 2, 3]), CloseCode.PROTOCOL_ERROR, "must be a map"),
    ],
)
async def test_malformed_frames_close_the_connection_with_a_reason(
    server: Server, frame: bytes | str, code: int, reason: str
) -> None:
    connection = await open_socket(server)
    await connection.send(frame)
    received_code, received_reason = await closed_with(connection)
    assert received_code == code
    assert reason in received_reason


async def test_an_oversized_frame_is_refused(server: Server) -> None:
    connection = await open_socket(server)
    await connection.send(b"\x00" * (protocol.MAX_FRAME_BYTES + 1))
    code, _reason = await closed_with(connection)
    assert code == CloseCode.MESSAGE_TOO_BIG


async def test_results_for_a_flow_never_scheduled_are_refused(server: Server,
                                                              tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    assert isinstance(welcome, protocol.Welcome)
    await connection.send(protocol.encode(protocol.Rows(flow_id="F.NOTSCHEDULED", seq=1,
                                                        rows=[{"planted": True}])))
    code, reason = await closed_with(connection)
    assert code == CloseCode.FLOW_NOT_SCHEDULED
    assert "not scheduled" in reason
    stored = await server.db.store.fetch_one("SELECT COUNT(*) AS n FROM flow_rows")
    assert stored["n"] == 0


async def test_an_upload_for_a_flow_id_no_path_could_hold_is_refused_as_unscheduled(
    server: Server, tmp_path: Path
) -> None:
    connection, _welcome = await handshake(server, tmp_path / "a")
    await connection.send(protocol.encode(protocol.Upload(
        flow_id="a\nb\x1b[2J\u202e", seq=1, data=b"\0" * 32)))
    code, reason = await closed_with(connection)
    assert code == protocol.CloseCode.FLOW_NOT_SCHEDULED and "not scheduled" in reason


async def test_data_for_another_clients_flow_is_refused(server: Server, tmp_path: Path) -> None:
    owner, welcome = await handshake(server, tmp_path / "owner")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM info()")
    request = await receive(owner)
    assert isinstance(request, protocol.FlowRequest) and request.flow_id == flow.flow_id

    intruder, _ = await handshake(server, tmp_path / "intruder")
    await intruder.send(protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=1,
                                                      rows=[{"forged": 1}])))
    code, _reason = await closed_with(intruder)
    assert code == CloseCode.FLOW_NOT_SCHEDULED
    assert (await server.flows.get(welcome.client_id, flow.flow_id)).rows == 0
    await owner.close()


async def test_each_sequence_number_is_applied_once_and_acknowledged(server: Server,
                                                                     tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    await receive(connection)  # the FlowRequest
    batch = protocol.Rows(flow_id=flow.flow_id, seq=1, rows=[{"n": 1}, {"n": 2}])
    for _ in range(3):  # a resend after a lost ack must not store the rows again
        await connection.send(protocol.encode(batch))
        ack = await receive(connection)
        assert ack == protocol.Ack(flow_id=flow.flow_id, seq=1)
    await connection.send(protocol.encode(protocol.Status(flow_id=flow.flow_id, seq=2, rows=2)))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=2)
    record = await server.flows.get(welcome.client_id, flow.flow_id)
    assert (record.state, record.rows) == ("finished", 2)
    rows = [r async for _s, batch_rows in server.flows.row_batches(welcome.client_id,
                                                                  flow.flow_id) for r in batch_rows]
    assert rows == [{"n": 1}, {"n": 2}]

    await connection.send(protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=5, rows=[])))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=5)  # ended: dropped
    await connection.close()


async def test_a_sequence_gap_closes_the_connection(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    await receive(connection)
    await connection.send(protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=3, rows=[])))
    code, reason = await closed_with(connection)
    assert code == CloseCode.PROTOCOL_ERROR and "sequence 3" in reason


async def test_the_server_enforces_max_rows_itself(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x", max_rows=3)
    await receive(connection)
    await connection.send(protocol.encode(protocol.Rows(
        flow_id=flow.flow_id, seq=1, rows=[{"n": i} for i in range(5)])))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    cancel = await receive(connection)
    assert isinstance(cancel, protocol.Cancel) and "row limit of 3" in cancel.reason
    record = await server.flows.get(welcome.client_id, flow.flow_id)
    assert (record.state, record.rows, record.error) == ("error", 3, "row limit of 3 reached")
    await connection.close()


async def test_the_server_enforces_the_upload_limit_itself(server: Server,
                                                           tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x",
                                       max_upload_bytes=10)
    await receive(connection)
    await connection.send(protocol.encode(protocol.Upload(
        flow_id=flow.flow_id, seq=1, upload_id=0, name="../../etc/passwd", offset=0,
        data=b"0123456789ABCDEF", eof=True)))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    assert isinstance(await receive(connection), protocol.Cancel)
    record = await server.flows.get(welcome.client_id, flow.flow_id)
    assert record.state == "error" and "upload limit of 10 bytes" in record.error
    assert not (server.datastore.uploads_location() / welcome.client_id).exists()
    await connection.close()


async def test_uploads_land_under_server_chosen_paths(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    await receive(connection)
    chunks = [b"first part-", b"second part"]
    offset = 0
    for seq, chunk in enumerate(chunks, 1):
        await connection.send(protocol.encode(protocol.Upload(
            flow_id=flow.flow_id, seq=seq, upload_id=0, name="../../../tmp/evil", offset=offset,
            data=chunk, eof=seq == len(chunks))))
        assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=seq)
        offset += len(chunk)
    uploads = await server.flows.uploads(welcome.client_id, flow.flow_id)
    assert len(uploads) == 1
    stored = server.datastore.uploads_location() / uploads[0]["path"]
    assert stored.read_bytes() == b"".join(chunks)
    assert stored.resolve().is_relative_to(server.datastore.uploads_location().resolve())
    assert uploads[0]["name"] == "../../../tmp/evil"  # metadata only
    import hashlib

    assert uploads[0]["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    await connection.close()


async def test_a_second_connection_replaces_the_first(server: Server, tmp_path: Path) -> None:
    first, _ = await handshake(server, tmp_path / "a")
    second, welcome = await handshake(server, tmp_path / "a")
    code, _reason = await closed_with(first)
    assert code == CloseCode.REPLACED
    assert server.directory.sessions[welcome.client_id] is not None
    await second.close()


async def test_flows_for_an_offline_client_are_delivered_when_it_connects(
    server: Server, tmp_path: Path
) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    await connection.close()
    await until(lambda: not server.directory.is_online(welcome.client_id), 10,
                "the server to see the agent leave")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM info()")
    assert (await server.flows.get(welcome.client_id, flow.flow_id)).state == "queued"
    connection, _ = await handshake(server, tmp_path / "a")
    request = await receive(connection)
    assert isinstance(request, protocol.FlowRequest) and request.flow_id == flow.flow_id
    assert (await server.flows.get(welcome.client_id, flow.flow_id)).state == "running"
    await connection.close()


async def test_a_flow_whose_agent_stays_away_times_out(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    await connection.close()
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM info()", timeout=5)
    expired = await server.flows.expire_due(now=flow.deadline + 1)
    assert [r.flow_id for r in expired] == [flow.flow_id]
    record = await server.flows.get(welcome.client_id, flow.flow_id)
    assert record.state == "timeout" and "no result within 5 s" in record.error


async def test_one_bad_agent_does_not_disturb_another(server: Server, tmp_path: Path) -> None:
    good, welcome = await handshake(server, tmp_path / "good")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    await receive(good)
    bad = await open_socket(server)
    await bad.send(b"\xff" * 100)
    await closed_with(bad)
    await good.send(protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=1, rows=[{"a": 1}])))
    assert await receive(good) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    await good.close()


async def test_the_last_rows_may_ride_in_the_status(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x", max_rows=3)
    await receive(connection)
    await connection.send(protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=1,
                                                        rows=[{"n": 1}])))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    await connection.send(protocol.encode(protocol.Status(
        flow_id=flow.flow_id, seq=2, rows=4, final_rows=[{"n": 2}, {"n": 3}, {"n": 4}])))
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=2)
    record = await server.flows.get(welcome.client_id, flow.flow_id)
    # The row limit still holds for rows that come with the status.
    assert (record.state, record.rows, record.error) == ("error", 3, "row limit of 3 reached")
    rows = [r async for _s, batch in server.flows.row_batches(welcome.client_id, flow.flow_id)
            for r in batch]
    assert rows == [{"n": 1}, {"n": 2}, {"n": 3}]
    await connection.close()


# Limits at the edge -----------------------------------------------------------------------------


async def test_a_large_frame_is_refused_before_authentication_and_accepted_after(
    server: Server, tmp_path: Path
) -> None:
    one_mib = "x" * (1024 * 1024)
    identity = AgentIdentity.load_or_create(tmp_path / "a")
    stranger = await open_socket(server)
    await stranger.send(protocol.encode(protocol.Hello(
        version=protocol.PROTOCOL_VERSION, public_key=identity.public_key_bytes,
        enrolment_secret=server.datastore.enrolment_secret(), facts={"Hostname": one_mib})))
    code, _reason = await closed_with(stranger)
    assert code == CloseCode.MESSAGE_TOO_BIG
    assert server.directory.all() == []

    connection, welcome = await handshake(server, tmp_path / "a")
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    await receive(connection)  # the FlowRequest
    batch = protocol.encode(protocol.Rows(flow_id=flow.flow_id, seq=1, rows=[{"Pad": one_mib}]))
    assert len(batch) > 1024 * 1024
    await connection.send(batch)
    assert await receive(connection) == protocol.Ack(flow_id=flow.flow_id, seq=1)
    await connection.close()


async def test_operators_may_send_large_frames(server: Server, tmp_path: Path) -> None:
    connection, welcome = await handshake(server, tmp_path / "a")
    query = f"SELECT '{'x' * 100_000}' AS Pad FROM scope()"
    async with await RemoteService.connect(server.url, server.datastore.api_token(),
                                           server.datastore.ca_pem()) as api:
        flow = await api.schedule_collection(client_id=welcome.client_id, query=query)
    request = await receive(connection)
    assert isinstance(request, protocol.FlowRequest) and request.flow_id == flow["flow_id"]
    assert request.query == query
    await connection.close()


async def say_hello(server: Server, state_dir: Path) -> ClientConnection:
    """A connection that said hello and got its challenge: the server is serving it, and it has
    not proven its key yet."""
    identity = AgentIdentity.load_or_create(state_dir)
    connection = await open_socket(server)
    await connection.send(protocol.encode(protocol.Hello(
        version=protocol.PROTOCOL_VERSION, public_key=identity.public_key_bytes,
        enrolment_secret=server.datastore.enrolment_secret())))
    assert isinstance(await receive(connection), protocol.Challenge)
    return connection


async def test_connections_authenticating_are_capped_the_next_wait_and_the_rest_are_refused(
    server: Server, tmp_path: Path
) -> None:
    settled, _ = await handshake(server, tmp_path / "settled")
    server.agent_gate.max_unauthenticated = 2
    server.agent_gate.max_waiting = 1
    authenticating = [await say_hello(server, tmp_path / f"in{n}") for n in range(2)]

    # The next one is let in but waits its turn: its hello is not read yet.
    waiting = await open_socket(server)
    identity = AgentIdentity.load_or_create(tmp_path / "waiting")
    await waiting.send(protocol.encode(protocol.Hello(
        version=protocol.PROTOCOL_VERSION, public_key=identity.public_key_bytes,
        enrolment_secret=server.datastore.enrolment_secret())))
    await until(lambda: server.agent_gate.waiting == 1, 10, "the connection to wait")

    late = await open_socket(server)  # and past those waiting, one is told to come back later
    code, reason = await closed_with(late)
    assert code == CloseCode.TRY_AGAIN_LATER and protocol.retry_hint(reason) is not None
    # The next one refused is told a later time: the server's handshakes go at the gate's rate
    # (here one a second), and those refused come back one after the other, not all at once.
    server.agent_gate.rate = 1.0
    first = protocol.retry_hint((await closed_with(await open_socket(server)))[1])
    second = protocol.retry_hint((await closed_with(await open_socket(server)))[1])
    assert first is not None and second is not None and second > first

    await authenticating[0].close()  # one gives up: the one waiting takes its place
    assert isinstance(await asyncio.wait_for(receive(waiting), 10), protocol.Challenge)
    assert server.agent_gate.waiting == 0
    await authenticating[1].close()
    latest, welcome = await handshake(server, tmp_path / "latest")
    assert isinstance(welcome, protocol.Welcome)  # and once proven, it no longer counts
    await settled.ping()  # the agent that was in all along never noticed
    for connection in (waiting, latest, settled):
        await connection.close()


async def test_enrolment_is_rate_limited_but_known_clients_are_not(server: Server,
                                                                  tmp_path: Path) -> None:
    now = [1000.0]
    server.agent_gate.enrolments = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
    for name in ("a", "b"):
        connection, welcome = await handshake(server, tmp_path / name)
        assert welcome.enrolled
        await connection.close()

    with pytest.raises(ConnectionClosed) as refused:
        await handshake(server, tmp_path / "c")
    assert refused.value.rcvd.code == CloseCode.TRY_AGAIN_LATER
    assert protocol.retry_hint(refused.value.rcvd.reason) is not None
    assert len(server.directory.all()) == 2

    for _ in range(5):  # known clients reconnect however often they like
        connection, welcome = await handshake(server, tmp_path / "a")
        assert isinstance(welcome, protocol.Welcome) and not welcome.enrolled
        await connection.close()

    now[0] += 1.0  # a second later there is room for one more
    connection, welcome = await handshake(server, tmp_path / "c")
    assert welcome.enrolled
    await connection.close()


async def flow_for(server: Server, state_dir: Path) -> tuple[ClientConnection, str]:
    """An authenticated agent with one flow scheduled on it: (connection, flow ID)."""
    connection, welcome = await handshake(server, state_dir)
    flow = await server.flows.schedule(welcome.client_id, "SELECT * FROM x")
    request = await receive(connection)
    assert isinstance(request, protocol.FlowRequest)
    return connection, flow.flow_id


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (lambda flow_id: protocol.Log(flow_id=flow_id, seq=1, message="x", time=math.nan),
         "field time: numbers must be finite"),
        (lambda flow_id: protocol.Status(flow_id=flow_id, seq=1, duration=math.inf),
         "field duration: numbers must be finite"),
        (lambda flow_id: protocol.Rows(flow_id=flow_id, seq=1, rows=[{"x": -math.inf}]),
         "field rows: numbers must be finite"),
        (lambda flow_id: protocol.Rows(flow_id=flow_id, seq=1,
                                       rows=[{"deep": nested_lists(500)}]),
         "field rows: nested more than 32 deep"),
    ],
    ids=["nan log time", "infinite duration", "infinite number in a row", "deep row"],
)
async def test_hostile_values_close_only_that_connection(
    server: Server, tmp_path: Path, message, problem: str
) -> None:
    bystander, bystander_flow = await flow_for(server, tmp_path / "bystander")
    hostile, hostile_flow = await flow_for(server, tmp_path / "hostile")
    await hostile.send(protocol.encode(message(hostile_flow)))
    code, reason = await closed_with(hostile)
    assert (code, reason) == (CloseCode.PROTOCOL_ERROR, problem)

    # Nothing of it was stored: the flow's results can still be read.
    hostile_id = AgentIdentity.load_or_create(tmp_path / "hostile").client_id
    assert [batch async for _seq, batch in server.flows.row_batches(hostile_id, hostile_flow)] == []
    await bystander.send(protocol.encode(protocol.Rows(flow_id=bystander_flow, seq=1,
                                                       rows=[{"n": 1}])))
    assert await receive(bystander) == protocol.Ack(flow_id=bystander_flow, seq=1)
    await bystander.close()


def nested_lists(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


async def test_a_failure_handling_a_message_closes_that_connection_with_internal(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bystander, bystander_flow = await flow_for(server, tmp_path / "bystander")
    unlucky, unlucky_flow = await flow_for(server, tmp_path / "unlucky")
    unlucky_id = AgentIdentity.load_or_create(tmp_path / "unlucky").client_id
    # A file where the client's upload folder goes: storing the chunk fails (as a full or
    # broken disk would), with an error that is not the agent's fault.
    (server.datastore.uploads_location() / unlucky_id).write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="velotui.server.sessions"):
        await unlucky.send(protocol.encode(protocol.Upload(
            flow_id=unlucky_flow, seq=1, name="a.txt", data=b"data", eof=True)))
        code, reason = await closed_with(unlucky)
    assert (code, reason) == (CloseCode.INTERNAL, "the server could not handle a message")
    failures = [r for r in caplog.records if "while handling a message" in r.getMessage()]
    assert len(failures) == 1
    assert "NotADirectoryError" in failures[0].getMessage() and failures[0].exc_info is None

    await bystander.send(protocol.encode(protocol.Rows(flow_id=bystander_flow, seq=1,
                                                       rows=[{"n": 1}])))
    assert await receive(bystander) == protocol.Ack(flow_id=bystander_flow, seq=1)
    await bystander.close()


def test_a_fleet_refused_at_once_is_told_to_come_back_at_the_pace_of_the_handshakes() -> None:
    gate = AgentGate()
    gate.rate = 100.0
    now = 1000.0
    hints = [gate.retry_in(now) for _ in range(6000)]
    assert hints[0] == pytest.approx(0.5)  # nobody inside: soon
    # One after the other, a hundredth of a second apart, up to the longest wait promised...
    spread = hints[: int((MAX_RETRY_SECONDS - 0.5) * gate.rate)]
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(spread))
    assert max(hints) == pytest.approx(MAX_RETRY_SECONDS)
    # ... and once the storm has passed, the next one refused is told to come back soon again.
    assert gate.retry_in(now + 600) == pytest.approx(0.5)
