"""Helpers for driving the real console with Pilot: start it on a datastore, type text by keys,
and wait for what the operator would wait for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.keys import _character_to_key
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea

from tests import fleet
from tests.console_seed import NOW
from velotui.app import VelotuiApp
from velotui.server_link import EmbeddedLink


def console(datastore: Path, *, demo: int = 0, snapshot: bool = False) -> VelotuiApp:
    """The console with its own embedded server on ``datastore``; for snapshots, a fixed clock
    and no live updates."""
    link = EmbeddedLink(datastore_path=datastore, listen="127.0.0.1:0", demo=demo)
    if snapshot:
        return VelotuiApp(link, clock=lambda: NOW, follow=False)
    return VelotuiApp(link)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type ``text`` key by key, as an operator would."""
    for character in text:
        await pilot.press(_character_to_key(character) if character != " " else "space")


async def until(pilot: Pilot[Any], condition: Callable[[], Any], timeout: float = 60,
                what: str = "") -> Any:
    """Poll ``condition`` between app repaints until it is true; its value."""
    return await fleet.until(condition, timeout, what, pause=pilot.pause)


async def ready(pilot: Pilot[Any]) -> None:
    """Wait for the embedded server and the home screen."""
    from velotui.screens.hunts import HuntsScreen

    await until(pilot, lambda: isinstance(pilot.app.screen, HuntsScreen), 30, "the home screen")
    await pilot.pause()


async def steady(pilot: Pilot[Any]) -> None:
    """No blinking cursor, and every table's column widths fitted to the rows it was given
    (snapshots must not depend on the moment they are taken)."""
    for screen in pilot.app.screen_stack:
        for widget in screen.query("Input, TextArea"):
            if isinstance(widget, Input | TextArea):
                widget.cursor_blink = False
    await pilot.pause()
    await until(pilot, lambda: all(_table_fitted(table) for screen in pilot.app.screen_stack
                                   for table in screen.query(DataTable)),
                10, "the tables' widths fitted")
    await _settled(pilot)


async def _settled(pilot: Pilot[Any], frames: int = 200) -> None:
    """Until two frames in a row are the same: whatever was still to happen after the last
    event (a scroll after the next refresh, a table measured when idle) has happened. A screen
    that never settles (something animated) is left after ``frames`` frames, for the snapshot
    to show."""
    previous = None
    for _ in range(frames):
        await pilot.pause()
        await asyncio.sleep(0)
        frame = pilot.app.export_screenshot()
        if frame == previous:
            return
        previous = frame


def _table_fitted(table: DataTable[Any]) -> bool:
    """Whether a DataTable has measured the rows and cells it was given: it does so when it
    is next idle, which a loaded machine may not reach before a snapshot is taken (textual is
    pinned, so these two attributes stay as they are)."""
    return not table._require_update_dimensions and not table._updated_cells
