"""A schedule across a restart of the real ``velotui serve``, with a real ``velotui-agent``: a hunt
whose time came while the server was down starts when it comes back and collects; one whose
expiry also passed is stopped as expired; a hunt stopped before its time is never revived by the
schedule it had. The time passing while the server is down is written into the stored schedule
(the server is not running then), so nothing waits on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import open_datastore
from tests.postgres import execute_by_hand
from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    wait_for,
    write_agent_config,
)
from velotui.cli.connection import open_remote

pytestmark = pytest.mark.both_backends


def call(datastore: Path, method: str, **params: Any) -> Any:
    """One operator API call to the server of ``datastore``, as the CLI makes it."""
    async def main() -> Any:
        remote = await open_remote(SimpleNamespace(datastore=datastore, server=None,
                                                   token_file=None, ca_file=None))
        try:
            return await remote.call(method, **params)
        finally:
            await remote.close()

    return asyncio.run(main())


def hunts(datastore: Path) -> dict[str, dict[str, Any]]:
    return {hunt["hunt_id"]: hunt for hunt in call(datastore, "list_hunts", all=True)}


def test_a_schedule_that_came_due_while_the_server_was_down_starts_at_its_return(
    tmp_path: Path, database_url: str | None
) -> None:
    datastore = tmp_path / "datastore"
    store = open_datastore(datastore, database_url)
    server = ServerProcess(datastore).start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    document = json.loads(config.read_text())
    document["max_backoff"] = 1.0  # back soon after the restart
    config.write_text(json.dumps(document))
    agent = AgentProcess(config, tmp_path / "agent").start()
    with running(server, agent):
        wait_for(lambda: any(c["online"] for c in call(datastore, "list_clients")), 60,
                 interval=0.1, what="the agent online")
        hunt_ids = {}
        for name, expires in (("due", "7d"), ("expired", "2h"), ("cancelled", "7d")):
            hunt = call(datastore, "create_hunt", query="SELECT 1 AS One FROM scope()",
                        start_at="+1h", expires=expires)
            assert hunt["state"] == "scheduled"
            hunt_ids[name] = hunt["hunt_id"]
        call(datastore, "stop_hunt", hunt_id=hunt_ids["cancelled"])
        server.stop()

        # Time passes while the server is down: each schedule is now due (the cancelled hunt
        # given its old schedule back, as a stale record would hold it), one hunt expired.
        now = time.time()
        execute_by_hand(store, "UPDATE hunts SET start_at = ?", (now - 60,))
        execute_by_hand(store, "UPDATE hunts SET expires = ? WHERE hunt_id = ?",
                        (now - 30, hunt_ids["expired"]))

        server.start()
        after = hunts(datastore)
        due = after[hunt_ids["due"]]
        assert due["state"] == "running" and due["start_at"] is None
        assert due["started"] >= now - 60
        expired = after[hunt_ids["expired"]]
        assert (expired["state"], expired["stop_reason"]) == ("stopped", "expired")
        cancelled = after[hunt_ids["cancelled"]]
        assert cancelled["state"] == "stopped"
        assert cancelled["stop_reason"].startswith("cancelled before its start by ")
        # The agent comes back and the hunt that started collects from it.
        wait_for(lambda: hunts(datastore)[hunt_ids["due"]]["counts"]["results"] == 1, 60,
                 interval=0.2, what="the agent's results")
        assert hunts(datastore)[hunt_ids["cancelled"]]["counts"] == after[
            hunt_ids["cancelled"]]["counts"]


def test_a_crash_between_a_deletes_commit_and_its_files_removal_removes_them_at_restart(
    tmp_path: Path, database_url: str | None
) -> None:
    """The server dies right after a delete commits, before it removes the hunt's uploaded
    files: the list of files to remove was committed with the delete, so the next start removes
    them; nothing is left on disk that no row refers to."""
    datastore = tmp_path / "datastore"
    store = open_datastore(datastore, database_url)
    uploads = store.uploads_location()
    evidence = tmp_path / "evidence.bin"
    evidence.write_bytes(b"e" * 200_000)
    server = ServerProcess(datastore).start("delete.after_commit=exit")
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agent = AgentProcess(config, tmp_path / "agent").start()
    with running(server, agent):
        wait_for(lambda: any(c["online"] for c in call(datastore, "list_clients")), 60,
                 interval=0.1, what="the agent online")
        hunt_id = call(datastore, "create_hunt", start=True, query=(
            f"SELECT upload(file='{evidence}') AS Upload FROM scope()"))["hunt_id"]
        wait_for(lambda: hunts(datastore)[hunt_id]["counts"]["results"] == 1, 60,
                 interval=0.2, what="the upload")
        call(datastore, "stop_hunt", hunt_id=hunt_id)
        files = [path for path in uploads.rglob("*") if path.is_file()]
        assert [path.stat().st_size for path in files] == [200_000]

        with contextlib.suppress(Exception):  # the server dies before it answers
            call(datastore, "delete_hunt", hunt_id=hunt_id)
        server.died_at("delete.after_commit")
        assert files[0].exists()  # committed, not yet removed

        server.start()
        assert hunt_id not in hunts(datastore)
        assert not files[0].exists()
        assert execute_by_hand(store, "SELECT COUNT(*) FROM upload_removals") == [(0,)]
