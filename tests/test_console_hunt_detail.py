"""A hunt's detail screen driven by keys with Pilot: tabs, tables, a row in full, copy, tally,
columns, filters, pages past 1,000 rows and the Query tab, on a real embedded server over a
datastore written through the data layer."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, TabbedContent, Tabs

from tests.console_driver import console, ready, type_text, until
from tests.console_seed import FAR_FUTURE, NOW
from tests.data_builder import DataBuilder
from velotui.screens.column_chooser import ColumnChooser
from velotui.screens.hunt_detail import MAX_CELL, PAGE_SIZE, HuntDetailScreen, result_columns
from velotui.screens.row_detail import RowDetailScreen
from velotui.screens.tally import TallyScreen
from velotui.server.data import Database
from velotui.server.data.flows import Ending
from velotui.server.datastore import Datastore
from velotui.widgets.vql_editor import VQLEditor

pytestmark = pytest.mark.slow
SIZE = (80, 24)  # the terminal every key here must work in

HUNT = "H.1M8F0000000E5"
CLIENTS = 4  # with results, each ROWS_EACH rows: 1,200 rows in all
ROWS_EACH = 300
ODD_CLIENT, ODD_ROW = 2, 7  # the one row whose User is not root
ERROR = "the collection failed: " + "permission denied on /proc/1/environ; " * 4


def command_line(row: int) -> str:
    return f"/usr/bin/proc-{row % 5} --config /etc/proc.conf " + "-v " * 40


def triage_hunt(root: Path) -> Path:
    """One hunt over five clients: four gave ROWS_EACH rows each (Pid, Name, User,
    CommandLine; one row of all has User mallory), the fifth failed with a long error."""
    datastore = Datastore.open(root)

    async def write() -> None:
        db = await Database.open(datastore.database_path)
        build = DataBuilder(db)
        await build.hunt(HUNT, "SELECT Pid, Name, User, CommandLine FROM pslist()",
                         created=NOW - 600, started=NOW - 590, description="triage me",
                         expires=FAR_FUTURE)
        for index in range(CLIENTS + 1):
            client_id = f"C.{index:016x}"
            await build.client(client_id, {"Hostname": f"host-{index}",
                                           "Fqdn": f"host-{index}.corp.example"},
                               first_seen=NOW - 3600, last_seen=NOW - 60)
            at = NOW - 500 + index
            await build.check(HUNT, client_id, matched=True, at=at)
            if index == CLIENTS:
                await build.collect(HUNT, client_id, created=at, started=at, finished=at + 1,
                                    logs=[(at + 1, "error", ERROR)], end=Ending("error", ERROR))
                continue
            rows = [{"Pid": 1000 + n, "Name": f"proc-{n % 5}",
                     "User": "mallory" if (index, n) == (ODD_CLIENT, ODD_ROW) else "root",
                     "CommandLine": command_line(n)} for n in range(ROWS_EACH)]
            await build.collect(HUNT, client_id, created=at, started=at, finished=at + 1,
                                batches=[rows[:150], rows[150:]],
                                logs=[(at + 1, "info", f"collected {ROWS_EACH} rows")])
        await db.close()

    writer = threading.Thread(target=asyncio.run, args=(write(),))  # works from a loop too
    writer.start()
    writer.join()
    return datastore.root


@pytest.fixture
def datastore(tmp_path: Path) -> Path:
    return triage_hunt(tmp_path / "datastore")


async def opened(pilot: Pilot[Any]) -> HuntDetailScreen:
    """The hunt opened from the hunts screen by enter, its results loaded."""
    app = pilot.app
    await ready(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen), 10, "the hunt")
    screen = app.screen
    assert isinstance(screen, HuntDetailScreen)
    await until(pilot, lambda: table(screen, "results").row_count == PAGE_SIZE, 30,
                "the first page of results")
    return screen


def table(screen: HuntDetailScreen, tab: str) -> DataTable[Any]:
    return screen.query_one(f"#{tab}-table", DataTable)


def text(screen: Any, selector: str) -> str:
    return str(screen.query_one(selector).render())


def columns(grid: DataTable[Any]) -> list[str]:
    return [str(column.key.value) for column in grid.ordered_columns]


def cursor_column(grid: DataTable[Any]) -> str:
    return str(grid.coordinate_to_cell_key(grid.cursor_coordinate).column_key.value)


async def to_column(pilot: Pilot[Any], grid: DataTable[Any], name: str) -> None:
    """The cursor moved right, key by key, onto column ``name``."""
    while cursor_column(grid) != name:
        before = grid.cursor_coordinate
        await pilot.press("right")
        assert grid.cursor_coordinate != before, f"no column {name!r} to the right"


def results_status(screen: HuntDetailScreen) -> str:
    return text(screen, "#results-page")


async def test_number_keys_switch_tabs_and_arrows_move_in_the_table(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        tabs = screen.query_one("#tabs", TabbedContent)
        for key, tab in [("2", "clients"), ("3", "results"), ("4", "log"), ("5", "query"),
                         ("1", "overview")]:
            await pilot.press(key)
            await until(pilot, lambda tab=tab: tabs.active == tab, 10, tab)
            assert not isinstance(app.focused, Tabs)
        await pilot.press("3")
        await until(pilot, lambda: tabs.active == "results")
        results = table(screen, "results")
        assert app.focused is results
        await pilot.press("down", "down", "right")
        assert (results.cursor_coordinate.row, results.cursor_coordinate.column) == (2, 1)
        await pilot.press("left", "up")
        assert (results.cursor_coordinate.row, results.cursor_coordinate.column) == (1, 0)
        assert tabs.active == "results"  # arrows never switched the tab
        await pilot.press("2")
        await until(pilot, lambda: table(screen, "clients").row_count == CLIENTS + 1)
        clients = table(screen, "clients")
        assert app.focused is clients
        await pilot.press("down", "right", "left")
        assert tabs.active == "clients" and clients.cursor_coordinate.row == 1
        await pilot.press("4")
        await until(pilot, lambda: table(screen, "log").row_count > 0)
        assert app.focused is table(screen, "log")
        await pilot.press("escape")  # back to the hunts
        await until(pilot, lambda: not isinstance(app.screen, HuntDetailScreen))


async def test_enter_opens_a_row_in_full_and_y_copies_it(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("3")
        results = table(screen, "results")
        # The query's own columns first, ClientId and Fqdn pinned at the left, FlowId last.
        assert columns(results) == ["ClientId", "Fqdn", "Pid", "Name", "User", "CommandLine",
                                    "FlowId"]
        assert results.fixed_columns == 2
        await to_column(pilot, results, "CommandLine")
        shown = str(results.get_cell_at(results.cursor_coordinate))
        assert len(shown) == MAX_CELL and shown.endswith("…")  # clipped in the table
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), 10, "the row")
        detail = app.screen
        assert isinstance(detail, RowDetailScreen)
        assert detail.column == "CommandLine"
        assert detail.row["CommandLine"] == command_line(0)  # whole in the detail
        assert detail.row["ClientId"] == "C.0000000000000000"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)

        await pilot.press("y")  # the cell under the cursor
        assert json.loads(app.clipboard) == command_line(0)
        await pilot.press("Y")  # the whole row
        assert json.loads(app.clipboard)["Pid"] == 1000

        await pilot.press("2")
        clients = table(screen, "clients")
        await until(pilot, lambda: clients.row_count == CLIENTS + 1)
        await pilot.press("G", "enter")  # the last client: the one that failed
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), 10, "the client")
        assert app.screen.row["error"] == ERROR  # type: ignore[attr-defined]
        assert app.screen.row["client_id"] == f"C.{CLIENTS:016x}"  # type: ignore[attr-defined]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await pilot.press("y")
        assert json.loads(app.clipboard)["error"] == ERROR

        await pilot.press("4")
        log = table(screen, "log")
        await until(pilot, lambda: log.row_count == CLIENTS + 2)  # a line each, one error
        messages = [entry["message"] for entry in screen._log]
        await pilot.press(*["down"] * messages.index(ERROR), "enter")
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), 10, "the line")
        assert app.screen.row["message"] == ERROR  # type: ignore[attr-defined]


async def test_clients_tab_shows_the_error_at_80_columns(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("2")
        clients = table(screen, "clients")
        await until(pilot, lambda: clients.row_count == CLIENTS + 1)
        names = [str(column.label) for column in clients.ordered_columns]
        assert names[-1] == "Error"
        # Where the error column starts: within the screen, with room to read some of it.
        start = sum(column.get_render_width(clients) for column in clients.ordered_columns[:-1])
        assert start <= SIZE[0] - 20
        assert str(clients.get_row_at(CLIENTS)[-1]).startswith("the collection failed")


async def test_the_tables_follow_the_terminals_width(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot)
        await pilot.press("2")
        clients = table(screen, "clients")
        await until(pilot, lambda: clients.row_count == CLIENTS + 1)
        assert "State" in [str(column.label) for column in clients.ordered_columns]
        assert str(table(screen, "results").get_row_at(0)[0]) == "C.0000000000000000"
        await pilot.resize_terminal(*SIZE)
        await until(pilot, lambda: "State" not in [str(column.label)
                                                   for column in clients.ordered_columns])
        await until(pilot, lambda: clients.row_count == CLIENTS + 1)
        assert str(clients.get_row_at(0)[0]) == "C.0000000…"
        assert str(table(screen, "results").get_row_at(0)[0]) == "C.0000000…"


async def test_tally_counts_every_row_and_a_value_filters_the_results(datastore: Path
                                                                      ) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("3")
        results = table(screen, "results")
        await to_column(pilot, results, "User")
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, TallyScreen), 30, "the tally")
        tally = app.screen
        assert isinstance(tally, TallyScreen)
        # Across all 1,200 rows, not the page in view; most frequent first.
        assert [(v["value"], v["rows"], v["clients"]) for v in tally.values] == [
            ("root", CLIENTS * ROWS_EACH - 1, CLIENTS), ("mallory", 1, 1)]
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.screen is screen)
        await until(pilot, lambda: results.row_count == 1, 30, "the odd one out")
        assert str(results.get_row_at(0)[columns(results).index("User")]) == "mallory"
        assert str(results.get_row_at(0)[0]) == "C.0000000…"  # pinned narrow: clipped
        status = results_status(screen)
        assert "User = 'mallory' (esc clears)" in status and "rows 1-1 of 1" in status
        await pilot.press("escape")  # clears the value, stays on the screen
        await until(pilot, lambda: "of 1,200" in results_status(screen), 30, "all rows")
        assert app.screen is screen and "User =" not in results_status(screen)


async def test_v_chooses_the_columns_for_as_long_as_the_screen_lives(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("3", "v")
        await until(pilot, lambda: isinstance(app.screen, ColumnChooser), 10, "the chooser")
        # ClientId, Fqdn, Pid, Name: untick Name and Fqdn.
        await pilot.press("down", "space", "down", "down", "space", "enter")
        await until(pilot, lambda: app.screen is screen)
        results = table(screen, "results")
        expected = ["ClientId", "Pid", "User", "CommandLine", "FlowId"]
        assert columns(results) == expected
        assert results.fixed_columns == 1
        await pilot.press("right_square_bracket")  # another page: still the chosen columns
        await until(pilot, lambda: "rows 101-200" in results_status(screen), 30, "page two")
        assert columns(results) == expected


async def test_slash_filters_on_the_server_and_esc_clears(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("3", "slash")
        await type_text(pilot, "mallory")
        results = table(screen, "results")
        await until(pilot, lambda: "rows 1-1 of 1 " in results_status(screen), 30, "filtered")
        assert results.row_count == 1
        await pilot.press("enter")  # keeps the filter, focus back on the table
        assert app.focused is results
        await pilot.press("escape")  # clears it
        await until(pilot, lambda: "of 1,200" in results_status(screen), 30, "all rows")
        assert app.screen is screen

        await pilot.press("2", "slash")
        await type_text(pilot, "host-3")
        clients = table(screen, "clients")
        await until(pilot, lambda: text(screen, "#clients-filter").startswith(
            "clients 1-1 of 1 in all queues"), 30, "one client")
        assert [str(key.value) for key in clients.rows] == [f"C.{3:016x}"]
        await pilot.press("escape")
        await until(pilot, lambda: text(screen, "#clients-filter").startswith(
            f"clients 1-{CLIENTS + 1} of {CLIENTS + 1}"), 30, "every client")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HuntDetailScreen))


async def test_results_page_past_1000_rows(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("3")
        results = table(screen, "results")
        assert "rows 1-100 of 1,200" in results_status(screen)
        await pilot.press(*["right_square_bracket"] * 12)  # one past the last page: it stays
        await until(pilot, lambda: "rows 1,101-1,200 of 1,200" in results_status(screen), 30,
                    "the last page")
        assert results.row_count == PAGE_SIZE
        await pilot.press("G", "Y")
        last = json.loads(app.clipboard)
        assert (last["ClientId"], last["Pid"]) == (f"C.{CLIENTS - 1:016x}", 1000 + ROWS_EACH - 1)
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "rows 1,001-1,100 of 1,200" in results_status(screen), 30)


async def run_query(pilot: Pilot[Any], screen: HuntDetailScreen) -> str:
    status = screen.query_one("#query-status")
    before = status.render()
    await pilot.press("ctrl+r")
    await until(pilot, lambda: status.render() is not before and "running" not in
                str(status.render()), 30, "the query's answer")
    return str(status.render())


async def test_the_query_tab_runs_vql_over_the_hunt(datastore: Path) -> None:
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("5")
        editor = screen.query_one("#query-editor", VQLEditor)
        query = table(screen, "query")
        await until(pilot, lambda: app.focused is query)
        assert editor.text == "SELECT * FROM hunt_results()"

        said = await run_query(pilot, screen)  # 1,200 rows, cut at 1,000
        assert said == "first 1,000 rows: the query was cut at the limit"
        assert query.row_count == 1000 and app.focused is query

        await pilot.press("i", "end")
        await type_text(pilot, " WHERE")
        said = await run_query(pilot, screen)
        assert "line 1, col" in said and query.row_count == 1000  # the last answer stays
        assert screen.query_one("#query-status").has_class("-error")

        await pilot.press(*["backspace"] * len(" WHERE"))
        await type_text(pilot, " WHERE Name = 'proc-3'")
        said = await run_query(pilot, screen)
        assert said == f"{CLIENTS * ROWS_EACH // 5:,} rows"
        assert app.focused is query
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen), 10, "the row")
        assert app.screen.row["Name"] == "proc-3"  # type: ignore[attr-defined]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)

        await to_column(pilot, query, "ClientId")
        await pilot.press("t")  # counted from the rows the query returned
        await until(pilot, lambda: isinstance(app.screen, TallyScreen), 10, "the tally")
        assert [(v["rows"], v["clients"]) for v in app.screen.values] == [  # type: ignore
            (ROWS_EACH // 5, 1)] * CLIENTS
        await pilot.press("enter")  # the first client
        await until(pilot, lambda: app.screen is screen)
        assert query.row_count == ROWS_EACH // 5
        assert "ClientId = 'C.0000000000000000' (esc clears)" in text(screen, "#query-status")
        await pilot.press("y")
        assert json.loads(app.clipboard) == "C.0000000000000000"
        await pilot.press("escape")
        assert query.row_count == CLIENTS * ROWS_EACH // 5

        await pilot.press("i")  # back in the editor: a query that is refused
        assert app.focused is editor.text_area
        await pilot.press(*["backspace"] * len(" WHERE Name = 'proc-3'"))
        await pilot.press(*["backspace"] * len("hunt_results()"))
        await type_text(pilot, "glob(globs='/etc/*')")
        said = await run_query(pilot, screen)
        assert "glob" in said and screen.query_one("#query-status").has_class("-error")
        await pilot.press("escape")  # leaves the editor for the table, not the screen
        assert app.screen is screen and app.focused is query
        await pilot.press("3")  # the number keys switch tabs from the table again
        await until(pilot, lambda: screen.query_one("#tabs", TabbedContent).active == "results")



async def test_a_long_log_says_it_shows_the_newest_lines(datastore: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("velotui.screens.hunt_detail.LOG_LINES", 3)  # of the hunt's 5
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("4")
        log = table(screen, "log")
        await until(pilot, lambda: log.row_count == 3, 30, "the log")
        status = screen.query_one("#log-status")
        assert status.display and text(screen, "#log-status").startswith("the newest 3 lines")
        assert screen._log[-1]["message"] == ERROR  # the newest kept, the oldest dropped


def test_results_columns_put_the_querys_own_between_the_pinned_and_the_trailing() -> None:
    rows = [{"ClientId": "C.1", "Fqdn": "a", "FlowId": "F.1", "_Source": "Linux.Sys.Users",
             "User": "root", "Uid": 0},
            {"ClientId": "C.2", "Fqdn": "b", "FlowId": "F.2", "Shell": "/bin/sh"}]
    assert result_columns(rows) == ["ClientId", "Fqdn", "User", "Uid", "Shell", "FlowId",
                                    "_Source"]
