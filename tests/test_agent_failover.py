"""Agents with several server URLs, end to end: real `velotui serve` processes and real
`velotui-agent` processes on loopback. An agent whose config lists a dead server and a live one
reaches the live one whichever it tries first; an agent whose server dies mid-collection moves to
another server on the same datastore, resends what was not acknowledged, and the collection ends
with every row stored exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.processes import (
    AgentProcess,
    ServerProcess,
    free_port,
    running,
    velotui,
    wait_for,
    wait_for_clients,
)
from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix", reason="SIGKILL"),
]

GUARD = 120  # seconds before a hanging step fails; never a measure of speed
# Rows of about 100 bytes: the server dies after the first are stored, long before it has
# stored them all. The agent's outbox (its default bound) holds every row not acknowledged while
# no server is there; a smaller bound would refuse the flow, by design, in the gap.
ROW_COUNT = 200_000
PAD = "x" * 90


def agent_config(datastore: Path, urls: list[str], path: Path, **fields: object) -> Path:
    """``velotui agent-config`` with every URL in ``urls``, then ``fields`` set in the file (a
    short longest wait, so that failing over takes a moment, not a minute)."""
    servers = [arg for url in urls for arg in ("--server", url)]
    result = velotui("agent-config", "--datastore", str(datastore), *servers, "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text())["server_urls"] == [f"{url}/agent" for url in urls]
    path.write_text(json.dumps({**json.loads(path.read_text()), "max_backoff": 1.0, **fields}))
    return path


def connections(agent: AgentProcess) -> list[str]:
    """The server URLs the agent connected to, in order, as its log says."""
    return re.findall(r"connected to (wss://\S+) as C\.", agent.log_path.read_text())


async def operator_api(server: ServerProcess) -> RemoteService:
    datastore = Datastore.open(server.datastore)
    return await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())


def stored_rows(datastore: Path, flow_id: str) -> int:
    """The rows the datastore holds for ``flow_id``, counted in the database itself."""
    with sqlite3.connect(f"file:{datastore / 'velotui.db'}?mode=ro", uri=True) as connection:
        [(count,)] = connection.execute(
            "SELECT COALESCE(SUM(row_count), 0) FROM flow_rows WHERE flow_id = ?", (flow_id,)
        ).fetchall()
    return count


@pytest.mark.parametrize("dead_first", [True, False], ids=["dead-then-live", "live-then-dead"])
def test_an_agent_listing_a_dead_and_a_live_server_connects_to_the_live_one(
    tmp_path: Path, dead_first: bool
) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore)
    dead = f"wss://127.0.0.1:{free_port()}"  # nothing listens there
    urls = [dead, server.url] if dead_first else [server.url, dead]
    config = agent_config(datastore, urls, tmp_path / "agent.json")
    # Three agents, each starting at a random one of the two: most likely some try the dead
    # server first (the order itself is tested as a unit).
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", "3", "-v")
    with running(server.start(), agents.start()):
        online = wait_for_clients(datastore, 3)
        assert len(online) == 3
        wait_for(lambda: len(connections(agents)) >= 3, timeout=GUARD,
                 what="three connections in the agents' log")
        assert set(connections(agents)) == {f"{server.url}/agent"}


async def test_an_agent_whose_server_dies_fails_over_and_its_collection_ends_with_every_row_once(
    tmp_path: Path,
) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    first, second = ServerProcess(datastore), ServerProcess(datastore)
    config = agent_config(datastore, [first.url, second.url], tmp_path / "agent.json")
    agent = AgentProcess(config, tmp_path / "agent-state", "-v")
    with running(first.start(), second, agent.start()):
        [client] = await asyncio.to_thread(wait_for_clients, datastore, 1)
        client_id = client["client_id"]
        assert connections(agent) == [f"{first.url}/agent"]

        async with await operator_api(first) as api:
            flow = await api.schedule_collection(
                client_id=client_id,
                query=f"SELECT _value, '{PAD}' AS Pad FROM range(start=0, end={ROW_COUNT})",
            )
            flow_id = flow["flow_id"]
            deadline = time.monotonic() + GUARD
            while (flow := await api.flow(client_id=client_id, flow_id=flow_id))["rows"] == 0:
                assert time.monotonic() < deadline, "gave up waiting for the flow's first rows"
                await asyncio.sleep(0.01)
        # The server the agent is connected to dies mid-collection, with no goodbye.
        first.kill()
        assert flow["state"] == "running" and 0 < flow["rows"] < ROW_COUNT, flow

        # Another server, on the same datastore, at the other URL the agent lists.
        second.start()
        await asyncio.to_thread(
            wait_for, lambda: f"{second.url}/agent" in connections(agent), GUARD, 0.05,
            "the agent to connect to the second server")
        async with await operator_api(second) as api:
            status = None
            async for event in api.follow(client_id=client_id, flow_id=flow_id):
                if event["event"] == "status":
                    status = event
            values = [row["_value"] async for event in api.flow_results(
                client_id=client_id, flow_id=flow_id) for row in event["rows"]]

    assert status is not None
    assert (status["state"], status["error"]) == ("finished", None)
    assert status["rows"] == ROW_COUNT
    assert len(values) == ROW_COUNT  # nothing twice...
    assert sorted(values) == list(range(ROW_COUNT))  # ...and nothing missing
    assert stored_rows(datastore, flow_id) == ROW_COUNT
    log = agent.log_path.read_text()
    assert f"connected to {second.url}/agent" in log


HUNT_AGENTS = 3
HUNT_ROWS = 40_000  # per client


def hunt_rows_stored(datastore: Path, hunt_id: str) -> dict[str, tuple[int, int]]:
    """Per client of the hunt: (the rows its flow says it has, the rows the datastore holds)."""
    with sqlite3.connect(f"file:{datastore / 'velotui.db'}?mode=ro", uri=True) as connection:
        return {client_id: (rows, stored) for client_id, rows, stored in connection.execute(
            "SELECT f.client_id, f.rows, COALESCE(SUM(r.row_count), 0) FROM flows f"
            " LEFT JOIN flow_rows r ON r.client_id = f.client_id AND r.flow_id = f.flow_id"
            " WHERE f.hunt_id = ? GROUP BY f.client_id, f.flow_id", (hunt_id,))}


def test_a_hunt_running_when_its_server_dies_finishes_on_the_other_with_every_row_once(
    tmp_path: Path,
) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    first, second = ServerProcess(datastore), ServerProcess(datastore)
    config = agent_config(datastore, [second.url, first.url], tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", str(HUNT_AGENTS), "-v")

    def cli(*args: str) -> str:
        result = velotui(*args, "--datastore", str(datastore))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def hunt_settled() -> dict | None:
        hunt = json.loads(cli("hunt", "show", hunt_id, "--json"))
        counts = hunt["counts"]
        done = sum(counts[q] for q in ("not_matched", "completed", "results", "errors"))
        return hunt if done == HUNT_AGENTS and not counts["running"] else None

    with running(first.start(), second, agents.start()):
        wait_for_clients(datastore, HUNT_AGENTS)
        hunt_id = cli("hunt", "create", "--query",
                      f"SELECT _value AS N, '{PAD}' AS Pad FROM range(start=0, end={HUNT_ROWS})",
                      "--description", "failover", "--start").strip()
        wait_for(lambda: sum(stored for _, stored in hunt_rows_stored(datastore, hunt_id)
                             .values()) > 0, timeout=GUARD, what="the hunt's first rows")
        first.kill()
        assert sum(stored for _, stored in hunt_rows_stored(datastore, hunt_id).values()) \
            < HUNT_AGENTS * HUNT_ROWS, "the server died too late: every row was already stored"

        second.start()
        wait_for(lambda: connections(agents).count(f"{second.url}/agent") >= HUNT_AGENTS,
                 timeout=GUARD, what="every agent to connect to the second server")
        hunt = wait_for(hunt_settled, timeout=GUARD, interval=0.3, what="the hunt to settle")
        results = [json.loads(line) for line in cli("hunt", "results", hunt_id).splitlines()]

    assert hunt["counts"]["results"] == HUNT_AGENTS, hunt["counts"]
    assert hunt["counts"]["errors"] == 0
    per_client: dict[str, list[int]] = {}
    for row in results:
        per_client.setdefault(row["ClientId"], []).append(row["N"])
    assert len(per_client) == HUNT_AGENTS
    for numbers in per_client.values():
        assert sorted(numbers) == list(range(HUNT_ROWS))  # each row once, none missing
    assert hunt_rows_stored(datastore, hunt_id) == {
        client_id: (HUNT_ROWS, HUNT_ROWS) for client_id in per_client}
