"""The audit log in the real process: a `velotui serve` killed (os._exit, as SIGKILL leaves it)
inside an action's transaction, after its audit record is written and before the commit, comes
back with neither the action nor its record; killed just after that commit, with both. There is
no point between the two to kill it at. `velotui audit --follow` streams a record another CLI
call writes; `velotui audit verify` says whether the chain holds, and names the first broken
record of a file changed behind the server's back."""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import VELOTUI, ServerProcess, running, velotui
from velotui.server.datastore import Datastore

pytestmark = pytest.mark.slow

QUERY = "SELECT 1 AS One FROM scope()"


class Deployment:
    def __init__(self, root: Path) -> None:
        self.datastore = root / "datastore"
        Datastore.open(self.datastore)
        self.server = ServerProcess(self.datastore)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return velotui(*args, "--datastore", str(self.datastore))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(
                f"file:{self.datastore / 'velotui.db'}?mode=ro", uri=True)) as connection:
            return connection.execute(sql).fetchall()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path)
    try:
        yield deployed
    finally:
        with running(deployed.server):
            pass


def test_killed_before_the_commit_neither_the_action_nor_its_record_survives(
    deployment: Deployment,
) -> None:
    deployment.server.start("audit.before_commit=exit")
    created = deployment.cli("hunt", "create", "--query", QUERY)
    assert created.returncode != 0
    deployment.server.died_at("audit.before_commit")

    deployment.server.start()
    assert deployment.rows("SELECT hunt_id FROM hunts") == []
    assert deployment.rows("SELECT id FROM audit") == []
    verified = deployment.cli("audit", "verify")
    assert (verified.returncode, verified.stdout) == (0, "audit chain intact: 0 records\n")


def test_killed_after_the_commit_both_the_action_and_its_record_survive(
    deployment: Deployment,
) -> None:
    deployment.server.start("audit.after_commit=exit")
    created = deployment.cli("hunt", "create", "--query", QUERY)
    assert created.returncode != 0  # it was never told
    deployment.server.died_at("audit.after_commit")

    deployment.server.start()
    hunts = deployment.rows("SELECT hunt_id FROM hunts")
    assert len(hunts) == 1
    assert deployment.rows("SELECT action, target, outcome FROM audit") == [
        ("create", hunts[0][0], "allowed")]
    verified = deployment.cli("audit", "verify")
    assert (verified.returncode, verified.stdout) == (0, "audit chain intact: 1 records\n")


def test_audit_follow_streams_a_record_another_call_writes(deployment: Deployment) -> None:
    deployment.server.start()
    first = deployment.cli("hunt", "create", "--query", QUERY)
    assert first.returncode == 0, first.stderr
    follower = subprocess.Popen(
        [VELOTUI, "audit", "--follow", "--json", "--datastore", str(deployment.datastore)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        # The record that existed, then (whenever the follower subscribes: it follows from the
        # last record it printed, so none is missed) the one written by another CLI call
        assert json.loads(lines.get(timeout=60))["target"] == first.stdout.strip()
        second = deployment.cli("hunt", "pause", first.stdout.strip())
        assert second.returncode != 0  # a paused hunt: refused, and recorded as refused
        record = json.loads(lines.get(timeout=60))
        assert (record["action"], record["target"], record["outcome"]) == (
            "pause", first.stdout.strip(), "refused")
        assert record["reason"] in second.stderr
        third = deployment.cli("hunt", "start", first.stdout.strip())
        assert third.returncode == 0, third.stderr
        record = json.loads(lines.get(timeout=60))
        assert (record["action"], record["outcome"]) == ("start", "allowed")
        assert record["previous"] != "0" * 64
    finally:
        follower.terminate()
        follower.wait(timeout=30)


def test_audit_verify_names_the_first_broken_record(deployment: Deployment) -> None:
    deployment.server.start()
    hunt_id = deployment.cli("hunt", "create", "--query", QUERY).stdout.strip()
    for action in ("start", "pause", "start", "stop"):
        assert deployment.cli("hunt", action, hunt_id).returncode == 0
    verified = deployment.cli("audit", "verify")
    assert (verified.returncode, verified.stdout) == (0, "audit chain intact: 5 records\n")
    listed = deployment.cli("audit")
    assert listed.returncode == 0 and "stop" in listed.stdout

    deployment.server.stop()
    with contextlib.closing(sqlite3.connect(deployment.datastore / "velotui.db")) as db, db:
        db.execute("UPDATE audit SET actor = 'someone else' WHERE id = 3")
    deployment.server.start()
    verified = deployment.cli("audit", "verify")
    assert verified.returncode == 1
    assert verified.stdout.startswith("audit chain broken at record 3: ")
    assert verified.stdout.count("\n") == 1
