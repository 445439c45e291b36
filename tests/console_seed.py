"""A datastore with fixed contents, written through the real store and schema, so console
snapshots show the same thing at every run: fixed IDs, times, facts, counts and rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import msgpack

from velotui.server.datastore import Datastore
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION
from velotui.server.store import Store

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


async def _write(database: Path) -> None:
    store = await Store.open(database)

    def op(connection: sqlite3.Connection) -> None:
        for index, (client_id, host, fqdn, os_name, labels) in enumerate(CLIENTS):
            facts = {"Hostname": host, "Fqdn": fqdn, "OS": os_name, "Architecture": "amd64"}
            connection.execute(
                "INSERT INTO clients (client_id, public_key, first_seen, last_seen, facts,"
                " agent_labels, operator_labels) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (client_id, bytes([index]) * 32, NOW - 86400 * (index + 1), NOW - 300 * index,
                 json.dumps(facts), json.dumps(labels), json.dumps([])),
            )
        for hunt_id, description, state, reason, query, server, rate, limit, offset in HUNTS:
            created = NOW - offset
            connection.execute(
                "INSERT INTO hunts (hunt_id, description, query, client_condition,"
                " server_condition, rate, client_limit, expires, timeout, state, stop_reason,"
                " created, creator, started, start_timestamp, stopped)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (hunt_id, description, query, DEFAULT_CLIENT_CONDITION, server, rate, limit,
                 FAR_FUTURE, 600.0, state, reason, created, "operator",
                 None if state == "paused" else created + 10,
                 0 if state == "paused" else int((created + 10) * 1_000_000),
                 created + 1800 if state == "stopped" else None),
            )
        for hunt_id, client_index, queue, flow_state, rows, error in HUNT_CLIENTS:
            client_id = CLIENTS[client_index][0]
            created = NOW - 3000 + client_index * 10
            flow_id = f"F.{hunt_id[2:]}.H" if flow_state else None
            connection.execute(
                "INSERT INTO hunt_clients (hunt_id, client_id, queue, stage, flow_id, attempt,"
                " condition_flow_id, checked, updated, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (hunt_id, client_id, queue, "collection" if flow_state else "condition",
                 flow_id, 1 if flow_state else 0, f"F.{hunt_id[2:]}.C", created, created + 60,
                 error),
            )
            if flow_state is None:
                continue
            connection.execute(
                "INSERT INTO flows (client_id, flow_id, hunt_id, kind, query, timeout, max_rows,"
                " max_upload_bytes, state, created, started, finished, rows, bytes, error,"
                " last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (client_id, flow_id, hunt_id, "collection", "SELECT 1", 600.0, 0, 0, flow_state,
                 created, created + 1, created + 3.5, rows, 2048 * rows, error, 2),
            )
            if rows:
                data = [{"Name": f"entry-{n}", "Size": 100 * (n + 1),
                         "Host": CLIENTS[client_index][1]} for n in range(rows)]
                connection.execute(
                    "INSERT INTO flow_rows (client_id, flow_id, seq, row_count, data)"
                    " VALUES (?, ?, 1, ?, ?)",
                    (client_id, flow_id, rows, msgpack.packb(data, use_bin_type=True)),
                )
            connection.execute(
                "INSERT INTO flow_logs (client_id, flow_id, seq, time, level, message)"
                " VALUES (?, ?, 2, ?, ?, ?)",
                (client_id, flow_id, created + 2, "warning" if error else "info",
                 error or f"collected {rows} rows"),
            )

    await store.write(op)
    await store.close()
