"""One collection end to end: real `velotui serve`, real `velotui-agent` processes, wss on
loopback, and the command line an operator would use."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for,
    wait_for_clients,
    write_agent_config,
)
from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path):
    """A server process and one agent process, enrolled and online."""
    datastore = tmp_path / "datastore"
    server = ServerProcess(datastore)
    Datastore.open(datastore)  # first open creates the CA, secrets and token
    server.start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json", "Finance")
    agent = AgentProcess(config, tmp_path / "agent-state").start()
    with running(server, agent):
        [client] = wait_for_clients(datastore, 1)
        yield server, agent, client


def collect(server: ServerProcess, client_id: str, query: str, *extra: str):
    return velotui("collect", "--datastore", str(server.datastore), client_id, query, *extra)


def test_enrol_and_collect_info(fleet) -> None:
    server, _agent, client = fleet
    assert client["labels"] == ["Finance"]
    result = collect(server, client["client_id"],
                     "SELECT Hostname, OS, config.Labels AS L FROM info()")
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    import socket

    assert row == {"Hostname": socket.gethostname(), "OS": "linux", "L": ["Finance"]}
    assert ": finished, 1 rows" in result.stderr


def test_a_failing_collection_exits_1_with_a_reason(fleet) -> None:
    server, _agent, client = fleet
    result = collect(server, client["client_id"], "SELECT _value FROM range(end=50)",
                     "--max-rows", "10")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 10
    assert "row limit of 10 reached" in result.stderr.splitlines()[-1]


def test_upload_a_file_and_compare_its_hash(fleet, tmp_path: Path) -> None:
    server, _agent, client = fleet
    payload = tmp_path / "evidence.bin"
    payload.write_bytes(bytes(range(256)) * 9000)  # 2.3 MB: several chunks
    result = collect(server, client["client_id"],
                     f"SELECT upload(file='{payload}') AS Upload FROM scope()")
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert row["Upload"]["sha256"] == expected
    assert row["Upload"]["Size"] == payload.stat().st_size

    database = sqlite3.connect(server.datastore / "velotui.db")
    [(stored_path, stored_hash, size)] = database.execute(
        "SELECT path, sha256, size FROM uploads").fetchall()
    assert stored_hash == expected and size == payload.stat().st_size
    stored = server.datastore / "uploads" / stored_path
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == expected


def test_server_killed_mid_stream_loses_and_doubles_nothing(fleet) -> None:
    server, _agent, client = fleet
    # 100,000 rows, produced over a few seconds so that the kill lands mid-stream.
    query = ("SELECT N FROM foreach(row={SELECT _value AS Block, sleep(time=0.03) AS Pause"
             " FROM range(end=100)}, query={SELECT Block * 1000 + _value AS N"
             " FROM range(end=1000)})")

    async def schedule() -> str:
        ds = Datastore.open(server.datastore)
        async with await RemoteService.connect(server.url, ds.api_token(), ds.ca_pem()) as api:
            flow = await api.schedule_collection(client_id=client["client_id"], query=query)
            return flow["flow_id"]

    flow_id = asyncio.run(schedule())
    database = server.datastore / "velotui.db"

    def stored_rows() -> int:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            (count,) = connection.execute(
                "SELECT COALESCE(SUM(row_count), 0) FROM flow_rows WHERE flow_id = ?",
                (flow_id,)).fetchone()
            return count

    wait_for(lambda: stored_rows() > 0, what="the first rows")
    server.kill()
    assert stored_rows() < 100_000, "the kill came too late to test anything"
    server.start()

    async def results() -> tuple[dict, list[int]]:
        ds = Datastore.open(server.datastore)
        async with await RemoteService.connect(server.url, ds.api_token(), ds.ca_pem()) as api:
            status = None
            async for event in api.follow(client_id=client["client_id"], flow_id=flow_id):
                if event["event"] == "status":
                    status = event
            numbers = [row["N"] async for event in api.flow_results(
                client_id=client["client_id"], flow_id=flow_id) for row in event["rows"]]
            return status, numbers

    status, numbers = asyncio.run(results())
    assert status["state"] == "finished"
    assert len(numbers) == 100_000
    assert sorted(numbers) == list(range(100_000))
    assert status["rows"] == 100_000


def test_garbage_from_one_connection_leaves_another_agents_collection_whole(fleet) -> None:
    server, _agent, client = fleet
    import ssl

    import websockets

    ds = Datastore.open(server.datastore)

    async def attack() -> list[int]:
        context = ssl.create_default_context(cadata=ds.ca_pem())
        codes = []
        for frame in (b"\x00\xff" * 50, "text", b"\x81\xa4type\xa5hello",
                      b"\x00" * (4 * 1024 * 1024 + 10)):
            async with websockets.connect(server.url + "/agent", ssl=context,
                                          max_size=None) as connection:
                await connection.send(frame)
                try:
                    await asyncio.wait_for(connection.recv(), 10)
                except websockets.ConnectionClosed as closed:
                    codes.append(closed.rcvd.code)
        return codes

    async def both() -> tuple[list[int], str]:
        collection = asyncio.create_task(asyncio.to_thread(
            collect, server, client["client_id"], "SELECT _value AS N FROM range(end=20000)"))
        codes = await attack()
        return codes, (await collection)

    codes, result = asyncio.run(both())
    assert codes == [4000, 4000, 4000, 1009]
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["N"] for line in result.stdout.splitlines()] == list(range(20000))


def test_simulated_agents_each_enrol_with_their_own_identity(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([
        {"Hostname": "web-1", "OS": "linux", "Fqdn": "web-1.corp.example", "Labels": ["Web"]},
        {"Hostname": "dc-1", "OS": "windows", "Fqdn": "dc-1.corp.example", "Labels": ["DC"]},
    ]))
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "sim", "--simulate", "3", "--facts",
                          str(facts)).start()
    with running(server, agents):
        online = wait_for_clients(datastore, 3)
        assert len({c["client_id"] for c in online}) == 3
        assert sorted(c["hostname"] for c in online) == ["dc-1", "web-1", "web-1"]
        web = next(c for c in online if c["hostname"] == "web-1")
        result = collect(server, web["client_id"], "SELECT Fqdn, config.Labels AS L FROM info()")
        assert json.loads(result.stdout) == {"Fqdn": "web-1.corp.example", "L": ["Web"]}


def test_the_cli_reaches_a_server_by_url_and_token_file(fleet, tmp_path: Path) -> None:
    server, _agent, client = fleet
    token_file = server.datastore / "api_token"
    result = velotui("clients", "--server", server.url, "--token-file", str(token_file), "--json")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["client_id"] for line in result.stdout.splitlines()] == [
        client["client_id"]]

    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token")
    refused = velotui("clients", "--server", server.url, "--token-file", str(wrong),
                      "--ca-file", str(server.datastore / "ca.pem"))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"velotui clients: cannot use the server at {server.url}: the token was refused")

    usage = velotui("clients", "--server", server.url)
    assert usage.returncode == 2 and "--server needs --token-file" in usage.stderr
