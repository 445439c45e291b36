"""The hunts and clients screens driven by keys on the real console and its embedded server:
newest hunts first, a hunt made now selected, filters, widths, a client's detail and copy, and
the panel's sparkline for a hunt that finished while another was selected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from tests.console_driver import console, ready, type_text, until
from tests.console_seed import CLIENTS, seed
from tests.test_console_tables import clipboard_writes, notices, terminal_output
from velotui.screens.clients import COMPACT_COLUMNS as CLIENT_COMPACT_COLUMNS
from velotui.screens.clients import ClientsScreen
from velotui.screens.hunts import COLUMNS, COMPACT_COLUMNS, COUNT_COLUMNS, HuntsScreen
from velotui.screens.row_detail import RowDetailScreen
from velotui.widgets.filter_bar import FilterBar
from velotui.widgets.hunt_panel import HuntPanel
from velotui.widgets.live_table import LiveTable

pytestmark = pytest.mark.slow

# The seeded hunts, newest first.
NEWEST_FIRST = ["H.1M8F0000000C3", "H.1M8F0000000A1", "H.1M8F0000000B2"]


def hunts_table(app: Any) -> LiveTable:
    return app.screen.query_one("#hunts", LiveTable)


def row_keys(table: LiveTable) -> list[str]:
    return [str(table.coordinate_to_cell_key((n, 0)).row_key.value)
            for n in range(table.row_count)]


def cursor_key(table: LiveTable) -> str:
    return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)


def labels(table: LiveTable) -> list[str]:
    return [str(column.label) for column in table.ordered_columns]


async def test_a_hunt_created_while_the_console_is_open_goes_to_the_top(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = hunts_table(app)
        await until(pilot, lambda: row_keys(table) == NEWEST_FIRST, 10, "the seeded hunts")
        await pilot.press("j")  # on the second hunt
        await until(pilot, lambda: app.screen.query_one(HuntPanel).view.title
                    == NEWEST_FIRST[1], 10, "the second hunt in the panel")
        hunt = await app.api.create_hunt(query="SELECT * FROM info()", description="made now")
        hunt_id = hunt["hunt_id"]
        await until(pilot, lambda: row_keys(table) == [hunt_id, *NEWEST_FIRST], 10,
                    "the new hunt on top")
        # The cursor stayed on its hunt, which moved down a row; the panel still shows it.
        assert cursor_key(table) == NEWEST_FIRST[1]
        await pilot.pause()
        assert app.screen.query_one(HuntPanel).view.title == NEWEST_FIRST[1]

        # The new-hunt form asks for the hunt it made to be selected.
        app.screen.select_hunt(hunt_id)
        await until(pilot, lambda: cursor_key(table) == hunt_id, 10, "the new hunt selected")
        await until(pilot, lambda: app.screen.query_one(HuntPanel).view.title == hunt_id, 10,
                    "the new hunt in the panel")


async def test_select_hunt_waits_for_the_hunt_and_clears_a_filter_that_hides_it(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = hunts_table(app)
        await pilot.press("slash")
        await type_text(pilot, "cron")
        await pilot.press("enter")
        assert row_keys(table) == ["H.1M8F0000000B2"]
        hunt = await app.api.create_hunt(query="SELECT * FROM info()", description="made now")
        hunt_id = hunt["hunt_id"]
        # Asked before the app has heard of the hunt: it is selected when it arrives.
        app.screen.select_hunt(hunt_id)
        await until(pilot, lambda: row_keys(table) and cursor_key(table) == hunt_id, 10,
                    "the new hunt selected")
        assert row_keys(table) == [hunt_id, *NEWEST_FIRST]
        assert not app.screen.query_one(FilterBar).active
        await until(pilot, lambda: app.screen.query_one(HuntPanel).view.title == hunt_id, 10)


async def test_slash_filters_the_hunts_as_you_type_and_esc_clears(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = hunts_table(app)
        await pilot.press("slash", "r", "u", "n")
        # "run": the running hunt, and the one whose description says "Running processes".
        assert row_keys(table) == ["H.1M8F0000000C3", "H.1M8F0000000A1"]
        await pilot.press("n", "i", "n", "g", "space", "p")
        assert row_keys(table) == ["H.1M8F0000000C3"]
        await pilot.press("escape")
        assert row_keys(table) == NEWEST_FIRST
        assert app.focused is table

        await pilot.press("slash")
        await type_text(pilot, "H.1M8F0000000B")  # by ID
        await pilot.press("enter")
        assert row_keys(table) == ["H.1M8F0000000B2"]
        assert app.focused is table
        await until(pilot, lambda: app.screen.query_one(HuntPanel).view.title
                    == "H.1M8F0000000B2", 10, "the panel follows the filtered selection")
        await pilot.press("slash", "backspace")  # "H.1M8F0000000": every hunt, newest first
        assert row_keys(table) == NEWEST_FIRST
        await type_text(pilot, "nothing like it")
        assert table.row_count == 0
        assert "No hunt matches" in str(app.screen.query_one("#empty").render())
        await pilot.press("escape")
        assert row_keys(table) == NEWEST_FIRST
        assert isinstance(app.screen, HuntsScreen)


async def test_vi_keys_on_the_hunts_list_and_enter_opens_the_hunt(tmp_path: Path) -> None:
    from velotui.screens.hunt_detail import HuntDetailScreen

    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = hunts_table(app)
        await pilot.press("G")
        assert cursor_key(table) == NEWEST_FIRST[-1]
        await pilot.press("k")
        assert cursor_key(table) == NEWEST_FIRST[1]
        await pilot.press("g")
        assert cursor_key(table) == NEWEST_FIRST[0]
        await pilot.press("ctrl+d")
        assert cursor_key(table) == NEWEST_FIRST[-1]
        await pilot.press("ctrl+u")
        assert cursor_key(table) == NEWEST_FIRST[0]
        await pilot.press("j")
        await until(pilot, lambda: app.screen.query_one(HuntPanel).view.title
                    == NEWEST_FIRST[1], 10, "the panel")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen))
        assert app.screen.hunt_id == NEWEST_FIRST[1]


def fully_visible(screen: Any, table: LiveTable, columns: tuple[str, ...]) -> bool:
    """True when ``columns`` lie within the table's visible width, and the table on screen."""
    width = sum(table.columns[column].get_render_width(table) for column in columns)
    region = table.region
    return (width <= region.width - 1 and region.right <= screen.size.width
            and region.height >= 6)


