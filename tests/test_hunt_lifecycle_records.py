"""What is left of a hunt: a copy (a new paused hunt with the same specification), the archive
(hidden from the default list), and delete, which removes every row, log and uploaded file of
the hunt and gives the disk space back, measured on the datastore folder. Against a real server
with scripted agents on real websockets, and real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import until
from tests.scripted_agent import ScriptedAgent
from velotui.server.data.schema import ADDED_COLUMNS, SCHEMA_VERSION
from velotui.server.data.store import Store
from velotui.server.errors import ServiceError
from velotui.server.server import Server
from velotui.server.service import Service
from velotui.server.upload_store import upload_key

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Fqdn": "a.example", "Hostname": "a", "Labels": []}
UPLOAD = b"evidence " * 100_000  # 900 kB


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


@pytest.fixture
async def agents(server: Server, tmp_path: Path) -> AsyncIterator[list[ScriptedAgent]]:
    connected = [await ScriptedAgent(server, tmp_path / f"agent-{n}",
                                     {**LINUX, "Hostname": f"host-{n}"}).connect()
                 for n in range(2)]
    yield connected
    for agent in connected:
        await agent.close()


def folder_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


async def disk_bytes(server: Server) -> int:
    """What the datastore takes: its folder, and its database when that is elsewhere."""
    elsewhere = server.db.store.size() if server.db.store.dialect == "postgresql" else None
    return folder_bytes(server.datastore.root) + (await elsewhere if elsewhere else 0)


async def collected_hunt(api: Service, agents: list[ScriptedAgent], batches: int
                         ) -> dict[str, Any]:
    """A hunt each agent answered with ``batches`` of 100 rows of 1 kB (random: they do not
    compress away), a log and a file."""
    hunt = await api.create_hunt(query="SELECT * FROM scope()", description="evidence",
                                 start=True)
    for agent in agents:
        collection = await agent.next_collection()
        while collection.flow_id != f"F.{hunt['hunt_id'][2:]}.H":  # an earlier hunt's
            collection = await agent.next_collection()
        for batch in range(batches):
            await agent.rows(collection.flow_id,
                             [{"n": batch * 100 + n, "text": secrets.token_hex(500)}
                              for n in range(100)])
        await agent.log(collection.flow_id, "collected")
        await agent.upload(collection.flow_id, 1, UPLOAD)
        await agent.status(collection.flow_id)
    await until(lambda: api.server.hunts.get(hunt["hunt_id"]).counts["results"]
                == len(agents), 10, "the results")
    return await api.stop_hunt(hunt["hunt_id"])


async def rows_of(server: Server, hunt_id: str) -> dict[str, int]:
    of_hunt = "(client_id, flow_id) IN (SELECT client_id, flow_id FROM flows WHERE hunt_id = ?)"
    found = {}
    for table, where in (("hunts", "hunt_id = ?"), ("hunt_clients", "hunt_id = ?"),
                         ("flows", "hunt_id = ?"), ("flow_rows", of_hunt),
                         ("flow_logs", of_hunt), ("uploads", of_hunt)):
        row = await server.db.store.fetch_one(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}",
                                              (hunt_id,))
        found[table] = row["n"]
    return found


# Copy and archive --------------------------------------------------------------------------------

async def test_copy_makes_a_paused_hunt_with_the_same_specification(api: Service) -> None:
    source = await api.create_hunt(
        query="SELECT 1 AS One FROM scope()", client_condition="SELECT * FROM info()",
        server_condition="SELECT * FROM rows WHERE OS = 'linux'", rate=30, limit=100,
        expires="2d", max_rows=500, timeout=60, max_errors="5%", description="triage",
        start=True)
    copy = await api.copy_hunt(source["hunt_id"])
    assert copy["hunt_id"] != source["hunt_id"]
    assert copy["state"] == "paused" and copy["copied_from"] == source["hunt_id"]
    for key in ("query", "client_condition", "server_condition", "rate", "limit", "max_rows",
                "timeout", "max_errors", "max_errors_percent", "description", "artifacts"):
        assert copy[key] == source[key], key
    assert copy["expires"] - copy["created"] == pytest.approx(2 * 86400, abs=5)
    assert copy["counts"] == dict.fromkeys(copy["counts"], 0)
    assert [e["action"] for e in await api.audit_log()][-1] == "copy"


async def test_archive_hides_a_finished_hunt_unless_all(api: Service,
                                                       agents: list[ScriptedAgent]) -> None:
    running = await api.create_hunt(query="SELECT 1 FROM scope()", start=True)
    finished = await api.create_hunt(query="SELECT 1 FROM scope()")
    with pytest.raises(ServiceError, match="only a stopped or paused hunt"):
        await api.archive_hunt(running["hunt_id"])
    archived = await api.archive_hunt(finished["hunt_id"])
    assert archived["archived"] == pytest.approx(time.time(), abs=5)
    assert [h["hunt_id"] for h in await api.list_hunts()] == [running["hunt_id"]]
    assert {h["hunt_id"] for h in await api.list_hunts(all=True)} == {
        running["hunt_id"], finished["hunt_id"]}
    with pytest.raises(ServiceError, match="archived already"):
        await api.archive_hunt(finished["hunt_id"])
    # A paused hunt with a collection still running is not finished.
    await agents[0].next_collection()
    await api.pause_hunt(running["hunt_id"])
    with pytest.raises(ServiceError, match="with nothing in flight"):
        await api.archive_hunt(running["hunt_id"])


# Delete ------------------------------------------------------------------------------------------

async def test_delete_removes_every_row_and_file_and_gives_the_space_back(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    kept = await collected_hunt(api, agents[:1], batches=1)
    hunt = await collected_hunt(api, agents, batches=10)
    hunt_id = hunt["hunt_id"]
    kept_rows = await rows_of(server, kept["hunt_id"])
    files = [server.upload_store.path(upload_key(agent.client_id, f"F.{hunt_id[2:]}.H", 1))
             for agent in agents]
    assert all(path.stat().st_size == len(UPLOAD) for path in files)
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in api.watch_hunts():
            events.append(event)

    watcher = asyncio.create_task(watch())
    await until(lambda: len(events) >= 2, 10, "the hunts as they are")
    await server.db.store.reclaim()  # what earlier work left free is not this delete's
    before = await disk_bytes(server)

    deleted = await api.delete_hunt(hunt_id)

    after = await disk_bytes(server)
    assert deleted == {"hunt_id": hunt_id, "rows": 2000, "files": 2, "clients": 2,
                       "bytes_freed": deleted["bytes_freed"]}
    # The files and the rows (2 MB of them, 1 MB at least once stored) really left the disk.
    assert before - after >= 2 * len(UPLOAD) + 1_000_000
    assert deleted["bytes_freed"] >= 2 * len(UPLOAD) + 1_000_000
    assert not any(path.exists() for path in files)
    assert await rows_of(server, hunt_id) == dict.fromkeys(kept_rows, 0)
    assert await rows_of(server, kept["hunt_id"]) == kept_rows
    assert hunt_id not in server.hunts.hunts
    assert [h["hunt_id"] for h in await api.list_hunts(all=True)] == [kept["hunt_id"]]
    with pytest.raises(ServiceError, match="no hunt"):
        await api.get_hunt(hunt_id)
    await until(lambda: {"event": "hunt_deleted", "hunt_id": hunt_id} in events, 10,
                "the deletion to be published")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    [entry] = [e for e in await api.audit_log() if e["action"] == "delete"]
    assert entry["target"] == hunt_id and entry["details"]["files"] == 2


async def test_delete_refuses_a_running_or_scheduled_hunt_or_one_with_work_in_flight(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    running = await api.create_hunt(query="SELECT 1 FROM scope()", start=True)
    scheduled = await api.create_hunt(query="SELECT 1 FROM scope()", start_at="+1h")
    for hunt in (running, scheduled):
        with pytest.raises(ServiceError, match="stop it before deleting it"):
            await api.delete_hunt(hunt["hunt_id"])
    await agents[0].next_collection()
    await api.pause_hunt(running["hunt_id"])
    with pytest.raises(ServiceError, match="has collections in flight"):
        await api.delete_hunt(running["hunt_id"])
    assert (await rows_of(server, running["hunt_id"]))["flows"] == 2
    assert {h["hunt_id"] for h in await api.list_hunts()} == {running["hunt_id"],
                                                               scheduled["hunt_id"]}


async def test_an_older_database_becomes_reclaimable_and_gains_the_new_columns(
    tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE hunts (hunt_id TEXT PRIMARY KEY, query TEXT NOT NULL,"
                       " client_condition TEXT NOT NULL, expires REAL NOT NULL,"
                       " timeout REAL NOT NULL, state TEXT NOT NULL, created REAL NOT NULL)")
    connection.execute("CREATE TABLE junk (data BLOB)")
    connection.executemany("INSERT INTO junk VALUES (?)", [(b"x" * 4000,)] * 500)
    connection.commit()
    assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    connection.close()

    store = await Store.open(path)
    try:
        columns = {row["name"] for row in await store.fetch_all("PRAGMA table_info(hunts)")}
        assert {column for table, column, _ in ADDED_COLUMNS if table == "hunts"} <= columns
        version = await store.fetch_one("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version["value"] == str(SCHEMA_VERSION) == "7"
        await store.write(lambda tx: tx.execute("DELETE FROM junk"))
        big = path.stat().st_size
        await store.reclaim()
        assert path.stat().st_size < big - 1_500_000
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental now
