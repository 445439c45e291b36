"""The approvals screen by key with Pilot, against the console's real embedded server: hunts
that another operator (ann) created and asked approval for are listed with their whole
specification, hidden condition included; ``a`` approves one and ``R`` rejects one with a reason
typed in, each checked on the server; the hunts screen says "awaiting approval"."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from tests.console_driver import console, ready, type_text, until
from velotui.screens.approvals import ApprovalsScreen
from velotui.screens.dialogs import TextPrompt
from velotui.screens.hunts import HuntsScreen
from velotui.server.datastore import Datastore
from velotui.server.server import Server

pytestmark = pytest.mark.slow
SIZE = (80, 24)
HIDDEN = "SELECT * FROM rows WHERE Fqdn =~ 'finance'"


def requested_by_ann(root: Path) -> tuple[Path, list[str]]:
    """A datastore with approvals required and two hunts ann created and asked approval for
    (through a real server, stopped again before the console starts its own)."""
    datastore = Datastore.open(root)
    hunt_ids: list[str] = []

    async def write() -> None:
        server = Server(datastore, "127.0.0.1:0")
        await server.start()
        try:
            await server.service("admin").set_setting("approvals", "required")
            ann = server.service("ann")
            for description in ("finance sweep", "too broad"):
                hunt = await ann.create_hunt(query="SELECT 1 AS One FROM scope()",
                                             server_condition=HIDDEN, description=description)
                await ann.request_approval(hunt["hunt_id"], reason=f"{description} please")
                hunt_ids.append(hunt["hunt_id"])
        finally:
            await server.stop()

    writer = threading.Thread(target=asyncio.run, args=(write(),))
    writer.start()
    writer.join()
    return datastore.root, hunt_ids


async def approval_of(app: Any, hunt_id: str) -> dict[str, Any]:
    return (await app.api.get_hunt(hunt_id=hunt_id))["approval"]


async def test_an_approver_approves_and_rejects_by_key(tmp_path: Path) -> None:
    root, (first, second) = requested_by_ann(tmp_path / "datastore")
    app = console(root)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hunts = app.screen.query_one("#hunts")
        await until(pilot, lambda: str(hunts.get_cell(first, "State")) == "awaiting approval",
                    10, "the hunts table says awaiting approval")
        await pilot.press("P")
        await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen), 10, "approvals")
        table = app.screen.query_one("#approvals")
        await until(pilot, lambda: table.row_count == 2, 10, "two requests listed")
        spec = app.screen.query_one("#approval-spec", Static)
        await until(pilot, lambda: HIDDEN in str(spec.content), 10, "the hidden condition")
        assert first in str(spec.content) and "finance sweep please" in str(spec.content)

        await pilot.press("a")  # the first request (oldest first)
        await until(pilot, lambda: table.row_count == 1, 10, "the approved one leaves the list")
        approved = await approval_of(app, first)
        assert approved["state"] == "approved"
        assert approved["decided_by"] == "admin"

        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), 10, "the reason prompt")
        await type_text(pilot, "names every host")
        await pilot.press("enter")
        await until(pilot, lambda: table.row_count == 0, 10, "the rejected one leaves the list")
        rejected = await approval_of(app, second)
        assert (rejected["state"], rejected["reason"]) == ("rejected", "names every host")

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "back to hunts")
        # The command palette opens the same screen.
        await pilot.press("ctrl+p")
        await type_text(pilot, "Approvals")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen), 10, "by palette")
        await pilot.press("escape")
        started = await app.api.start_hunt(hunt_id=first)
        assert started["state"] == "running"
