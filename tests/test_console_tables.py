"""The console's table pieces driven by keys: vi-style moves, the filter bar, a row's detail,
copying as JSON through the terminal (OSC 52), stacking a column and choosing columns."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Input

from tests.console_driver import until
from velotui.clipboard import copy_json
from velotui.screens.column_chooser import ColumnChooser
from velotui.screens.row_detail import RowDetailScreen
from velotui.screens.tally import TallyScreen
from velotui.widgets.filter_bar import FilterBar, matches
from velotui.widgets.live_table import LiveTable

OSC_52 = re.compile(r"\x1b\]52;c;([A-Za-z0-9+/=]*)\x07")


def terminal_output(app: App[Any]) -> list[str]:
    """Everything the app writes to its terminal from now on (the test driver draws nothing, so
    this is what a real terminal would have received as escape sequences)."""
    written: list[str] = []
    driver = app._driver
    assert driver is not None
    original = driver.write

    def write(data: str) -> None:
        written.append(data)
        original(data)

    driver.write = write  # type: ignore[method-assign]
    return written


def clipboard_writes(written: list[str]) -> list[str]:
    """The texts sent to the terminal's clipboard (OSC 52), decoded."""
    return [base64.b64decode(match).decode() for match in OSC_52.findall("".join(written))]


def notices(app: App[Any]) -> list[str]:
    return [str(notification.message) for notification in app._notifications]


class TableHost(App[None]):
    """A live table of ``rows`` rows over a filter bar, as a screen of the console has them."""

    BINDINGS = [Binding("slash", "filter", "Filter")]

    def __init__(self, rows: int = 100) -> None:
        super().__init__()
        self.rows = {f"r{n:03d}": [f"row {n}", "even" if n % 2 == 0 else "odd"]
                     for n in range(rows)}
        self.filters: list[str] = []

    def compose(self) -> ComposeResult:
        table = LiveTable(id="table", cursor_type="row")
        table.add_columns("Name", "Parity")
        yield table
        yield FilterBar(id="filter")

    def on_mount(self) -> None:
        self.show("")
        self.query_one(LiveTable).focus()

    def show(self, needle: str) -> None:
        self.query_one(LiveTable).sync(
            {key: cells for key, cells in self.rows.items() if matches(needle, cells)})

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.filters.append(event.value)
        self.show(event.value)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()


def cursor_row(app: App[Any]) -> int:
    return app.query_one(LiveTable).cursor_coordinate.row


