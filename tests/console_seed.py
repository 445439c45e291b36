"""A datastore with fixed contents, written through the data layer's own statements (the ones
the server runs), so console snapshots show the same thing at every run: fixed IDs, times, facts,
counts and rows."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict
from pathlib import Path

from velotui.server.data import Database, FlowRecord, HuntRecord
from velotui.server.data.flows import Ending, UploadChunk
from velotui.server.data.hunts import Candidate
from velotui.server.data.records import DEFAULT_LIMITS
from velotui.server.datastore import Datastore
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION

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
    writer = threading.Thread(target=asyncio.run, args=(_write(datastore.database_path),))
    writer.start()
    writer.join()
    return datastore.root


async def _write(path: Path) -> None:
    """Everything through the data layer's own statements, as the server makes it, with the
    clock fixed."""
    db = await Database.open(path)
    for index, (client_id, host, fqdn, os_name, labels) in enumerate(CLIENTS):
        facts = {"Hostname": host, "Fqdn": fqdn, "OS": os_name, "Architecture": "amd64"}
        await db.clients.record_hello(client_id, bytes([index]) * 32, json.dumps(facts), labels,
                                      0, NOW - 86400 * (index + 1))
        await db.clients.touch(client_id, NOW - 300 * index, 0)
    for hunt_id, description, state, reason, query, server, rate, limit, offset in HUNTS:
        created = NOW - offset
        await db.hunts.create(HuntRecord(
            hunt_id=hunt_id, query=query, client_condition=DEFAULT_CLIENT_CONDITION,
            server_condition=server, description=description, rate=rate, client_limit=limit,
            expires=FAR_FUTURE, state="paused", created=created, creator="operator",
            **asdict(DEFAULT_LIMITS),
        ))
        if state == "paused":
            continue
        await db.hunts.start(hunt_id, created + 10, int((created + 10) * 1_000_000))
        for hunt, client_index, queue, flow_state, rows, error in HUNT_CLIENTS:
            if hunt == hunt_id:
                await _run_client(db, hunt_id, client_index, queue, flow_state, rows, error)
        if state == "stopped":
            await db.hunts.stop(hunt_id, reason, created + 1800)
    await db.close()


def _flow(client_id: str, flow_id: str, hunt_id: str, kind: str, created: float) -> FlowRecord:
    return FlowRecord(client_id=client_id, flow_id=flow_id, hunt_id=hunt_id, kind=kind,
                      query="SELECT 1", env={}, state="queued", created=created,
                      **asdict(DEFAULT_LIMITS))


async def _run_client(db: Database, hunt_id: str, client_index: int, queue: str,
                      flow_state: str | None, rows: int, error: str | None) -> None:
    """One client's way through the hunt: checked, judged, then (if it matched) recruited and
    its collection run to ``flow_state``; or left running to be cancelled by the stop."""
    client_id, host = CLIENTS[client_index][0], CLIENTS[client_index][1]
    checked = NOW - 3000 + client_index * 10
    condition = _flow(client_id, f"F.{hunt_id[2:]}.C", hunt_id, "condition", checked)
    await db.hunts.add_checking(hunt_id, [condition], checked)
    await db.flows.ingest_rows(client_id, condition.flow_id, 1, [{"Fqdn": host}],
                               Ending("finished"), checked)
    matched = flow_state is not None
    await db.hunts.judged(hunt_id, client_id, condition.flow_id,
                          "pending" if matched else "not_matched", None, checked + 1)
    if not matched:
        return
    collection = _flow(client_id, f"F.{hunt_id[2:]}.H", hunt_id, "collection", checked + 1)
    await db.hunts.recruit(hunt_id, 0, [Candidate(client_id, 0)], {client_id: collection},
                           checked + 1)
    await db.flows.mark_running(client_id, collection.flow_id, checked + 2)
    seq = 0
    if rows:
        seq += 1
        data = [{"Name": f"entry-{n}", "Size": 100 * (n + 1), "Host": host}
                for n in range(rows)]
        await db.flows.ingest_rows(client_id, collection.flow_id, seq, data, None, checked + 3)
        seq += 1
        chunk = UploadChunk(upload_id=0, name="/var/log/auth.log", offset=0, size=2048 * rows,
                            eof=True, path=f"{client_id}/{collection.flow_id}/0", sha256=None)
        await db.flows.ingest_upload(client_id, collection.flow_id, seq, chunk, checked + 3)
    seq += 1
    await db.flows.ingest_log(client_id, collection.flow_id, seq, checked + 4,
                              "warning" if error else "info",
                              error or f"collected {rows} rows", checked + 4)
    if flow_state != "cancelled":  # the hunt's stop cancels it
        await db.flows.ingest_rows(client_id, collection.flow_id, seq + 1, [],
                                   Ending(flow_state, error), checked + 5.5)
