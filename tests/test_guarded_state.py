"""Guarded state changes, proven where they live: a real server, agents on real websockets
whose every frame is recorded, and each race held open at its named failpoint by a barrier
(never a sleep). Stop that stops, a cancel that no data can undo, limits that hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import open_datastore
from tests.fleet import until
from tests.postgres import execute_by_hand
from tests.scripted_agent import ScriptedAgent
from velotui.server import failpoints
from velotui.server.server import Server
from velotui.server.service import Service
from velotui.wire import protocol

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Fqdn": "a.example", "Hostname": "a", "Labels": []}


@pytest.fixture(autouse=True)
def _no_failpoints_left() -> AsyncIterator[None]:
    yield
    failpoints.disarm()


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


@pytest.fixture
async def agents(server: Server, tmp_path: Path) -> AsyncIterator[list[ScriptedAgent]]:
    connected = [await ScriptedAgent(server, tmp_path / f"agent-{n}",
                                     {**LINUX, "Hostname": f"host-{n}"}).connect()
                 for n in range(3)]
    yield connected
    for agent in connected:
        await agent.close()


async def durable_queues(server: Server, hunt_id: str) -> dict[str, int]:
    counts = (await server.db.hunts.counts()).get(hunt_id, {})
    return {queue: n for queue, n in counts.items() if n}


def memory_queues(server: Server, hunt_id: str) -> dict[str, int]:
    return {queue: n for queue, n in server.hunts.get(hunt_id).counts.items() if n}


async def test_a_stop_while_the_recruiter_is_between_choosing_and_writing_recruits_nobody(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    held = failpoints.hold("recruit.before_write")
    # A rate: clients are recruited by the recruiter (with none, a hunt flow goes on at once).
    hunt = await api.create_hunt(query="SELECT * FROM info()", rate=600, start=True)
    hunt_id = hunt["hunt_id"]
    await asyncio.wait_for(held.reached.wait(), 30)  # clients chosen, nothing written
    # The recruiter is held; the other checks finish meanwhile.
    await until(lambda: memory_queues(server, hunt_id) == {"pending": 3}, 30)
    stopped = await api.stop_hunt(hunt_id)
    assert stopped["state"] == "stopped"
    held.release()
    # The recruiter's write comes after the stop and finds the hunt stopped: a write queued
    # after the release is committed after it.
    await asyncio.sleep(0)
    await server.db.store.write(lambda tx: None)
    assert await durable_queues(server, hunt_id) == {"pending": 3}
    assert memory_queues(server, hunt_id) == {"pending": 3}
    collections = await server.db.store.fetch_all(
        "SELECT flow_id FROM flows WHERE hunt_id = ?"
        " AND (kind = 'collection' OR stage = 'collect')", (hunt_id,))
    assert collections == []
    for agent in agents:
        assert not [f for f in agent.flows_received() if f.endswith(".H")]


async def test_a_cancel_committed_while_rows_arrive_ends_the_flow_cancelled_for_good(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    agent = agents[0]
    flow = await api.schedule_collection(agent.client_id, "SELECT * FROM range(end=10)")
    request = await agent.next_collection()
    assert request.flow_id == flow["flow_id"]
    await agent.rows(flow["flow_id"], [{"n": 1}])
    held = failpoints.hold("cancel.before_commit")
    cancelling = asyncio.ensure_future(api.cancel_flow(agent.client_id, flow["flow_id"]))
    await asyncio.wait_for(held.reached.wait(), 30)
    # Rows and a log arrive while the cancel is decided but not committed: they are stored
    # and acknowledged, and the flow is still running.
    await agent.rows(flow["flow_id"], [{"n": 2}, {"n": 3}])
    await agent.log(flow["flow_id"], "still going")
    assert (await server.flows.get(agent.client_id, flow["flow_id"])).state == "running"
    held.release()
    cancelled = await cancelling
    assert cancelled["state"] == "cancelled"
    # More data after the cancel is acknowledged and dropped; nothing writes it back.
    await agent.rows(flow["flow_id"], [{"n": 4}])
    await agent.status(flow["flow_id"], "finished")
    stored = await server.db.flows.get(agent.client_id, flow["flow_id"])
    assert stored.state == "cancelled" and stored.rows == 3
    assert flow["flow_id"] not in {key[1] for key in server.flows.active}
    await agent.wait_for(lambda m: isinstance(m, protocol.Cancel))
    # `velotui collect` follows the flow: it ends, with the cancel.
    events = [e async for e in api.follow(agent.client_id, flow["flow_id"])]
    assert events[-1]["event"] == "status" and events[-1]["state"] == "cancelled"
    assert sum(len(e["rows"]) for e in events if e["event"] == "rows") == 3


async def test_stop_cancels_the_collections_of_a_hunt_that_stopped_at_its_client_limit(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT * FROM info()", limit=2, start=True)
    hunt_id = hunt["hunt_id"]
    await until(lambda: server.hunts.get(hunt_id).state == "stopped", 30)
    # Which two is the recruiter's choice; the third is never recruited.
    await until(lambda: sum(not a.collections.empty() for a in agents) == 2, 30)
    recruited = [agent for agent in agents if not agent.collections.empty()]
    running = [await agent.next_collection() for agent in recruited]
    assert server.hunts.get(hunt_id).stop_reason == "client limit reached"
    # Its collections run on (as intended) until the operator stops them.
    assert memory_queues(server, hunt_id)["running"] == 2
    stopped = await api.stop_hunt(hunt_id)
    assert stopped["state"] == "stopped"
    for agent, request in zip(recruited, running, strict=True):
        await agent.wait_for(lambda m, f=request.flow_id: isinstance(m, protocol.Cancel)
                             and m.flow_id == f)
    queues = await durable_queues(server, hunt_id)
    assert queues == memory_queues(server, hunt_id)
    assert queues["errors"] == 2 and "running" not in queues
    states = {r["state"] for r in await server.db.store.fetch_all(
        "SELECT state FROM flows WHERE hunt_id = ?"
        " AND (kind = 'collection' OR stage = 'collect')", (hunt_id,))}
    assert states == {"cancelled"}
    with pytest.raises(Exception, match="nothing in flight"):
        await api.stop_hunt(hunt_id)  # nothing left to stop: refused in one line


async def test_a_client_checking_in_while_a_stop_is_applied_gets_nothing_of_the_hunt(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT * FROM info()", start=True)
    hunt_id = hunt["hunt_id"]
    for agent in agents:
        await agent.next_collection()
    held = failpoints.hold("stop.after_commit")
    stopping = asyncio.ensure_future(api.stop_hunt(hunt_id))
    await asyncio.wait_for(held.reached.wait(), 30)
    # The stop is durable, memory not yet told: a new client connects and checks in now.
    late = await ScriptedAgent(server, agents[0].state_dir.parent / "late", LINUX).connect()
    try:
        plain = await api.schedule_collection(late.client_id, "SELECT 1 FROM scope()")
        await late.next_collection()
        await late._connection.send(protocol.encode(protocol.CheckIn(last_hunt_timestamp=0)))
        await late.rows(plain["flow_id"], [{"n": 1}])  # acked: the check-in was handled
        held.release()
        await stopping
        await late.status(plain["flow_id"])
        assert [f for f in late.flows_received() if hunt_id[2:] in f] == []
        rows = await server.db.store.fetch_all(
            "SELECT client_id FROM hunt_clients WHERE hunt_id = ?", (hunt_id,))
        assert late.client_id not in {row["client_id"] for row in rows}
    finally:
        await late.close()


async def test_a_failing_listener_strands_nobody(server: Server, api: Service,
                                                 agents: list[ScriptedAgent]) -> None:
    def broken(_changes: object) -> None:
        raise RuntimeError("a listener that fails")

    server.flows._listeners.insert(0, broken)
    hunt = await api.create_hunt(query="SELECT * FROM info()", start=True)
    for agent in agents:
        request = await agent.next_collection()
        await agent.status(request.flow_id, final_rows=[{"x": 1}])
    hunt_id = hunt["hunt_id"]
    await until(lambda: memory_queues(server, hunt_id) == {"results": 3}, 30)
    assert await durable_queues(server, hunt_id) == {"results": 3}


async def test_a_step_of_the_wall_clock_times_out_no_flow(
    server: Server, api: Service, agents: list[ScriptedAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = await api.schedule_collection(agents[0].client_id, "SELECT 1 FROM scope()", timeout=60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86400)  # the clock jumps a day
    assert await server.flows.expire_due() == []
    assert (await server.flows.get(agents[0].client_id, flow["flow_id"])).state == "running"


async def test_log_lines_and_files_beyond_a_flows_limits_are_not_stored(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    agent = agents[0]
    flow = await api.schedule_collection(agent.client_id, "SELECT 1 FROM scope()", max_rows=10,
                                         max_logs=5, max_uploads=2)
    flow_id = flow["flow_id"]
    await agent.next_collection()
    for n in range(20):
        await agent.log(flow_id, f"line {n} " + "x" * 100)
    stored = await server.db.flows.get(agent.client_id, flow_id)
    assert stored.logs == 5 and stored.logs_dropped == 15 and stored.state == "running"
    logs = await server.flows.logs(agent.client_id, flow_id)
    assert len(logs) == 6 and "log limit reached" in logs[-1]["message"]
    for upload_id in range(2):
        await agent.upload(flow_id, upload_id, b"evidence %d" % upload_id)
    await agent.upload(flow_id, 2, b"one file too many")
    stored = await server.db.flows.get(agent.client_id, flow_id)
    assert stored.state == "error" and "upload limit of 2 files" in stored.error
    assert [u["upload_id"] for u in await server.flows.uploads(agent.client_id, flow_id)] == [0, 1]
    await agent.wait_for(lambda m: isinstance(m, protocol.Cancel) and m.flow_id == flow_id)
    assert not (server.datastore.uploads_location() / agent.client_id / flow_id / "2").exists()


async def test_collections_get_finite_limits_by_default(api: Service,
                                                        agents: list[ScriptedAgent]) -> None:
    flow = await api.schedule_collection(agents[0].client_id, "SELECT 1 FROM scope()")
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()")
    for described in (flow, hunt):
        for limit in ("timeout", "max_rows", "max_upload_bytes", "max_logs", "max_log_bytes",
                      "max_uploads"):
            assert 0 < described[limit] < float("inf"), limit


async def test_slow_result_readers_do_not_hold_up_ingest(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT * FROM info()", start=True)
    for agent in agents:
        request = await agent.next_collection()
        for batch in range(3):
            await agent.rows(request.flow_id, [{"batch": batch}])
        await agent.status(request.flow_id)
    await until(lambda: memory_queues(server, hunt["hunt_id"]) == {"results": 3}, 30)
    # Twelve operators each read one page of results, then stop reading (results piped into
    # `less`): more readers than the store has connections.
    readers = [api.hunt_results(hunt["hunt_id"]) for _ in range(12)]
    for reader in readers:
        await asyncio.wait_for(reader.__anext__(), 10)
    flow = await api.schedule_collection(agents[0].client_id, "SELECT 1 FROM scope()")
    await agents[0].next_collection()
    await asyncio.wait_for(agents[0].rows(flow["flow_id"], [{"fresh": True}]), 10)
    await asyncio.wait_for(agents[0].status(flow["flow_id"]), 10)
    assert (await server.db.flows.get(agents[0].client_id, flow["flow_id"])).rows == 1
    for reader in readers:
        await reader.aclose()


async def test_the_server_side_condition_is_in_no_frame_any_agent_receives(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    secret = "ZETA_HIDDEN_4471"
    condition = f"SELECT * FROM rows WHERE Hostname =~ 'host-[01]' OR '{secret}' IN Labels"
    hunt = await api.create_hunt(query="SELECT * FROM info()", server_condition=condition,
                                 start=True)
    for agent in agents[:2]:
        request = await agent.next_collection()
        await agent.status(request.flow_id, final_rows=[{"x": 1}])
    await until(lambda: memory_queues(server, hunt["hunt_id"])
                == {"results": 2, "not_matched": 1}, 30)
    frames = [frame for agent in agents for frame in agent.frames]
    assert any(b"host-" not in f and hunt["hunt_id"][2:].encode() in f for f in frames)
    for frame in frames:
        assert secret.encode() not in frame and b"Hostname =~" not in frame


async def test_a_revoked_client_is_cut_off_and_refused_from_then_on(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    agent = agents[0]
    flow = await api.schedule_collection(agent.client_id, "SELECT 1 AS One FROM scope()")
    await agent.next_collection()
    revoked = await api.revoke_client(agent.client_id)
    assert revoked["revoked"] is not None
    await asyncio.wait_for(agent._reader, 10)  # the server closed the connection
    assert agent._connection.close_code == protocol.CloseCode.AUTH_FAILED
    stored = await server.db.flows.get(agent.client_id, flow["flow_id"])
    assert stored.state == "error" and stored.error == "the client was revoked"
    again = ScriptedAgent(server, agent.state_dir, LINUX)
    with pytest.raises(Exception, match="revoked"):
        await again.connect()
    assert [e["action"] for e in await api.audit_log()][-1] == "revoke"
    # The other agents carry on.
    other = await api.schedule_collection(agents[1].client_id, "SELECT 1 AS One FROM scope()")
    await agents[1].next_collection()
    await agents[1].status(other["flow_id"], final_rows=[{"One": 1}])


async def test_a_datastore_left_inconsistent_is_repaired_at_start(
        tmp_path: Path, database_url: str | None) -> None:
    datastore = open_datastore(tmp_path / "datastore", database_url)
    first = Server(datastore, "127.0.0.1:0")
    await first.start()
    agents = [await ScriptedAgent(first, tmp_path / f"agent-{n}", LINUX).connect()
              for n in range(2)]
    api = first.service("tester")
    # Hunts at a rate: a condition check, then a plain collection, for each client.
    stopped = (await api.create_hunt(query="SELECT * FROM info()", rate=600,
                                     start=True))["hunt_id"]
    requests = {agent.client_id: await agent.next_collection() for agent in agents}
    running = (await api.create_hunt(query="SELECT * FROM info()", rate=600,
                                     start=True))["hunt_id"]
    later = {agent.client_id: await agent.next_collection() for agent in agents}
    for agent in agents:
        await agent.close()
    await first.stop()
    # What a velotui before guarded state changes could leave behind: a stop whose first
    # commit (the hunt's state) landed without its second (the cancels), and a collection
    # that ended while its client's queue still said running.
    ended_client = agents[0].client_id
    execute_by_hand(datastore, "UPDATE hunts SET state = 'stopped', stop_reason = 'by hand'"
                    " WHERE hunt_id = ?", (stopped,))
    execute_by_hand(datastore, "UPDATE flows SET state = 'finished', finished = 1, rows = 0"
                    " WHERE client_id = ? AND flow_id = ?",
                    (ended_client, later[ended_client].flow_id))
    second = Server(datastore, "127.0.0.1:0")
    await second.start()
    try:
        states = {row["state"] for row in await second.db.store.fetch_all(
            "SELECT state FROM flows WHERE hunt_id = ?"
            " AND (kind = 'collection' OR stage = 'collect')", (stopped,))}
        assert states == {"cancelled"}
        assert memory_queues(second, stopped) == {"errors": 2}
        await until(lambda: memory_queues(second, running) == {"completed": 1, "running": 1},
                    30)
        assert await durable_queues(second, running) == {"completed": 1, "running": 1}
        # The agents come back: nothing of the stopped hunt is delivered, they are told to
        # drop it; the running hunt's collection carries on.
        back = ScriptedAgent(second, tmp_path / "agent-1", LINUX)
        back.client_id = agents[1].client_id
        await back.connect()
        try:
            await back.wait_for(lambda m: isinstance(m, protocol.FlowRequest))
            assert requests[back.client_id].flow_id not in back.flows_received()
        finally:
            await back.close()
    finally:
        await second.stop()


async def test_a_failing_server_side_condition_puts_clients_in_errors_with_the_reason(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT * FROM info()", start=True,
                                 server_condition="SELECT * FROM rows WHERE Hostnme =~ 'host'")
    hunt_id = hunt["hunt_id"]
    await until(lambda: memory_queues(server, hunt_id) == {"errors": 3}, 30)
    assert await durable_queues(server, hunt_id) == {"errors": 3}
    reason = ("server condition: Hostnme is not a column of the client condition's rows:"
              " OS, Fqdn, Hostname, Labels")
    shown = await api.get_hunt(hunt_id)
    assert shown["errors"] == [{"reason": reason, "clients": 3}]
    logged = await api.hunt_log(hunt_id)
    assert [line["message"] for line in logged if line["level"] == "error"] == [reason] * 3
    for agent in agents:  # no collection reached any agent
        assert agent.collections_received() == []