async def test_vi_keys_move_in_a_table() -> None:
    app = TableHost()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        await pilot.press("j", "j", "j")
        assert cursor_row(app) == 3
        await pilot.press("k")
        assert cursor_row(app) == 2
        await pilot.press("G")
        assert cursor_row(app) == 99
        await pilot.press("g")
        assert cursor_row(app) == 0
        # Half of the 23 rows under the header: 11 rows a press.
        visible = table.scrollable_content_region.height - table.header_height
        await pilot.press("ctrl+d")
        assert cursor_row(app) == visible // 2
        await pilot.press("ctrl+d", "ctrl+d")
        assert cursor_row(app) == 3 * (visible // 2)
        await pilot.pause()
        assert table.scroll_y > 0  # the cursor is kept in view
        await pilot.press("ctrl+u")
        assert cursor_row(app) == 2 * (visible // 2)
        await pilot.press("G", "ctrl+d")
        assert cursor_row(app) == 99  # stays on the last row
        await pilot.press("g", "ctrl+u")
        assert cursor_row(app) == 0


async def test_an_ordered_sync_puts_rows_in_the_order_given_and_the_cursor_follows() -> None:
    app = TableHost(rows=3)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        await pilot.press("j")  # on r001
        table.sync({"new": ["new", "odd"], **app.rows}, ordered=True)
        await pilot.pause()
        keys = [str(table.coordinate_to_cell_key((n, 0)).row_key.value)
                for n in range(table.row_count)]
        assert keys == ["new", "r000", "r001", "r002"]
        assert str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value) == "r001"
        # Without `ordered`, rows keep their place and a new one goes to the end.
        table.sync({"newer": ["newer", "odd"], "new": ["new", "odd"], **app.rows})
        keys = [str(table.coordinate_to_cell_key((n, 0)).row_key.value)
                for n in range(table.row_count)]
        assert keys == ["new", "r000", "r001", "r002", "newer"]


async def test_the_filter_bar_filters_as_you_type_and_esc_clears_it() -> None:
    app = TableHost(rows=20)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        bar = app.query_one(FilterBar)
        assert not bar.display
        await pilot.press("slash")
        assert bar.display and isinstance(app.focused, Input)
        await pilot.press("1", "5")
        assert app.filters == ["1", "15"]
        assert table.row_count == 1 and str(table.get_row_at(0)[0]) == "row 15"
        await pilot.press("backspace")
        assert table.row_count == 11  # row 1 and rows 10-19
        await pilot.press("escape")
        assert app.filters[-1] == ""
        assert table.row_count == 20
        assert not bar.display
        assert app.focused is table


async def test_enter_keeps_the_filter_and_says_so() -> None:
    app = TableHost(rows=20)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        bar = app.query_one(FilterBar)
        await pilot.press("slash", "O", "D", "D", "enter")  # case does not matter
        assert table.row_count == 10
        assert app.focused is table
        assert not bar.query_one("#filter-line").display
        kept = bar.query_one("#filter-kept")
        assert kept.display
        assert str(kept.render()) == "filter: ODD   (/ to change, esc to clear)"
        await pilot.press("j")  # the table has the keys again
        assert cursor_row(app) == 1
        await pilot.press("slash")  # to change it: the text is still there
        assert bar.query_one(Input).value == "ODD"
        await pilot.press("backspace", "backspace", "backspace", "enter")
        assert table.row_count == 20
        assert not bar.display  # an empty filter kept is no filter


async def test_a_filter_kept_from_code_shows_and_esc_on_the_bar_clears_it() -> None:
    app = TableHost(rows=20)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        bar = app.query_one(FilterBar)
        bar.keep("row 1")
        await pilot.pause()
        assert app.filters == ["row 1"] and table.row_count == 11
        assert str(bar.query_one("#filter-kept").render()).startswith("filter: row 1 ")
        assert app.focused is table
        bar.keep("row 1")  # no change: no message
        await pilot.pause()
        assert app.filters == ["row 1"]
        await pilot.press("slash", "escape")
        assert app.filters[-1] == "" and table.row_count == 20 and not bar.display


def test_matches_any_cell_ignoring_case() -> None:
    assert matches("", ["anything"])
    assert matches("fin", ["H.1", "Auth logs on FINANCE hosts"])
    assert not matches("web", ["H.1", "running"])


class Host(App[None]):
    """An empty app to push the console's modal screens on."""


async def test_copy_json_writes_osc_52_and_says_what_was_copied() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        written = terminal_output(app)
        value = {"Name": "Ünïcode", "Size": 3, "When": b"\x00"}
        copy_json(app, value, what="row")
        await pilot.pause()
        [copied] = clipboard_writes(written)
        assert json.loads(copied) == {"Name": "Ünïcode", "Size": 3, "When": "b'\\x00'"}
        assert "Ünïcode" in copied  # not escaped
        assert notices(app) == [f"copied row ({len(copied)} characters)"]


ROW = {
    "ClientId": "C.1a2b3c4d5e6f7081",
    "Name": "entry-0",
    "Nested": {"Pid": 4, "Args": ["-x", "--long"]},
    "Missing": None,
    "Long": " ".join(f"word{n}" for n in range(400)),
}


async def open_detail(pilot: Pilot[None], column: str | None = None) -> list[Any]:
    dismissed: list[Any] = []
    pilot.app.push_screen(RowDetailScreen("H.1 results row 1", ROW, column), dismissed.append)
    await until(pilot, lambda: isinstance(pilot.app.screen, RowDetailScreen))
    await pilot.pause()
    return dismissed


async def test_a_rows_detail_shows_every_field_whole_and_nested_values_as_json() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot)
        names = [str(label.render()) for label in app.screen.query(".field-name")]
        assert names == list(ROW)
        values = [str(value.render()) for value in app.screen.query(".field-value")]
        assert values[2] == json.dumps(ROW["Nested"], indent=2)
        assert values[3] == "null"
        assert values[4] == ROW["Long"]  # whole, wrapped on screen
        fields = app.screen.query_one("#detail-fields")
        assert fields.max_scroll_y > 0
        await pilot.press("j", "j")
        assert fields.scroll_y == 2
        await pilot.press("G")
        assert fields.scroll_y == fields.max_scroll_y
        await pilot.press("k")
        assert fields.scroll_y == fields.max_scroll_y - 1
        await pilot.press("g")
        assert fields.scroll_y == 0
        await pilot.press("pagedown")
        assert fields.scroll_y > 10
        await pilot.press("pageup")
        assert fields.scroll_y == 0


async def test_y_copies_the_row_or_the_selected_cell_and_y_upper_the_row() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        written = terminal_output(app)
        await open_detail(pilot)
        await pilot.press("y")
        assert [json.loads(text) for text in clipboard_writes(written)] == [ROW]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, RowDetailScreen))

        await open_detail(pilot, column="Nested")
        await pilot.press("y")
        await pilot.press("Y")
        copied = [json.loads(text) for text in clipboard_writes(written)]
        assert copied == [ROW, ROW["Nested"], ROW]
        assert notices(app)[-2].startswith("copied Nested (")


