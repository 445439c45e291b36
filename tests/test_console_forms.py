"""The console's forms and keys with Pilot: quitting only from the hunts screen (asking when
that stops running hunts or loses input), leaving a filled-in form, refusals shown by the field
they concern, the default server-side condition, ``ctrl+e`` in a VQL field, and keys that arrive
in one burst (fed through Textual's own terminal parser, as the Linux driver does)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from textual._xterm_parser import XTermParser
from textual.widgets import Checkbox, Input

from tests.console_driver import console, ready, type_text, until
from tests.console_seed import HUNTS, seed
from velotui.screens.clients import ClientsScreen
from velotui.screens.dialogs import ConfirmScreen
from velotui.screens.help import HelpScreen
from velotui.screens.hunt_detail import HuntDetailScreen
from velotui.screens.hunts import HuntsScreen
from velotui.screens.new_hunt import NewHuntScreen
from velotui.widgets.filter_bar import FilterBar
from velotui.widgets.vql_editor import VQLEditor

SIZE = (80, 24)
RUNNING = next(hunt[0] for hunt in HUNTS if hunt[2] == "running")


def feed_terminal(app: Any, data: str) -> None:
    """``data`` as the terminal delivers it in one read: parsed by Textual's parser and handed
    to the app's driver event by event, as the Linux driver's input thread does (nothing waits
    for one key to be handled before the next is handed over). Run it on a thread."""
    parser = XTermParser()
    for event in [*parser.feed(data), *parser.tick()]:
        app._driver.process_message(event)


async def open_form(pilot: Any) -> NewHuntScreen:
    await pilot.press("n")
    await until(pilot, lambda: isinstance(pilot.app.screen, NewHuntScreen), 30, "the form")
    await pilot.pause()
    return pilot.app.screen


def refusal_text(app: Any, field_id: str) -> str:
    refusal = app.screen.query_one(f"#{field_id}-refusal")
    return str(refusal.render()) if refusal.has_class("-shown") else ""


def in_view(app: Any, widget: Any) -> bool:
    """Drawn, whole, inside the form's visible part at the current size."""
    form = app.screen.query_one("#form").region
    return widget.region.height > 0 and form.contains_region(widget.region)


# Keys in a burst --------------------------------------------------------------------------


async def test_a_burst_of_keys_is_applied_in_order_each_to_the_focus_it_left(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        # a<Tab>d, then on through both conditions to the rate, in one read.
        await asyncio.to_thread(feed_terminal, app, "a\td\t\t\t5")
        await until(pilot, lambda: form.query_one("#rate", Input).value == "5", 10,
                    "the burst typed")  # the rate's "0" was selected when focused
        assert form.query_one("#description", Input).value == "a"
        assert form.query_one("#query", VQLEditor).text == "d"
        assert form.query_one("#server_condition", VQLEditor).text == ""
        assert app.focused is form.query_one("#rate", Input)


async def test_a_burst_after_a_key_that_opens_a_field_goes_into_that_field(
    tmp_path: Path
) -> None:
    # "/" opens the filter through Widget.focus, which moves the focus a moment later (on the
    # app's queue): the letters after it in the same read belong to the filter, not the table.
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await asyncio.to_thread(feed_terminal, app, "/linux")
        bar = app.screen.query_one(FilterBar)
        await until(pilot, lambda: bar.value == "linux", 10, "the filter typed")
        assert app.focused is bar.query_one(Input)


# Quitting -----------------------------------------------------------------------------------


async def test_q_quits_only_from_the_hunts_screen(tmp_path: Path) -> None:
    app = console(tmp_path / "datastore")  # no hunt running: nothing to ask
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
        await pilot.press("q")
        assert isinstance(app.screen, ClientsScreen) and app.return_code is None
        await pilot.press("escape", "question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("q")  # closes the list of keys, as escape does
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        assert app.return_code is None

        form = await open_form(pilot)
        form.query_one("#start", Checkbox).focus()
        await pilot.press("q")  # a slip on a checkbox: nothing
        await pilot.pause()
        assert app.screen is form and app.return_code is None
        assert not form.has_input
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))

        await pilot.press("q")
        await until(pilot, lambda: app.return_code == 0, 10, "the console to quit")


