"""The hunt operations from the command line, end to end: the real ``velotui`` command parser
and its client over the real operator websocket to a real server (in this process, the command
on a thread of its own as it would be in its own process): schedule, set, pause, copy, archive,
list --all, delete (asking on a terminal), and one-line refusals."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from velotui.cli import main
from velotui.server.server import Server

pytestmark = pytest.mark.both_backends


class Run:
    """A finished command: its status and what it printed."""

    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err


Command = Callable[..., Awaitable[Run]]


@pytest.fixture
def velotui(server: Server, capsys: pytest.CaptureFixture[str]) -> Command:
    async def run(*args: str) -> Run:
        capsys.readouterr()
        status = await asyncio.to_thread(
            main, [*args, "--datastore", str(server.datastore.root)])
        captured = capsys.readouterr()
        return Run(status, captured.out, captured.err)

    return run


def one_line_refusal(run: Run) -> str:
    assert run.status != 0
    assert "Traceback" not in run.err and run.err.count("\n") == 1, run.err
    return run.err.strip()


async def test_a_hunt_scheduled_set_paused_copied_archived_and_deleted(
    server: Server, velotui: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await velotui("hunt", "create", "--query", "SELECT 1 FROM scope()", "--rate",
                            "10", "--start-at", "+2h", "--max-errors", "10%", "--json")
    assert created.status == 0, created.err
    hunt = json.loads(created.out)
    hunt_id = hunt["hunt_id"]
    assert hunt["state"] == "scheduled" and hunt["max_errors_percent"] == 10
    assert hunt["start_at"] == pytest.approx(time.time() + 7200, abs=60)

    shown = await velotui("hunt", "show", hunt_id)
    assert "starts at " in shown.out and "(in 1h 59m)" in shown.out
    assert "max errors 10% of recruited" in shown.out
    listed = await velotui("hunt", "list")
    assert "scheduled (starts in 1h 59m)" in listed.out

    changed = await velotui("hunt", "set", hunt_id, "--rate", "5", "--max-errors", "3",
                            "--description", "triage")
    assert changed.status == 0, changed.err
    assert changed.out.splitlines() == ["rate: 10/min -> 5/min", "max errors: 10% -> 3",
                                        'description: "" -> "triage"']
    as_json = json.loads((await velotui("hunt", "set", hunt_id, "--limit", "7",
                                        "--json")).out)
    assert as_json["changed"] == {"limit": [0, 7]} and as_json["limit"] == 7

    paused = await velotui("hunt", "pause", hunt_id)
    assert paused.status == 0 and "paused (paused by " in paused.out
    plain = await velotui("hunt", "copy", hunt_id)
    assert plain.status == 0 and plain.out.startswith("H.") and plain.out.count("\n") == 1
    assert plain.err == f"copied {hunt_id} to {plain.out.strip()} (paused: velotui hunt start" \
        f" {plain.out.strip()})\n"
    copied = await velotui("hunt", "copy", hunt_id, "--json")
    copy = json.loads(copied.out)
    assert copy["copied_from"] == hunt_id and copy["state"] == "paused"
    assert copy["rate"] == 5 and copy["limit"] == 7 and copy["max_errors"] == 3

    archived = await velotui("hunt", "archive", hunt_id, "--json")
    assert json.loads(archived.out)["archived"] is not None
    listed = (await velotui("hunt", "list", "--json")).out
    assert [json.loads(line)["hunt_id"] for line in listed.splitlines()] == [
        copy["hunt_id"], plain.out.strip()]
    listed = (await velotui("hunt", "list", "--all", "--json")).out
    assert {json.loads(line)["hunt_id"] for line in listed.splitlines()} == {
        hunt_id, plain.out.strip(), copy["hunt_id"]}

    # No terminal to ask on and no --yes: refused, nothing deleted.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    refused = await velotui("hunt", "delete", hunt_id)
    assert refused.status == 2
    assert one_line_refusal(refused) == (
        f"velotui hunt delete: not on a terminal to ask: add --yes to delete {hunt_id}")
    assert hunt_id in server.hunts.hunts
    deleted = await velotui("hunt", "delete", hunt_id, "--yes")
    assert deleted.status == 0, deleted.err
    assert deleted.out.startswith(f"deleted {hunt_id}: ") and " bytes freed" in deleted.out
    assert hunt_id not in server.hunts.hunts

    # On a terminal it asks; anything but yes keeps the hunt.
    terminal = io.StringIO("n\n")
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", terminal)
    kept = await velotui("hunt", "delete", copy["hunt_id"])
    assert kept.status == 1 and copy["hunt_id"] in server.hunts.hunts
    terminal = io.StringIO("y\n")
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", terminal)
    gone = await velotui("hunt", "delete", copy["hunt_id"], "--json")
    assert gone.status == 0 and json.loads(gone.out)["hunt_id"] == copy["hunt_id"]
    assert copy["hunt_id"] not in server.hunts.hunts


async def test_cli_refusals_are_one_line(server: Server, velotui: Command) -> None:
    hunt = server.service("tester")
    running = await hunt.create_hunt(query="SELECT 1 FROM scope()", start=True)
    hunt_id = running["hunt_id"]
    for args, reason in (
        (("hunt", "create", "--query", "SELECT 1 FROM scope()", "--start-at", "yesterday"),
         "is not a time"),
        (("hunt", "create", "--query", "SELECT 1 FROM scope()", "--max-errors", "many"),
         "max errors must be a whole number"),
        (("hunt", "set", hunt_id), "give at least one of"),
        (("hunt", "set", hunt_id, "--expires", "2001-01-01"), "already past"),
        (("hunt", "delete", hunt_id, "--yes"), "stop it before deleting it"),
        (("hunt", "archive", hunt_id), "only a stopped or paused hunt"),
        (("hunt", "start", hunt_id), "already running"),
    ):
        refused = await velotui(*args)
        assert reason in one_line_refusal(refused), (args, refused.err)
    stopped = await velotui("hunt", "stop", hunt_id)
    assert stopped.status == 0
    again = await velotui("hunt", "pause", hunt_id)
    assert "only a running or scheduled hunt can be paused" in one_line_refusal(again)
