"""A datastore with fixed contents, written through the data layer's own statements (the ones
the server runs), so console snapshots show the same thing at every run: fixed IDs, times, facts,
counts and rows."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.data_builder import DataBuilder
from velotui.server.data import Database
from velotui.server.data.flows import Ending
from velotui.server.datastore import Datastore
from velotui.server.upload_store import FolderUploads

NOW = 1_795_000_000.0  # the console's clock in snapshot tests: 2026-11-18 08:26:40 UTC
FAR_FUTURE = 4_102_444_800.0  # 2100: seeded hunts never expire under a real clock

CLIENTS = [
    ("C.1a2b3c4d5e6f7081", "fin-wks-01", "fin-wks-01.corp.example", "windows", ["Finance"]),
    ("C.2b3c4d5e6f708192", "fin-wks-02", "fin-wks-02.corp.example", "windows", ["Finance"]),
    ("C.3c4d5e6f708192a3", "web-01", "web-01.dmz.example", "linux", ["Servers"]),
    ("C.4d5e6f708192a3b4", "db-01", "db-01.corp.example", "linux", ["Servers", "Finance"]),
    ("C.5e6f708192a3b4c5", "mac-dev-07", "mac-dev-07.corp.example", "darwin", ["Workstations"]),
]

HUNTS = [
    # hunt_id, description, state, stop_reason, query, server condition, rate, limit, offset
    ("H.1M8F0000000A1", "Auth logs on finance hosts", "running", None,
     "SELECT upload(file=OSPath) AS Upload FROM glob(globs='/var/log/auth.log*')",
     "SELECT * FROM rows WHERE 'Finance' IN Labels", 60.0, 0, 3600),
    ("H.1M8F0000000B2", "Persistence: cron entries", "stopped", "stopped by operator",
     "SELECT * FROM parse_lines(filename='/etc/crontab')", "", 0.0, 100, 7200),
    ("H.1M8F0000000C3", "Running processes snapshot", "paused", None,
     "SELECT Pid, Name, CommandLine FROM pslist()", "", 0.0, 0, 60),
]

# (hunt, client, queue, flow state, rows, error)
HUNT_CLIENTS = [
    ("H.1M8F0000000A1", 0, "results", "finished", 3, None),
    ("H.1M8F0000000A1", 1, "completed", "finished", 0, None),
    ("H.1M8F0000000A1", 3, "errors", "error", 0, "upload limit of 1000000 bytes reached"),
    ("H.1M8F0000000A1", 2, "not_matched", None, 0, None),
    ("H.1M8F0000000A1", 4, "not_matched", None, 0, None),
    ("H.1M8F0000000B2", 2, "results", "finished", 2, None),
    ("H.1M8F0000000B2", 3, "errors", "cancelled", 0, "the hunt was stopped: stopped by operator"),
]


def seed(root: Path) -> Path:
    """Write the fixed datastore under ``root``; returns its folder."""
    datastore = Datastore.open(root)
    # Its own thread and loop, so it works from a test's event loop too.
    writer = threading.Thread(target=asyncio.run, args=(_write(datastore),))
    writer.start()
    writer.join()
    return datastore.root


async def _write(datastore: Datastore) -> None:
    """Everything through the data layer's own statements, as the server makes it, with the
    clock fixed."""
    db = await Database.open(datastore.database_path)
    build = DataBuilder(db, FolderUploads(datastore.uploads_location()))
    for index, (client_id, host, fqdn, os_name, labels) in enumerate(CLIENTS):
        facts = {"Hostname": host, "Fqdn": fqdn, "OS": os_name, "Architecture": "amd64"}
        await build.client(client_id, facts, first_seen=NOW - 86400 * (index + 1),
                           last_seen=NOW - 300 * index, agent_labels=labels,
                           public_key=bytes([index]) * 32)
    for hunt_id, description, state, reason, query, server, rate, limit, offset in HUNTS:
        created = NOW - offset
        await build.hunt(hunt_id, query, created=created,
                         started=None if state == "paused" else created + 10,
                         description=description, server_condition=server, rate=rate,
                         limit=limit, expires=FAR_FUTURE)
        for hunt, client_index, _queue, flow_state, rows, error in HUNT_CLIENTS:
            if hunt == hunt_id:
                await _run_client(build, hunt_id, client_index, flow_state, rows, error)
        if state == "stopped":
            await db.hunts.stop(hunt_id, reason, created + 1800)
    await db.close()


async def _run_client(build: DataBuilder, hunt_id: str, client_index: int,
                      flow_state: str | None, rows: int, error: str | None) -> None:
    """One client's way through the hunt: checked, judged, then (if it matched) its collection
    run to ``flow_state``; or left running for the hunt's stop to cancel."""
    client_id, host = CLIENTS[client_index][0], CLIENTS[client_index][1]
    checked = NOW - 3000 + client_index * 10
    await build.check(hunt_id, client_id, matched=flow_state is not None, at=checked,
                      row={"Fqdn": host})
    if flow_state is None:
        return
    data = [{"Name": f"entry-{n}", "Size": 100 * (n + 1), "Host": host} for n in range(rows)]
    await build.collect(
        hunt_id, client_id, created=checked + 1, started=checked + 2,
        finished=None if flow_state == "cancelled" else checked + 5.5,
        batches=[data] if rows else [],
        uploads=[(0, "/var/log/auth.log", b"\0" * 2048 * rows)] if rows else [],
        logs=[(checked + 4, "warning" if error else "info", error or f"collected {rows} rows")],
        end=Ending(flow_state, error),
    )
