"""Two frontends (two servers in one process, one datastore folder, one PostgreSQL) keep what
they hold in memory in step through the tables and LISTEN/NOTIFY: a hunt created and started on
one recruits the agents of both, counts are the same whichever frontend is asked, a stop on one
reaches the agents of the other, and a collection stored on one is delivered by the frontend that
holds the agent. Real agents (their own session code) over wss on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import open_datastore
from tests.fleet import Fleet, until
from velotui.server.server import Server

QUEUES = ("not_matched", "pending", "running", "completed", "results", "errors")


@pytest.fixture
async def frontends(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[Server, Server]]:
    root = tmp_path / "datastore"
    first = Server(open_datastore(root, postgres_url), "127.0.0.1:0")
    await first.start()
    second = Server(open_datastore(root), "127.0.0.1:0")  # it finds the database recorded
    await second.start()
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()


@pytest.fixture
async def fleets(frontends: tuple[Server, Server], tmp_path: Path
                 ) -> AsyncIterator[tuple[Fleet, Fleet]]:
    first, second = Fleet(frontends[0], tmp_path / "agents-1"), \
        Fleet(frontends[1], tmp_path / "agents-2")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def start_agents(fleet: Fleet, prefix: str, count: int) -> list[str]:
    ids = [fleet.start(f"{prefix}{n}", {"Hostname": f"{prefix}{n}", "Fqdn": f"{prefix}{n}.corp",
                                        "OS": "linux"}) for n in range(count)]
    await fleet.online(*ids)
    return ids


async def eventually(condition: Callable[[], Awaitable[Any]], timeout: float = 60,
                     what: str = "") -> Any:
    """Ask ``condition`` again until it gives something true (a wait that ends at a state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_hunt_created_on_one_frontend_recruits_on_both_with_the_same_counts(
        frontends: tuple[Server, Server], fleets: tuple[Fleet, Fleet]) -> None:
    first, second = frontends
    on_first = await start_agents(fleets[0], "a", 3)
    on_second = await start_agents(fleets[1], "b", 3)
    hunt = await first.service("alice").create_hunt(
        query="SELECT Hostname FROM info()", start=True)
    hunt_id = hunt["hunt_id"]

    async def settled() -> dict[str, Any] | None:
        described = await second.service("bob").get_hunt(hunt_id)
        return described if described["counts"]["results"] == 6 else None

    seen_by_second = await eventually(settled, what="six results seen from the second")
    seen_by_first = await first.service("alice").get_hunt(hunt_id)
    assert seen_by_first["counts"] == seen_by_second["counts"] == {
        "not_matched": 0, "pending": 0, "running": 0, "completed": 0, "results": 6,
        "errors": 0}
    # Each frontend ran the collections of its own agents.
    flows = await first.db.store.fetch_all(
        "SELECT client_id FROM flows WHERE hunt_id = ? AND state = 'finished'", (hunt_id,))
    assert sorted(row["client_id"] for row in flows) == sorted(on_first + on_second)
    # Memory follows without anyone asking: the second frontend's copy of the counts too.
    await until(lambda: {q: second.hunts.get(hunt_id).counts[q] for q in QUEUES}
                == seen_by_first["counts"], 30, "the second's counts in memory")


async def test_a_stop_on_one_frontend_reaches_the_agents_of_the_other(
        frontends: tuple[Server, Server], fleets: tuple[Fleet, Fleet]) -> None:
    first, second = frontends
    on_first = await start_agents(fleets[0], "a", 2)
    on_second = await start_agents(fleets[1], "b", 2)
    hunt = await first.service("alice").create_hunt(
        query="SELECT sleep(time=300) AS Slept FROM scope()", start=True)
    hunt_id = hunt["hunt_id"]
    agents = {**fleets[0].sessions, **fleets[1].sessions}
    await until(lambda: all(agents[c]._flows for c in on_first + on_second), 60,
                "every agent running the collection")
    await second.service("bob").stop_hunt(hunt_id)
    # The agents of the first frontend were told by it, from the second's commit.
    await until(lambda: not any(agents[c]._flows for c in on_first + on_second), 60,
                "every agent told to stop")
    assert not first.flows.active and not second.flows.active
    described = await first.service("alice").get_hunt(hunt_id)
    assert described["state"] == "stopped" and described["counts"]["errors"] == 4


async def test_a_collection_stored_on_one_frontend_is_delivered_by_the_other(
        frontends: tuple[Server, Server], fleets: tuple[Fleet, Fleet]) -> None:
    first = frontends[0]
    [client_id] = await start_agents(fleets[1], "b", 1)
    # Enrolled through the second: the first knows it from the table.
    await until(lambda: first.directory.get(client_id) is not None, 30, "the client known")
    flow = await first.service("alice").schedule_collection(
        client_id, "SELECT 'hello' AS Greeting FROM scope()")

    async def finished() -> dict[str, Any] | None:
        stored = await first.db.flows.get(client_id, flow["flow_id"])
        return stored if stored is not None and stored.state == "finished" else None

    done = await eventually(finished, what="the collection to finish")
    assert done.rows == 1


async def test_a_client_revoked_on_one_frontend_is_shut_out_by_the_other(
        frontends: tuple[Server, Server], fleets: tuple[Fleet, Fleet]) -> None:
    first, second = frontends
    [client_id] = await start_agents(fleets[1], "b", 1)
    await until(lambda: first.directory.get(client_id) is not None, 30, "the client known")
    await first.service("alice").revoke_client(client_id)
    # The frontend holding its connection closes it, and refuses it when it comes back.
    await until(lambda: not second.directory.is_online(client_id), 30, "the session closed")
    assert second.directory.get(client_id).revoked is not None


async def test_labels_given_on_one_frontend_hold_on_the_frontend_holding_the_client(
        frontends: tuple[Server, Server], fleets: tuple[Fleet, Fleet]) -> None:
    first, second = frontends
    [client_id] = await start_agents(fleets[1], "b", 1)
    await until(lambda: first.directory.get(client_id) is not None, 30, "the client known")
    await first.service("alice").label_client(client_id, add=["no-hunt"])
    # The frontend holding its connection judges hunts with the label (excluded labels, the
    # conditions' Labels), so it must see it too.
    await until(lambda: "no-hunt" in second.directory.get(client_id).labels, 30,
                "the label on the other frontend")
    assert second.directory.is_online(client_id)