async def test_the_hunts_table_shows_the_essentials_at_80_and_more_columns_wider(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        table = hunts_table(app)
        panel = app.screen.query_one(HuntPanel)
        assert labels(table) == list(COMPACT_COLUMNS)
        assert fully_visible(app.screen, table, ("ID", "State", "Done/All"))
        # Finished of taken on, then errors: 1 completed, 1 with results, 1 error of 3.
        assert str(table.get_cell("H.1M8F0000000A1", "Done/All")) == "3/3 1 err"
        assert str(table.get_cell("H.1M8F0000000C3", "Done/All")) == "0/0"
        # The panel is under the table, on screen, in its compact form.
        assert panel.region.y >= table.region.bottom
        assert panel.region.bottom <= 23 and panel.has_class("-compact")
        assert table.region.width == 80

        await pilot.press("j")  # the cursor stays on its hunt while the columns change
        await pilot.resize_terminal(120, 36)
        await until(pilot, lambda: labels(table) == list(COUNT_COLUMNS), 10, "count columns")
        assert cursor_key(table) == NEWEST_FIRST[1]
        assert str(table.get_cell("H.1M8F0000000A1", "Res")) == "1"
        assert fully_visible(app.screen, table, COUNT_COLUMNS[:-1])
        assert panel.region.x >= table.region.right  # beside the table
        assert not panel.has_class("-compact")

        await pilot.resize_terminal(160, 40)
        await until(pilot, lambda: labels(table) == list(COLUMNS), 10, "every column")
        assert fully_visible(app.screen, table, COLUMNS[:-1])
        assert str(table.get_cell("H.1M8F0000000A1", "Rate")) == "60/min"

        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: labels(table) == list(COMPACT_COLUMNS), 10, "compact")
        assert cursor_key(table) == NEWEST_FIRST[1]

        # Resized while another screen is on top: the home screen fits when it is back.
        home = app.screen
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
        await pilot.resize_terminal(120, 36)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is home)
        await until(pilot, lambda: labels(table) == list(COUNT_COLUMNS), 10, "count columns")
        await pilot.pause()
        assert panel.region.x >= table.region.right