async def test_q_is_harmless_on_a_hunts_own_screen(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen))
        screen = app.screen
        await pilot.press("q")
        await pilot.pause()
        assert app.screen is screen and app.return_code is None


async def test_quitting_with_hunts_running_on_the_embedded_server_asks_first(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.hunts[RUNNING]["state"] == "running"
        for key in ("q", "ctrl+q"):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = app.screen
            said = " ".join(str(w.render()) for w in question.query(".title, .detail"))
            assert "Quit velotui?" in said
            assert "1 hunt is running: quitting stops the embedded server" in said
            await pilot.press(key)  # asked already: the question stays
            assert app.screen is question
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
            assert app.return_code is None

        await pilot.press("ctrl+c")  # Textual's habit: says how to quit, does not
        await pilot.pause()
        assert app.return_code is None and isinstance(app.screen, HuntsScreen)
        assert any("Press [b]q[/b] to quit" in str(n.message) for n in app._notifications)

        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: app.return_code == 0, 10, "the console to quit")


async def test_ctrl_q_on_a_filled_in_form_asks_first(tmp_path: Path) -> None:
    app = console(tmp_path / "datastore")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        await type_text(pilot, "half a hunt")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        said = str(app.screen.query_one(".detail").render())
        assert "form holds input that will be lost" in said
        await pilot.press("n")
        await until(pilot, lambda: app.screen is form)
        assert form.query_one("#description", Input).value == "half a hunt"
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: app.return_code == 0, 10, "the console to quit")


# Leaving the form ---------------------------------------------------------------------------


async def test_escape_asks_before_discarding_input_and_leaves_an_untouched_form_at_once(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await open_form(pilot)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "left at once")

        form = await open_form(pilot)
        await pilot.press("tab", "tab", "tab")  # to the server-side condition
        await type_text(pilot, "SELECT * FROM rows")
        assert form.has_input
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Discard the new hunt?" in str(app.screen.query_one(".title").render())
        await pilot.press("n")
        await until(pilot, lambda: app.screen is form)
        assert form.query_one("#server_condition", VQLEditor).text == "SELECT * FROM rows"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        assert len(app.hunts) == len(HUNTS)


# Refusals by their field --------------------------------------------------------------------


async def test_a_refusal_is_shown_under_its_field_which_gets_the_focus_until_fixed(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        await type_text(pilot, "bad timeout")
        await pilot.press("tab")
        await type_text(pilot, "SELECT * FROM info()")
        timeout = form.query_one("#timeout", Input)
        timeout.value = "soon"
        form.query_one("#description", Input).focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: refusal_text(app, "timeout"), 10, "the refusal")
        assert refusal_text(app, "timeout") == "Not created: timeout: a number"
        assert app.focused is timeout
        refusal = form.query_one("#timeout-refusal")
        await until(pilot, lambda: in_view(app, timeout) and in_view(app, refusal), 10,
                    "the field and its refusal scrolled into view")
        assert refusal.region.y == timeout.region.bottom  # on the line under the field
        assert not form.query_one("#problem").has_class("-shown")

        await pilot.press("ctrl+a", "ctrl+k")  # emptied: still not a number, still said
        await type_text(pilot, "3")
        await until(pilot, lambda: not refusal_text(app, "timeout"), 10, "the refusal gone")

        # What only the server checks comes back under its field too.
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "99999999")
        await pilot.press("shift+tab", "ctrl+s")
        await until(pilot, lambda: refusal_text(app, "timeout"), 30, "the server's refusal")
        assert refusal_text(app, "timeout").startswith("Not created: timeout must be between")
        assert app.focused is timeout
        assert isinstance(app.screen, NewHuntScreen) and len(app.hunts) == len(HUNTS)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "60")
        await until(pilot, lambda: not refusal_text(app, "timeout"), 10, "the refusal gone")


