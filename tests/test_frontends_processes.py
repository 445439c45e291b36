"""Two `velotui serve` frontends on one datastore folder and one PostgreSQL, a simulated fleet
(`velotui-agent --simulate`, each agent listing both frontends and starting at a random one)
split between them: a hunt's client limit holds across both (exactly N of 2N matching clients
recruited), counts are the same whichever frontend is asked, and when one frontend is killed
(SIGKILL) mid-hunt its agents fail over to the other and the hunt finishes with every row stored
exactly once and counts equal to what the flows say."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import open_datastore
from tests.processes import AgentProcess, ServerProcess, running, velotui
from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="SIGKILL")]

GUARD = 180.0  # seconds before a hanging step fails; never a measure of speed
AGENTS = 300
ROWS_EACH = 5
FINAL = ("not_matched", "completed", "results", "errors")


def agent_config(datastore: Path, urls: list[str], path: Path) -> Path:
    servers = [arg for url in urls for arg in ("--server", url)]
    result = velotui("agent-config", "--datastore", str(datastore), *servers, "-o", str(path))
    assert result.returncode == 0, result.stderr
    # A short longest wait between attempts: failing over takes a moment, not a minute.
    path.write_text(json.dumps({**json.loads(path.read_text()), "max_backoff": 1.0}))
    return path


async def operator_api(server: ServerProcess) -> RemoteService:
    datastore = Datastore.open(server.datastore)
    return await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())


async def ask(server: ServerProcess, method: str, **arguments: Any) -> Any:
    async with await operator_api(server) as api:
        return await getattr(api, method)(**arguments)


async def eventually(condition: Any, what: str, seen: Any = None) -> Any:
    """Ask ``condition`` (async) again until it gives something true; ``seen`` (async) says
    what there was when it gives up."""
    deadline = time.monotonic() + GUARD
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}:"
                                 f" {await seen() if seen is not None else ''}")
        await asyncio.sleep(0.1)


async def online_on(server: ServerProcess) -> int:
    return sum(1 for client in await ask(server, "list_clients") if client["online"])


def table(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql, params).fetchall()


async def test_two_frontends_share_a_hunt_its_limit_and_survive_a_kill(
        tmp_path: Path, postgres_url: str) -> None:
    datastore = tmp_path / "datastore"
    open_datastore(datastore, postgres_url)
    first, second = ServerProcess(datastore), ServerProcess(datastore)
    config = agent_config(datastore, [first.url, second.url], tmp_path / "agent.json")
    fleet = AgentProcess(config, tmp_path / "fleet", "--simulate", str(AGENTS))
    with running(first.start(), second.start(), fleet.start()):
        async def split() -> tuple[int, int] | None:
            counts = (await online_on(first), await online_on(second))
            return counts if sum(counts) == AGENTS else None

        on_first, on_second = await eventually(split, "the fleet online on both frontends")
        assert on_first > 0 and on_second > 0, (on_first, on_second)
        # Both frontends know every client (enrolled through either).
        assert len(await ask(first, "list_clients")) == AGENTS

        # A limit of N with 2N matching clients, split across both: exactly N recruited.
        limited = await ask(first, "create_hunt", query="SELECT Hostname FROM info()",
                            limit=AGENTS // 2, rate=6000, start=True)

        async def limit_reached() -> dict[str, Any] | None:
            hunt = await ask(second, "get_hunt", hunt_id=limited["hunt_id"])
            counts = hunt["counts"]
            done = hunt["state"] == "stopped" and not counts["running"] \
                and not hunt["checking"] and counts["results"] == AGENTS // 2
            return hunt if done else None

        hunt = await eventually(
            limit_reached, "the limited hunt to end",
            lambda: asyncio.gather(ask(first, "get_hunt", hunt_id=limited["hunt_id"]),
                                   ask(second, "get_hunt", hunt_id=limited["hunt_id"])))
        assert hunt["counts"]["pending"] == AGENTS // 2
        assert (await ask(first, "get_hunt", hunt_id=limited["hunt_id"]))["counts"] \
            == hunt["counts"]
        [(collections, clients)] = table(
            postgres_url, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM flows"
            " WHERE hunt_id = %s AND kind = 'collection'", (limited["hunt_id"],))
        assert collections == clients == AGENTS // 2

        # A paced hunt created on the second; the first dies (no goodbye) while it runs.
        paced = await ask(second, "create_hunt", rate=1200, start=True,
                          query=f"SELECT Hostname, _value AS N FROM range(start=0,"
                                f" end={ROWS_EACH})")
        hunt_id = paced["hunt_id"]

        async def under_way() -> dict[str, Any] | None:
            hunt = await ask(second, "get_hunt", hunt_id=hunt_id)
            return hunt if hunt["counts"]["results"] >= 30 else None

        await eventually(under_way, "the paced hunt under way")
        first.kill()
        before = await ask(second, "get_hunt", hunt_id=hunt_id)
        assert before["counts"]["results"] < AGENTS, before["counts"]

        async def finished() -> dict[str, Any] | None:
            hunt = await ask(second, "get_hunt", hunt_id=hunt_id)
            counts = hunt["counts"]
            settled = sum(counts[q] for q in FINAL) == AGENTS and not hunt["checking"]
            return hunt if settled else None

        hunt = await eventually(finished, "the hunt to finish on the second frontend",
                                lambda: ask(second, "get_hunt", hunt_id=hunt_id))

        async def failed_over() -> bool:
            return await online_on(second) == AGENTS

        await eventually(failed_over, "every agent on the second frontend",
                         lambda: online_on(second))
    assert hunt["counts"] == {"not_matched": 0, "pending": 0, "running": 0, "completed": 0,
                              "results": AGENTS, "errors": 0}
    # Every row once: each client's flow holds its rows, counted by the flow and stored.
    flows = table(postgres_url,
                  "SELECT f.client_id, f.rows, COALESCE(SUM(r.row_count), 0) FROM flows f"
                  " LEFT JOIN flow_rows r ON r.client_id = f.client_id AND r.flow_id = f.flow_id"
                  " WHERE f.hunt_id = %s AND f.kind = 'collection' AND f.state = 'finished'"
                  " GROUP BY f.client_id, f.flow_id, f.rows", (hunt_id,))
    assert len(flows) == AGENTS and len({client for client, _, _ in flows}) == AGENTS
    assert all(rows == stored == ROWS_EACH for _, rows, stored in flows), flows[:5]
    # The counts are what the table says.
    stored_counts = dict(table(postgres_url, "SELECT queue, COUNT(*) FROM hunt_clients"
                                             " WHERE hunt_id = %s GROUP BY queue", (hunt_id,)))
    assert stored_counts == {"results": AGENTS}
