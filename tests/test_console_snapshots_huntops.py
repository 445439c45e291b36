"""Snapshots of the hunt operations at 80x24: the edit dialog, the new-hunt form filled in from a
hunt, a scheduled hunt counting down, a hunt that paused itself, and why a client stands where
it does (see tests/test_console_snapshots.py for how they are kept deterministic)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.console_driver import console, ready, steady, until
from tests.console_seed import FAR_FUTURE, NOW, seed
from velotui.app import VelotuiApp
from velotui.server.data import Database, HuntRecord
from velotui.server.data.records import DEFAULT_LIMITS
from velotui.server.datastore import Datastore
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION
from velotui.server_link import EmbeddedLink

SCHEDULED = "H.1M8F0000000D4"
# Far ahead of the real clock, so the server leaves it waiting; the console's fixed clock is
# 1h 59m before it.
START_AT = 4_000_000_000.0
SCHEDULE_CLOCK = START_AT - (3600 + 59 * 60)
SELF_PAUSED = "H.1M8F0000000F6"


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TZ", "UTC")  # the server's explanations write local times
    return seed(tmp_path / "datastore")


def with_hunts(root: Path, *records: HuntRecord, paused_itself: str = "") -> Path:
    """``records`` stored as they are (a scheduled hunt, a paused one); ``paused_itself``
    started, then paused at its error limit as the hunt manager pauses it."""
    datastore = Datastore.open(root)

    async def write() -> None:
        db = await Database.open(datastore.database_path)
        for record in records:
            await db.hunts.create(record)
            if record.hunt_id == paused_itself:
                started = record.created + 5
                await db.hunts.start(record.hunt_id, started, int(started * 1_000_000))
                await db.hunts.pause(record.hunt_id, "error limit reached", started + 10)
        await db.close()

    writer = threading.Thread(target=asyncio.run, args=(write(),))  # works from a loop too
    writer.start()
    writer.join()
    return datastore.root


def hunt_record(hunt_id: str, description: str, created: float, **fields: Any) -> HuntRecord:
    return HuntRecord(
        hunt_id=hunt_id, query="SELECT * FROM info()", client_condition=DEFAULT_CLIENT_CONDITION,
        server_condition="", description=description, rate=30.0, client_limit=0,
        expires=FAR_FUTURE, created=created, creator="operator", **asdict(DEFAULT_LIMITS),
        **fields)


def keys(*presses: str, then: Any = None, pause: float = 0.3) -> Any:
    async def run(pilot: Pilot[Any]) -> None:
        await ready(pilot)
        for key in presses:
            await pilot.press(key)
            await pilot.pause(pause)
        if then is not None:
            await then(pilot)
        await steady(pilot)

    return run


def test_edit_dialog(snap_compare: Any, seeded: Path) -> None:
    """u on the running hunt: its current rate, limit, expiry, error limit, description."""
    async def shown(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.screen.query("#max_errors"), 10, "the dialog")

    assert snap_compare(console(seeded, snapshot=True), run_before=keys("down", "u", then=shown))


def test_edit_dialog_refused_by_its_field(snap_compare: Any, seeded: Path) -> None:
    """A limit that is no number, refused under the limit."""
    async def refused(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.screen.query("#limit"), 10, "the dialog")
        await pilot.press("tab", "ctrl+u", "m", "a", "n", "y", "ctrl+s")
        await until(pilot, lambda: pilot.app.screen.query_one("#limit-refusal")
                    .has_class("-shown"), 10, "the refusal")

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "u", then=refused))


def test_copy_filled_form(snap_compare: Any, seeded: Path) -> None:
    """C on the running hunt: the form holds its description, query and conditions."""
    async def filled(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.screen.query("#start_at"), 10, "the form")
        await until(pilot, lambda: str(pilot.app.screen.query_one("#estimate").render())
                    .startswith("matches"), 30, "the estimate")

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "C", then=filled))


def test_copy_filled_form_limits(snap_compare: Any, seeded: Path) -> None:
    """The same form further down: the rate, limit and limits copied."""
    async def scrolled(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.screen.query("#start_at"), 10, "the form")
        await until(pilot, lambda: str(pilot.app.screen.query_one("#estimate").render())
                    .startswith("matches"), 30, "the estimate")
        pilot.app.screen.query_one("#timeout").focus()
        await pilot.pause(0.3)

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "C", then=scrolled))


def test_scheduled_hunt_counts_down(snap_compare: Any, seeded: Path) -> None:
    """A scheduled hunt (the newest, selected) says when it starts, in the table and panel;
    the hunt that paused itself at its error limit says so."""
    with_hunts(seeded,
               hunt_record(SCHEDULED, "Nightly sweep", NOW - 20, state="scheduled",
                           start_at=START_AT, max_errors=5),
               hunt_record(SELF_PAUSED, "Browser history", NOW - 40, state="paused",
                           max_errors_percent=10.0),
               paused_itself=SELF_PAUSED)
    link = EmbeddedLink(datastore_path=seeded, listen="127.0.0.1:0")
    app = VelotuiApp(link, clock=lambda: SCHEDULE_CLOCK, follow=False)
    assert snap_compare(app, run_before=keys())


def test_why_modal(snap_compare: Any, seeded: Path) -> None:
    """w on a client of the running hunt's clients tab: the server's explanation."""
    async def explained(pilot: Pilot[Any]) -> None:
        screen = pilot.app.screen
        await until(pilot, lambda: screen.query_one("#clients-table").row_count > 0, 30,
                    "the clients")
        await pilot.press("w")
        await until(pilot, lambda: pilot.app.screen.query("#why-summary"), 30, "the answer")
        await pilot.pause(0.3)

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "enter", "2", then=explained))
