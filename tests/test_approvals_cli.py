"""Four-eyes approval from the command line, end to end: the real ``velotui`` parser and client
over the real operator websocket to a real server (the command on its own thread). The CLI's
token is one operator; another (in process) created the hunts it approves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from velotui.cli import main
from velotui.server.server import Server

QUERY = "SELECT 1 AS One FROM scope()"


class Run:
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


async def test_settings_requests_approvals_and_rejections(server: Server,
                                                          velotui: Command) -> None:
    shown = await velotui("settings", "show")
    assert shown.out.splitlines() == ["approvals: off", "approval_hours: 24",
                                      "excluded_labels: (none)"]
    changed = await velotui("settings", "set", "approvals", "required")
    assert (changed.status, changed.out) == (0, "approvals: required\n")
    assert "approvals is required or off" in one_line_refusal(
        await velotui("settings", "set", "approvals", "sometimes"))
    labels = await velotui("settings", "set", "excluded_labels", "no-hunt, vip", "--json")
    assert json.loads(labels.out)["excluded_labels"] == ["no-hunt", "vip"]

    # The CLI's own hunt: it may ask, not approve.
    created = await velotui("hunt", "create", "--query", QUERY, "--description", "mine")
    own = created.out.strip()
    assert "needs an approval" in one_line_refusal(await velotui("hunt", "start", own))
    requested = await velotui("hunt", "request-approval", own, "--reason", "incident 7")
    assert requested.out == f"{own}: awaiting approval (requested by admin)\n"
    assert "nobody approves their own hunt" in one_line_refusal(
        await velotui("hunt", "approve", own))
    listed = await velotui("hunt", "list")
    assert "paused, awaiting approval" in listed.out
    assert "approval: awaiting approval" in (await velotui("hunt", "show", own)).out

    # Another operator's hunt: the CLI approves it, and it starts.
    ann = server.service("ann")
    theirs = (await ann.create_hunt(query=QUERY))["hunt_id"]
    await ann.request_approval(theirs)
    approved = await velotui("hunt", "approve", theirs)
    assert approved.status == 0 and approved.out.startswith(f"{theirs}: approved by admin")
    started = await velotui("hunt", "start", theirs)
    assert started.status == 0, started.err
    assert server.hunts.get(theirs).state == "running"

    # And rejects another, with a reason its author reads.
    rejected_id = (await ann.create_hunt(query=QUERY))["hunt_id"]
    await ann.request_approval(rejected_id)
    assert "needs a reason" in one_line_refusal(
        await velotui("hunt", "reject", rejected_id, "--reason", " "))
    rejected = await velotui("hunt", "reject", rejected_id, "--reason", "too broad", "--json")
    assert json.loads(rejected.out)["approval"]["state"] == "rejected"
    assert "rejected by admin: too broad" in one_line_refusal(
        await velotui("hunt", "start", rejected_id))
    audit = await ann.audit_log()
    settings = [(entry["outcome"], entry["target"]) for entry in audit
                if entry["action"] == "setting"]
    assert settings == [("allowed", "approvals"), ("refused", "approvals"),
                        ("allowed", "excluded_labels")]
    actions = [entry["action"] for entry in audit if entry["outcome"] == "allowed"]
    assert "approve" in actions and "reject" in actions