async def test_esc_enter_and_q_close_the_detail() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("escape", "enter", "q"):
            dismissed = await open_detail(pilot)
            await pilot.press(key)
            await until(pilot, lambda shown=dismissed: shown == [None], what=key)
        assert app.is_running


VALUES = [
    {"value": "bash", "rows": 3, "clients": 2},
    {"value": "sshd", "rows": 40, "clients": 5},
    {"value": None, "rows": 1, "clients": 1},
    {"value": "cron", "rows": 3, "clients": 3},
]


async def open_tally(pilot: Pilot[None]) -> list[Any]:
    dismissed: list[Any] = []
    pilot.app.push_screen(TallyScreen("Name", VALUES, note="4 values"), dismissed.append)
    await until(pilot, lambda: isinstance(pilot.app.screen, TallyScreen))
    await pilot.pause()
    return dismissed


def tally_rows(app: App[Any]) -> list[list[str]]:
    table = app.screen.query_one("#tally-table", LiveTable)
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


async def test_a_tally_lists_values_most_rows_first_and_enter_gives_the_value() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        dismissed = await open_tally(pilot)
        assert tally_rows(app) == [["sshd", "40", "5"], ["cron", "3", "3"], ["bash", "3", "2"],
                                   ["null", "1", "1"]]
        assert str(app.screen.query_one("#tally-note").render()) == "4 values"
        await pilot.press("j", "j", "enter")
        await until(pilot, lambda: dismissed == ["bash"])

        dismissed = await open_tally(pilot)
        await pilot.press("escape")
        await until(pilot, lambda: dismissed == [None])


async def test_a_tally_is_filtered_by_slash_and_esc_clears_before_leaving() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        dismissed = await open_tally(pilot)
        await pilot.press("slash", "s", "h")
        assert tally_rows(app) == [["sshd", "40", "5"], ["bash", "3", "2"]]
        await pilot.press("enter")  # keeps the filter; the table has the focus
        await pilot.press("j", "enter")
        await until(pilot, lambda: dismissed == ["bash"])

        dismissed = await open_tally(pilot)
        await pilot.press("slash", "c", "r", "o", "n", "enter")
        assert len(tally_rows(app)) == 1
        await pilot.press("escape")  # clears the filter first
        assert len(tally_rows(app)) == 4 and dismissed == []
        await pilot.press("escape")
        await until(pilot, lambda: dismissed == [None])


async def test_the_column_chooser_toggles_with_space_and_applies_in_table_order() -> None:
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        chosen: list[Any] = []
        columns = ["ClientId", "Fqdn", "Name", "Size"]
        app.push_screen(ColumnChooser(columns, ["Size", "ClientId"]), chosen.append)
        await until(pilot, lambda: isinstance(app.screen, ColumnChooser))
        await pilot.press("j", "space", "j", "j", "space")  # Fqdn on, Size off
        await pilot.press("enter")
        await until(pilot, lambda: chosen == [["ClientId", "Fqdn"]])

        app.push_screen(ColumnChooser(columns, ["Name"]), chosen.append)
        await until(pilot, lambda: isinstance(app.screen, ColumnChooser))
        await pilot.press("space", "escape")  # cancelled: nothing changes
        await until(pilot, lambda: chosen[-1] is None)

        app.push_screen(ColumnChooser(columns, ["Name"]), chosen.append)
        await until(pilot, lambda: isinstance(app.screen, ColumnChooser))
        await pilot.press("j", "j", "space", "enter")  # nothing ticked: refused
        assert isinstance(app.screen, ColumnChooser)
        assert "at least one column" in notices(app)[-1]
        await pilot.press("a", "enter")
        await until(pilot, lambda: chosen[-1] == columns)


async def test_the_panel_knows_the_completions_of_a_hunt_it_did_not_show() -> None:
    from tests.test_hunt_panel import NOW, PanelApp, hunt
    from velotui.widgets.hunt_panel import HuntPanel

    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        shown = hunt(hunt_id="H.SHOWN", running=1)
        other = hunt(hunt_id="H.OTHER", running=3)
        for step in range(10):  # H.OTHER finishes its 3 clients while H.SHOWN is selected
            now = NOW + step * 2
            other = hunt(hunt_id="H.OTHER", running=3 - step // 3,
                         results=min(step // 3, 3))
            panel.observe([shown, other], now)
            panel.show(shown, now)
        panel.observe([shown, other], NOW + 20)
        panel.show(other, NOW + 20)
        await until(pilot, lambda: panel.view.title == "H.OTHER")
        assert panel.view.sparkline_caption.endswith("last 2m: 3")
        assert sum(panel.view.sparkline) == 3
