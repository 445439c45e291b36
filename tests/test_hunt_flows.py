"""Hunt flows: a client's condition check and its collection in one flow, for hunts with no rate
and no client limit. With no hidden condition the agent goes on to the collection as soon as its
condition returns a row; with one, it waits for the server's go-ahead, which brings the
collection, so a client the hidden condition leaves out never receives it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.fleet import Fleet, until
from tests.scripted_agent import ScriptedAgent
from velotui.server import failpoints
from velotui.server.server import Server
from velotui.server.service import Service
from velotui.wire import protocol

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Hostname": "web-1", "Fqdn": "web-1.example"}
WINDOWS = {"OS": "windows", "Hostname": "desk-1", "Fqdn": "desk-1.example"}


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


def queues(server: Server, hunt_id: str) -> dict[str, int]:
    return {q: n for q, n in server.hunts.get(hunt_id).counts.items() if n}


async def flows_of(server: Server, hunt_id: str) -> list[dict]:
    rows = await server.db.store.fetch_all(
        "SELECT client_id, flow_id, kind, stage, state, rows FROM flows WHERE hunt_id = ?",
        (hunt_id,))
    return [dict(row) for row in rows]


async def test_one_flow_checks_and_collects_each_client(server: Server, fleet: Fleet,
                                                        api: Service) -> None:
    linux = fleet.start("linux", LINUX)
    windows = fleet.start("windows", WINDOWS)
    await fleet.online(linux, windows)
    hunt = await api.create_hunt(
        query="SELECT Hostname FROM info()", start=True,
        client_condition="SELECT OS FROM info() WHERE OS = 'linux'")
    await until(lambda: queues(server, hunt["hunt_id"]) == {"results": 1, "not_matched": 1},
                30, "the hunt to settle")
    flows = {f["client_id"]: f for f in await flows_of(server, hunt["hunt_id"])}
    assert len(flows) == 2 and {f["kind"] for f in flows.values()} == {"hunt"}
    assert (flows[linux]["stage"], flows[linux]["rows"]) == ("collect", 1)
    assert (flows[windows]["stage"], flows[windows]["state"], flows[windows]["rows"]) == (
        "check", "finished", 0)
    rows = [row async for event in api.hunt_results(hunt["hunt_id"]) for row in event["rows"]]
    assert [row["Hostname"] for row in rows] == ["web-1"]


async def test_a_long_collection_shows_its_client_running(server: Server, fleet: Fleet,
                                                          api: Service) -> None:
    client = fleet.start("linux", LINUX)
    await fleet.online(client)
    hunt = await api.create_hunt(query="SELECT sleep(time=300) AS Slept FROM scope()",
                                 start=True)
    # The condition's rows go ahead on their own once the query is still running.
    await until(lambda: queues(server, hunt["hunt_id"]) == {"running": 1}, 30,
                "the client to show running")
    stopped = await api.stop_hunt(hunt["hunt_id"])
    assert stopped["counts"]["errors"] == 1


async def test_the_hidden_condition_lets_the_collection_reach_only_matching_clients(
    server: Server, api: Service, tmp_path: Path
) -> None:
    agents = [await ScriptedAgent(server, tmp_path / name, facts).connect()
              for name, facts in (("linux", LINUX), ("windows", WINDOWS))]
    try:
        secret_query = "SELECT 'evidence-7731' AS Marker FROM scope()"
        hunt = await api.create_hunt(query=secret_query, start=True,
                                     server_condition="SELECT * FROM rows WHERE OS = 'linux'")
        linux, windows = agents
        request = await linux.next_collection()
        assert request.query == secret_query
        await linux.status(request.flow_id, final_rows=[{"Marker": "evidence-7731"}])
        await until(lambda: queues(server, hunt["hunt_id"]) == {"results": 1,
                                                                "not_matched": 1}, 30)
        # The windows agent was told to end its flow at the condition and never got the query.
        told = await windows.wait_for(lambda m: isinstance(m, protocol.Go))
        assert told.run is False
        assert windows.collections_received() == []
        assert all(b"evidence-7731" not in frame for frame in windows.frames)
        assert {f["state"] for f in await flows_of(server, hunt["hunt_id"])} == {"finished"}
    finally:
        for agent in agents:
            await agent.close()


async def test_a_held_hunt_flow_judged_while_its_agent_was_away_gets_its_go_ahead_on_return(
    server: Server, fleet: Fleet, api: Service
) -> None:
    client = fleet.start("linux", LINUX)
    await fleet.online(client)
    held = failpoints.hold("condition.after_judge")
    try:
        hunt = await api.create_hunt(query="SELECT Hostname FROM info()", start=True,
                                     server_condition="SELECT * FROM rows")
        await asyncio.wait_for(held.reached.wait(), 30)  # its condition rows came, judged
        await fleet.stop(client)  # the agent goes away before it hears the judgement
        await until(lambda: not server.directory.is_online(client), 10)
        held.release()
        await until(lambda: queues(server, hunt["hunt_id"]) == {"running": 1}, 30)
        fleet.start("linux", LINUX)  # the same agent, its flow kept on disk, comes back
        await until(lambda: queues(server, hunt["hunt_id"]) == {"results": 1}, 30,
                    "the collection to run after the go-ahead")
    finally:
        failpoints.disarm()


async def test_data_of_a_hunt_flows_query_before_it_may_run_closes_the_connection(
    server: Server, api: Service, tmp_path: Path
) -> None:
    agent = await ScriptedAgent(server, tmp_path / "hostile", LINUX).connect()
    bystander = await ScriptedAgent(server, tmp_path / "good", WINDOWS).connect()
    try:
        # Held: the hostile agent sends rows without waiting for the go-ahead.
        agent._reader.cancel()  # it answers nothing by itself
        hunt = await api.create_hunt(query="SELECT * FROM info()", start=True,
                                     server_condition="SELECT * FROM rows WHERE OS = 'x'")
        flow_id = f"F.{hunt['hunt_id'][2:]}.H"
        await agent._connection.send(protocol.encode(protocol.Rows(
            flow_id=flow_id, seq=1, rows=[{"forged": True}])))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await agent._connection.recv()
        assert closed.value.rcvd.code == protocol.CloseCode.PROTOCOL_ERROR
        assert "before it may run" in closed.value.rcvd.reason
        assert (await server.db.flows.get(agent.client_id, flow_id)).rows == 0
        await until(lambda: queues(server, hunt["hunt_id"]).get("not_matched") == 1, 30)
        assert bystander.collections_received() == []
    finally:
        await agent.close()
        await bystander.close()