async def test_a_hunt_that_finished_while_another_was_selected_has_its_completions(
    tmp_path: Path
) -> None:
    app = console(tmp_path / "datastore", demo=2)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("2 of 2"), 90, "the demo fleet")
        table = hunts_table(app)
        panel = app.screen.query_one(HuntPanel)
        first = await app.api.create_hunt(query="SELECT * FROM info()", description="first")
        await until(pilot, lambda: panel.view.title == first["hunt_id"], 10, "the first hunt")
        # A second hunt, listed (at 0 completions) while the first stays selected, then run.
        second = await app.api.create_hunt(query="SELECT * FROM info()", description="second")
        second_id = second["hunt_id"]
        await until(pilot, lambda: second_id in row_keys(table), 10, "the second hunt")
        await app.api.start_hunt(hunt_id=second_id)
        await until(pilot, lambda: app.hunts[second_id]["counts"]["results"] == 2, 60,
                    "the second hunt's results")
        await until(pilot, lambda: table.get_cell(second_id, "Done/All").plain == "2/2", 10)
        assert panel.view.title == first["hunt_id"]

        await pilot.press("g")  # the newest: the second hunt
        await until(pilot, lambda: panel.view.title == second_id, 10, "the second hunt shown")
        assert panel.view.sparkline_caption.endswith("last 2m: 2")
        assert sum(panel.view.sparkline) == pytest.approx(2)


async def test_clients_at_80_columns_show_labels_marking_the_agents(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
        table = app.screen.query_one("#clients", LiveTable)
        await until(pilot, lambda: table.row_count == len(CLIENTS), 10, "the clients")
        assert labels(table) == list(CLIENT_COMPACT_COLUMNS)
        assert fully_visible(app.screen, table, CLIENT_COMPACT_COLUMNS)
        db = "C.4d5e6f708192a3b4"
        assert str(table.get_cell(db, "Labels")) == "[Servers], [Finance]"
        await pilot.press("G", "plus")
        await type_text(pilot, "Triage")
        await pilot.press("enter")
        await until(pilot, lambda: str(table.get_cell(CLIENTS[-1][0], "Labels"))
                    == "[Workstations], Triage", 10, "the operator's label, unbracketed")
        await pilot.press("minus")  # the prompt says which labels can be removed
        await until(pilot, lambda: app.screen.query("#answer"))
        assert app.screen.query_one("#answer", Input).placeholder == "label (yours: Triage)"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))

        await pilot.resize_terminal(140, 36)
        await until(pilot, lambda: "First seen" in labels(table), 10, "every column")
        assert labels(table)[-1] == "Labels"


async def test_y_copies_the_selected_hunt_as_json(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        written = terminal_output(app)
        table = hunts_table(app)
        await until(pilot, lambda: row_keys(table) == NEWEST_FIRST, 10, "the seeded hunts")
        await pilot.press("j", "y")
        [copied] = clipboard_writes(written)
        hunt = json.loads(copied)
        assert hunt["hunt_id"] == NEWEST_FIRST[1]
        assert hunt == json.loads(json.dumps(app.hunts[NEWEST_FIRST[1]], default=str))
        assert notices(app)[-1] == f"copied hunt {NEWEST_FIRST[1]} ({len(copied):,} characters)"


async def test_clients_filter_detail_and_copy(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        written = terminal_output(app)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
        screen = app.screen
        table = screen.query_one("#clients", LiveTable)
        await until(pilot, lambda: table.row_count == len(CLIENTS), 10, "the clients")

        await pilot.press("slash")
        await type_text(pilot, "finance")  # a label
        assert row_keys(table) == [CLIENTS[0][0], CLIENTS[1][0], CLIENTS[3][0]]
        await pilot.press("enter", "j")
        assert cursor_key(table) == CLIENTS[1][0]
        assert "3 of 5 clients shown" in str(screen.query_one("#summary").render())

        facts = {c["client_id"]: c for c in await app.api.list_clients()}[CLIENTS[1][0]]
        await pilot.press("y")
        [copied] = clipboard_writes(written)
        assert json.loads(copied) == facts
        assert notices(app)[-1] == f"copied client {CLIENTS[1][0]} ({len(copied)} characters)"

        await pilot.press("i")  # every fact (enter opens the client's page)
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen))
        names = [str(label.render()) for label in app.screen.query(".field-name")]
        assert names == list(facts)
        values = dict(zip(names, (str(v.render()) for v in app.screen.query(".field-value")),
                          strict=True))
        assert values["fqdn"] == "fin-wks-02.corp.example"
        assert json.loads(values["facts"]) == facts["facts"]
        await pilot.press("y")
        assert json.loads(clipboard_writes(written)[-1]) == facts
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)

        await pilot.press("escape")  # clears the filter first
        assert table.row_count == len(CLIENTS) and app.screen is screen
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))

