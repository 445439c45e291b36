"""The console's forms and keys with Pilot: quitting only from the hunts screen (asking when
that stops running hunts or loses input), leaving a filled-in form, refusals shown by the field
they concern, the default server-side condition, ``ctrl+e`` in a VQL field, and keys that arrive
in one burst (fed through Textual's own terminal parser, as the Linux driver does)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual._xterm_parser import XTermParser
from textual.widgets import Input

from tests.console_driver import console, ready, until
from tests.console_seed import seed
from velotui.screens.new_hunt import NewHuntScreen

SIZE = (80, 24)


def feed_terminal(app: Any, data: str) -> None:
    """``data`` as the terminal would deliver it in one read: parsed by Textual's parser and
    handed to the app's driver event by event, from a thread, as the Linux driver's input
    thread does (nothing waits for a key to be handled before the next is handed over)."""
    parser = XTermParser()
    events = [*parser.feed(data), *parser.tick()]
    for event in events:
        app._driver.process_message(event)


async def open_form(pilot: Any) -> NewHuntScreen:
    await pilot.press("n")
    await until(pilot, lambda: isinstance(pilot.app.screen, NewHuntScreen), 30, "the form")
    await pilot.pause()
    return pilot.app.screen


async def test_a_burst_of_keys_is_applied_in_order_each_to_the_focus_it_left(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        await asyncio.to_thread(feed_terminal, app, "a\tSELECT 1")
        query = form.query_one("#query")
        await until(pilot, lambda: query.text == "SELECT 1", 10, "the burst typed")
        assert form.query_one("#description", Input).value == "a"
