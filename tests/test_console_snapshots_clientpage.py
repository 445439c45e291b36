"""The client page and one-off collections as SVG snapshots in snapshots/: a client's page at
80x24 and 120x36 (its hunts and its own collections), one collection's rows and log, and the
collection form refusing VQL that does not parse.

Deterministic as the other snapshots: the seeded datastore plus three collections on db-01
written through the data layer's own statements, a fixed clock, no live updates."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot

from tests.console_driver import console, ready, steady, until
from tests.console_seed import CLIENTS, NOW, seed
from velotui.screens.client_page import ClientPageScreen
from velotui.screens.clients import ClientsScreen
from velotui.screens.collect import CollectionScreen, CollectScreen
from velotui.server.data import Database, FlowRecord
from velotui.server.data.flows import Ending
from velotui.server.data.records import DEFAULT_LIMITS
from velotui.server.datastore import Datastore
from velotui.widgets.live_table import LiveTable
from velotui.widgets.vql_editor import VQLEditor

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
DB_01 = CLIENTS[3][0]

PROCESSES = [
    {"Pid": 1, "Name": "systemd", "User": "root", "CommandLine": "/sbin/init splash"},
    {"Pid": 712, "Name": "sshd", "User": "root",
     "CommandLine": "/usr/sbin/sshd -D -o PermitRootLogin=no -o PasswordAuthentication=no"},
    {"Pid": 1404, "Name": "postgres", "User": "postgres",
     "CommandLine": "/usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql/16/main"},
    {"Pid": 2051, "Name": "kworker", "User": "nobody", "CommandLine": "/tmp/.x/kworker -s"},
]
# flow ID, query, minutes before NOW it was created, rows, logs, ending
COLLECTIONS = [
    ("F.1M8F00000C001", "SELECT Pid, Name, User, CommandLine FROM pslist()", 50, PROCESSES,
     [("info", "pslist: 4 processes"), ("warning", "pid 2051: executable deleted")],
     Ending("finished")),
    ("F.1M8F00000C002", "SELECT * FROM glob(globs='/root/.ssh/*')", 40, [],
     [("error", "permission denied: /root/.ssh")],
     Ending("error", "glob: permission denied: /root/.ssh")),
    ("F.1M8F00000C003", "SELECT * FROM info()", 30,
     [{"Device": "/dev/sda1", "MountPoint": "/", "FsType": "ext4"}], [], Ending("finished")),
]

# The collections made of artifacts, with what they were compiled from.
ARTIFACTS = {"F.1M8F00000C003": json.dumps([{"name": "Linux.Mounts", "parameters": {}}])}


def seed_with_collections(root: Path) -> Path:
    """The seeded datastore with db-01's own collections added; returns its folder."""
    folder = seed(root)
    writer = threading.Thread(target=asyncio.run, args=(_collections(folder),))
    writer.start()
    writer.join()
    return folder


async def _collections(folder: Path) -> None:
    db = await Database.open(Datastore.open(folder).database_path)
    for flow_id, query, minutes, rows, logs, ending in COLLECTIONS:
        created = NOW - minutes * 60
        await db.flows.insert([FlowRecord(
            client_id=DB_01, flow_id=flow_id, hunt_id=None, kind="collection", query=query,
            env={}, state="queued", created=created, **asdict(DEFAULT_LIMITS),
            artifacts=ARTIFACTS.get(flow_id, ""))])
        await db.flows.mark_running(DB_01, flow_id, created + 1)
        seq = 0
        for level, message in logs:
            seq += 1
            await db.flows.ingest_log(DB_01, flow_id, seq, created + 2, level, message,
                                      created + 2)
        await db.flows.ingest_rows(DB_01, flow_id, seq + 1, list(rows), ending, created + 4.5)
    await db.close()


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed_with_collections(tmp_path / "datastore")


async def _page(pilot: Pilot[Any]) -> ClientPageScreen:
    app = pilot.app
    await ready(pilot)
    await pilot.press("c")
    await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
    table = app.screen.query_one("#clients", LiveTable)
    await until(pilot, lambda: DB_01 in table.rows, 10, "the clients")
    table.move_cursor(row=table.get_row_index(DB_01))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ClientPageScreen))
    page = app.screen
    assert isinstance(page, ClientPageScreen)
    collections = page.query_one("#client-collections", LiveTable)
    await until(pilot, lambda: collections.row_count == len(COLLECTIONS), 10, "collections")
    return page


@SIZES
def test_client_page(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _page(pilot)
        await pilot.pause(0.2)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_collection_rows(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await _page(pilot)
        await pilot.press("tab", "G", "enter")  # the oldest collection: the processes
        await until(pilot, lambda: isinstance(app.screen, CollectionScreen))
        screen = app.screen
        await until(pilot, lambda: screen.flow["state"] == "finished"
                    and len(screen.log_lines) == 2, 10, "its rows and log")
        await pilot.press("right", "j")
        await pilot.pause(0.2)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


def test_collect_form_refuses_bad_vql(snap_compare: Any, seeded: Path) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await _page(pilot)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CollectScreen))
        app.post_message(events.Paste("SELECT Pid, Name\nFRM pslist()"))
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen.query_one("#problem").has_class("-shown"))
        # The status line under the editor waits for typing to pause: wait for it, not a time.
        editor = app.screen.query_one("#query", VQLEditor)
        await until(pilot, lambda: not editor.check_pending
                    and editor.query_one("#vql-status").has_class("-invalid"))
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=(80, 24))