async def test_an_invalid_condition_is_refused_under_its_editor(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        await pilot.press("tab")
        await type_text(pilot, "SELECT * FROM info()")
        await pilot.press("tab", "tab")
        await type_text(pilot, "SELECT * FROM rows WHERE")
        await pilot.press("tab", "tab", "ctrl+s")
        editor = form.query_one("#server_condition", VQLEditor)
        await until(pilot, lambda: refusal_text(app, "server_condition"), 10, "the refusal")
        assert "server-side condition is not valid VQL" in refusal_text(app, "server_condition")
        assert app.focused is editor.text_area
        await until(pilot, lambda: in_view(app, form.query_one("#server_condition-refusal")),
                    10, "the refusal in view")
        await pilot.press("end", "backspace", "backspace", "backspace", "backspace",
                          "backspace", "backspace")
        await until(pilot, lambda: not refusal_text(app, "server_condition"), 10,
                    "the refusal gone once the condition parses")


# The default server-side condition ----------------------------------------------------------


async def test_the_default_server_side_condition_is_empty_and_recruits_every_client(
    tmp_path: Path
) -> None:
    app = console(tmp_path / "datastore", demo=2)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("2 of 2"), 90, "the demo fleet")
        form = await open_form(pilot)
        server = form.query_one("#server_condition", VQLEditor)
        assert server.text == "" and server.valid
        assert "myhostname" in str(server.text_area.placeholder)  # a hint, not the value
        await until(pilot, lambda: "matches 2 of 2" in str(form.query_one("#estimate").render()),
                    30, "the estimate")
        await type_text(pilot, "everyone")
        await pilot.press("tab")
        await type_text(pilot, "SELECT Hostname FROM info()")
        form.query_one("#start", Checkbox).value = True
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "the hunt created")
        [hunt] = app.hunts.values()
        assert hunt["server_condition"] == ""
        await until(pilot, lambda: app.hunts[hunt["hunt_id"]]["counts"]["results"] == 2, 60,
                    "both clients' results")


# ctrl+e: the operator's editor --------------------------------------------------------------


def editor_script(folder: Path, body: str) -> Path:
    script = folder / "fake-editor"
    script.write_text(f"#!{sys.executable}\nimport pathlib, sys\n{body}\n")
    script.chmod(0o755)
    return script


async def test_ctrl_e_edits_a_vql_field_in_the_operators_editor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("EDITOR", str(editor_script(tmp_path, f"""
path = pathlib.Path(sys.argv[1])
text = path.read_text()
pathlib.Path({str(seen)!r}).write_text(text)
path.write_text(text.replace("scope()", "info()").replace("1 AS", "Hostname,\\n  1 AS"))
""")))
    app = console(seed(tmp_path / "datastore"), snapshot=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        form = await open_form(pilot)
        await pilot.press("tab")
        await type_text(pilot, "SELECT 1 AS One FROM scope()")
        await pilot.press("ctrl+e")
        query = form.query_one("#query", VQLEditor)
        await until(pilot, lambda: "info()" in query.text, 10, "the text edited")
        assert seen.read_text() == "SELECT 1 AS One FROM scope()\n"
        assert query.text == "SELECT Hostname,\n  1 AS One FROM info()"
        assert query.valid and app.focused is query.text_area
        await until(pilot, lambda: "valid VQL" in str(query.query_one("#vql-status").render()))

        # An editor that fails leaves the text as it was, and says so.
        monkeypatch.setenv("EDITOR", str(editor_script(tmp_path, "sys.exit(3)")))
        await pilot.press("ctrl+e")
        await until(pilot, lambda: any("status 3" in str(n.message)
                                       for n in app._notifications), 10, "the failure")
        assert query.text == "SELECT Hostname,\n  1 AS One FROM info()"
        monkeypatch.setenv("EDITOR", str(tmp_path / "no-such-editor"))
        await pilot.press("ctrl+e")
        await until(pilot, lambda: any("cannot run" in str(n.message)
                                       for n in app._notifications), 10, "the failure")
