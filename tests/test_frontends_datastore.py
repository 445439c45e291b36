"""Several `velotui serve` processes on one datastore folder: each records its own address,
`server.json` (what commands use) names one that runs, and a frontend stopping or dying does
not take the others' addresses with it. Real server processes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import ServerProcess
from velotui.server.datastore import Datastore


def named(datastore: Path) -> str | None:
    return Datastore.open(datastore).read_server_address()


def test_each_frontend_records_its_address_and_server_json_names_a_running_one(
        tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    first, second, third = (ServerProcess(datastore) for _ in range(3))
    first.start()
    try:
        second.start()
        third.start()
        store = Datastore.open(datastore)
        assert store.frontend_addresses() == sorted([first.url, second.url, third.url])
        assert named(datastore) == third.url  # the last started
        # The one server.json names stops: it names another that still runs.
        third.stop()
        assert named(datastore) in (first.url, second.url)
        # One dies with no goodbye: its file stays, but it is not listed as running.
        survivor, dead = (first, second) if named(datastore) == first.url else (second, first)
        dead.kill()
        assert store.frontend_addresses() == [survivor.url]
        assert len(list(store.frontends_dir.glob("*.json"))) == 2
        # server.json still names the one running.
        assert json.loads(store.server_address_file.read_text())["url"] == survivor.url
        survivor.stop()
        assert named(datastore) is None and store.frontend_addresses() == []
    finally:
        for server in (first, second, third):
            server.stop()
