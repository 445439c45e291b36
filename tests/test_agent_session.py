"""The agent's session without a server: what it does with each server message, how it backs
off, how it reports a server it cannot reach or must not trust; and the velotui-agent command."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.reconnect import ConnectionOutcome, backoff_delay, reconnect_delay
from agent.session import AgentSession
from agent.state import AgentState
from velotui.server.tls import (
    create_certificate_authority,
    create_server_certificate,
    server_ssl_context,
)
from velotui.wire.protocol import (
    Ack,
    Cancel,
    Challenge,
    CheckNow,
    CloseCode,
    FlowRequest,
    HuntCheckpoint,
    ProtocolError,
    decode,
    retry_hint,
    try_again_reason,
)

GUARD = 30  # seconds before a hanging test fails; never a measure of speed
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return create_certificate_authority()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_config(ca_pem: bytes, port: int, **fields: object) -> AgentConfig:
    return AgentConfig(
        server_url=f"wss://127.0.0.1:{port}/agent",
        ca_pem=ca_pem,
        enrolment_secret="secret",
        labels=["Test"],
        **fields,
    )


def make_session(tmp_path: Path, ca: tuple[bytes, bytes], **options: object) -> AgentSession:
    config = make_config(ca[0], unused_port())
    return AgentSession(config, AgentState.open(tmp_path / "state"), **options)


async def wait_until(condition, what: str) -> None:
    for _ in range(GUARD * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


# Backoff -------------------------------------------------------------------------------------


def test_the_backoff_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(60.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, cap=60.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 100  # jittered, not one fixed value
    late = [backoff_delay(30, cap=60.0, rng=rng) for _ in range(1000)]
    assert max(late) > 45  # full jitter spans the whole range up to the cap
    assert min(late) < 15


def test_the_backoff_is_bounded_for_any_attempt_and_reproducible_with_a_seed() -> None:
    assert 0.0 <= backoff_delay(10**6, cap=5.0) <= 5.0
    assert 0.0 <= backoff_delay(-3, cap=5.0) <= 0.5
    assert backoff_delay(4, rng=random.Random(1)) == backoff_delay(4, rng=random.Random(1))


# Server messages -----------------------------------------------------------------------------


async def test_a_flow_request_runs_once_and_acks_forget_it(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    session = make_session(tmp_path, ca)
    request = FlowRequest(flow_id="F.1", query="SELECT _value FROM range(end=3)")
    await session.handle_message(request)
    await session.handle_message(request)  # repeated, as after a reconnect: not run twice
    assert session.open_flow_ids() == ["F.1"]

    await wait_until(lambda: session.outbox.last_seq("F.1") == 1, "the flow's status")
    messages = [decode(frame, "agent") for frame in await session.outbox.unacked_frames()]
    assert [m.TYPE for m in messages] == ["status"]  # three rows ride in the status
    assert [row["_value"] for row in messages[0].final_rows] == [0, 1, 2]
    await session.handle_message(request)  # finished but unacknowledged: still not run again
    assert session.outbox.last_seq("F.1") == 1

    await session.handle_message(Ack(flow_id="F.1", seq=1))
    assert session.open_flow_ids() == []
    assert len(session.outbox) == 0


async def test_a_cancel_stops_the_running_flow(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    session = make_session(tmp_path, ca)
    started = asyncio.Event()

    async def forever(scope: object) -> object:
        started.set()
        await asyncio.Event().wait()
        yield {}

    session.registry.plugin(forever)
    await session.handle_message(FlowRequest(flow_id="F.2", query="SELECT * FROM forever()"))
    await asyncio.wait_for(started.wait(), GUARD)
    await session.handle_message(Cancel(flow_id="F.2", reason="stop"))

    await wait_until(lambda: session.outbox.last_seq("F.2") == 1, "the flow's status")
    (status,) = [decode(frame, "agent") for frame in await session.outbox.unacked_frames()]
    assert (status.TYPE, status.state, status.error) == ("status", "cancelled", "stop")
    await session.handle_message(Cancel(flow_id="F.unknown", reason="x"))  # harmless


async def test_a_restarted_agent_reports_and_continues_the_flows_it_had_not_finished(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    reached = asyncio.Event()
    release = asyncio.Event()

    async def steps(scope: object) -> object:
        yield {"step": 1}
        reached.set()
        await release.wait()
        yield {"step": 2}

    session = make_session(tmp_path, ca)  # its server is not there: it keeps trying
    session.registry.plugin(steps)
    running = asyncio.create_task(session.run_forever())
    await session.handle_message(FlowRequest(flow_id="F.3", query="SELECT * FROM steps()"))
    await asyncio.wait_for(reached.wait(), GUARD)
    running.cancel()  # the agent stops mid-flow
    with pytest.raises(asyncio.CancelledError):
        await running

    release.set()
    restarted = make_session(tmp_path, ca)  # the same state folder
    restarted.registry.plugin(steps)
    assert restarted.open_flow_ids() == ["F.3"]  # what its Hello.running_flows will say
    assert await restarted.resume_flows() == 1
    await wait_until(lambda: restarted.open_flow_ids() == ["F.3"] and not restarted._flows,
                     "the flow's end")
    messages = [decode(frame, "agent") for frame in await restarted.outbox.unacked_frames()]
    rows = [row for m in messages for row in (m.rows if m.TYPE == "rows" else m.final_rows)]
    assert rows == [{"step": 1}, {"step": 2}]
    assert (messages[-1].TYPE, messages[-1].state) == ("status", "finished")
    # A repeated request from the server does not start it a second time.
    await restarted.handle_message(FlowRequest(flow_id="F.3", query="SELECT * FROM steps()"))
    assert restarted.outbox.last_seq("F.3") == messages[-1].seq


async def test_hunt_checkpoints_are_kept_when_newer(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    session = make_session(tmp_path, ca)
    await session.handle_message(HuntCheckpoint(last_hunt_timestamp=200))
    await session.handle_message(HuntCheckpoint(last_hunt_timestamp=100))
    await session.handle_message(CheckNow())
    assert session.state.last_hunt_timestamp == 200
    assert AgentState.open(tmp_path / "state").last_hunt_timestamp == 200


async def test_a_handshake_message_after_the_handshake_breaks_the_protocol(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    session = make_session(tmp_path, ca)
    with pytest.raises(ProtocolError):
        await session.handle_message(Challenge(nonce=b"n" * 32))


def test_a_simulated_agent_reports_its_simulated_labels(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    session = make_session(tmp_path, ca, facts={"Hostname": "sim", "Labels": ["Finance"]})
    assert session.labels == ["Test", "Finance"]


# Connecting ----------------------------------------------------------------------------------


async def test_a_server_that_is_not_there_is_reported_not_raised(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    session = make_session(tmp_path, ca)
    outcome = await asyncio.wait_for(session.connect_once(), GUARD)
    assert not outcome.authenticated
    assert "cannot connect" in outcome.problem


async def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    other_ca_cert, other_ca_key = create_certificate_authority("another CA")
    cert, key = create_server_certificate(other_ca_cert, other_ca_key, ["localhost"], [])
    (tmp_path / "server.pem").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    context = server_ssl_context(tmp_path / "server.pem", tmp_path / "server.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    session = AgentSession(make_config(ca[0], port), AgentState.open(tmp_path / "state"))
    async with server:
        outcome = await asyncio.wait_for(session.connect_once(), GUARD)
    assert not outcome.authenticated
    assert "not trusted" in outcome.problem


# The command ---------------------------------------------------------------------------------


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.main", *args]


def test_help_exits_zero() -> None:
    result = subprocess.run(agent_command("--help"), capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert "--simulate" in result.stdout


def test_a_bad_config_exits_with_a_message_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text("{}", encoding="utf-8")
    result = subprocess.run(
        agent_command("--config", str(path), "--state", str(tmp_path / "s")),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "missing server_url" in result.stderr


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_a_simulated_fleet_gets_one_identity_each_and_stops_cleanly_on_sigterm(
    tmp_path: Path, ca: tuple[bytes, bytes]
) -> None:
    config_path = tmp_path / "agent.json"
    make_config(ca[0], unused_port(), max_backoff=1.0).save(config_path)
    state = tmp_path / "state"
    process = subprocess.Popen(
        agent_command("--config", str(config_path), "--state", str(state), "--simulate", "3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        keys = [state / f"sim-{index:04d}" / "agent.key" for index in range(3)]
        asyncio.run(wait_until(lambda: all(key.exists() for key in keys), "three identities"))
        assert len({key.read_bytes() for key in keys}) == 3
        assert process.poll() is None  # an unreachable server is retried, not fatal
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=GUARD)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()


def test_a_server_busy_for_now_is_tried_again_when_it_says_not_after_the_longest_wait() -> None:
    rng = random.Random(7)
    busy = ConnectionOutcome(close_code=CloseCode.TRY_AGAIN_LATER,
                             retry_hint=retry_hint(try_again_reason("busy", 2.0)))
    delays = [reconnect_delay(busy, 0, 60.0, rng) for _ in range(200)]
    assert all(1.0 <= delay <= 3.0 for delay in delays)
    assert max(delays) - min(delays) > 1.0  # spread out: a refused fleet does not return at once
    refused = ConnectionOutcome(close_code=CloseCode.AUTH_FAILED)
    assert all(30.0 <= reconnect_delay(refused, 0, 60.0, rng) <= 60.0 for _ in range(50))
    assert reconnect_delay(ConnectionOutcome(close_code=CloseCode.TRY_AGAIN_LATER,
                                             retry_hint=500.0), 0, 60.0, rng) == 60.0
