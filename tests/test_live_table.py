"""Live tables: a keyed diff that touches only changed cells and keeps the cursor on its row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from velotui.widgets.live_table import LiveTable, sync_table

COLUMNS = (("Name", "name"), ("Count", "count"), ("State", "state"))


class TableApp(App[None]):
    """One live table filling an 80x24 screen; records the rows it is told are highlighted."""

    def __init__(self) -> None:
        super().__init__()
        self.highlighted: list[str] = []

    def compose(self) -> ComposeResult:
        table = LiveTable(cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.highlighted.append(str(event.row_key.value))


def row_keys(table: DataTable[Any]) -> list[str]:
    """Row keys in the order the table shows them."""
    return [str(table.coordinate_to_cell_key((index, 0)).row_key.value)
            for index in range(table.row_count)]


def texts(cells: Sequence[Any]) -> list[str]:
    """Cells as the text they show (LiveTable keeps strings as plain Text)."""
    return [str(cell) for cell in cells]


def shown(table: DataTable[Any]) -> dict[str, list[str]]:
    return {key: texts(table.get_row(key)) for key in row_keys(table)}


def cursor_key(table: DataTable[Any]) -> str:
    return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)


def count_updates(table: DataTable[Any]) -> list[tuple[str, str]]:
    """Wrap the table's update_cell so each call is recorded as (row key, column key)."""
    calls: list[tuple[str, str]] = []
    original = table.update_cell

    def update_cell(row_key: Any, column_key: Any, value: Any, **kwargs: Any) -> None:
        calls.append((str(getattr(row_key, "value", row_key)),
                      str(getattr(column_key, "value", column_key))))
        original(row_key, column_key, value, **kwargs)

    table.update_cell = update_cell  # type: ignore[method-assign]
    return calls


def rows_of(count: int, value: int = 0) -> dict[str, Sequence[str]]:
    return {f"r{index:03d}": (f"row {index}", str(value + index), "running")
            for index in range(count)}


async def test_sync_adds_updates_and_removes_by_key() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync({"a": ("alpha", "1", "running"), "b": ("beta", "2", "paused")})
        await pilot.pause()
        assert shown(table) == {"a": ["alpha", "1", "running"], "b": ["beta", "2", "paused"]}
        # The first rows put the cursor on a row: the screen hears of it once.
        assert app.highlighted == ["a"]

        table.sync({"b": ("beta", "3", "running"), "c": ("gamma", "0", "paused")})
        await pilot.pause()
        assert shown(table) == {"b": ["beta", "3", "running"], "c": ["gamma", "0", "paused"]}


async def test_only_changed_cells_are_updated() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        rows: dict[str, Sequence[str]] = {"a": ("alpha", "1", "running"),
                                          "b": ("beta", "2", "running")}
        table.sync(rows)
        calls = count_updates(table)

        table.sync(dict(rows))
        assert calls == []

        table.sync({"a": ("alpha", "1", "running"), "b": ("beta", "7", "running")})
        assert calls == [("b", "count")]
        await pilot.pause()
        assert texts(table.get_row("b")) == ["beta", "7", "running"]


async def test_a_style_change_alone_is_an_update() -> None:
    """Rich's Text equality ignores the base style; a state turning red must still be drawn."""
    app = TableApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(LiveTable)
        table.sync({"a": ("alpha", "1", Text("running", style="green"))})
        calls = count_updates(table)
        table.sync({"a": ("alpha", "1", Text("running", style="green"))})
        assert calls == []
        table.sync({"a": ("alpha", "1", Text("running", style="red"))})
        assert calls == [("a", "state")]


async def test_cursor_stays_on_its_row_while_rows_change_around_it() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync({key: (key, "0", "running") for key in "abcd"})
        table.move_cursor(row=1)
        await pilot.pause()
        assert cursor_key(table) == "b"
        app.highlighted.clear()

        # The row before the cursor goes, values change, a new row arrives.
        table.sync({"b": ("b", "5", "running"), "c": ("c", "6", "paused"),
                    "d": ("d", "7", "running"), "e": ("e", "1", "running")})
        await pilot.pause()
        assert cursor_key(table) == "b"
        assert row_keys(table) == ["b", "c", "d", "e"]

        # The cursor on the last row while an earlier row goes: it stays on its row too.
        table.move_cursor(row=3)
        await pilot.pause()
        app.highlighted.clear()
        table.sync({"c": ("c", "6", "paused"), "d": ("d", "7", "running"),
                    "e": ("e", "2", "running")})
        await pilot.pause()
        assert cursor_key(table) == "e"
        # The highlighted row did not change, so the screen is not told it did.
        assert all(key == "e" for key in app.highlighted)


async def test_removing_the_cursor_row_highlights_its_neighbour_once() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync({key: (key, "0", "running") for key in "abc"})
        table.move_cursor(row=1)
        await pilot.pause()
        app.highlighted.clear()

        table.sync({key: (key, "0", "running") for key in "ac"})
        await pilot.pause()
        assert cursor_key(table) == "c"
        assert app.highlighted == ["c"]


async def test_scroll_position_is_kept_while_rows_change() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync(rows_of(80))
        await pilot.pause()
        table.move_cursor(row=50)
        await pilot.pause()
        scrolled = table.scroll_y
        assert scrolled > 0

        rows = rows_of(80, value=100)
        del rows["r000"]  # a row above the cursor goes
        table.sync(rows)
        await pilot.pause()
        assert cursor_key(table) == "r050"
        assert table.scroll_y == scrolled
        assert str(table.get_row("r050")[1]) == "150"


async def test_existing_rows_keep_their_order_and_new_rows_come_in_order_given() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(LiveTable)
        table.sync({"a": ("a",), "b": ("b",)})
        table.sync({"y": ("y",), "b": ("b",), "x": ("x",), "a": ("a",)})
        assert row_keys(table) == ["a", "b", "y", "x"]
        # Missing trailing cells show as empty.
        assert texts(table.get_row("y")) == ["y", "", ""]


async def test_columns_widen_for_grown_values() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync({"a": ("alpha", "9", "running")})
        await pilot.pause()
        table.sync({"a": ("alpha", "1234567890", "running")})
        await pilot.pause()
        assert table.columns["count"].content_width >= len("1234567890")


async def test_rows_cleared_behind_its_back_come_back() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(LiveTable)
        rows: Mapping[str, Sequence[str]] = {"a": ("alpha", "1", "running")}
        table.sync(rows)
        table.clear()
        table.sync(rows)
        assert shown(table) == {"a": ["alpha", "1", "running"]}


async def test_sync_table_works_on_a_plain_data_table_and_refuses_extra_cells() -> None:
    class PlainApp(App[None]):
        def compose(self) -> ComposeResult:
            table: DataTable[Any] = DataTable()
            table.add_columns("One", "Two")
            yield table

    app = PlainApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(DataTable)
        sync_table(table, {"k": ("1", "2")})
        assert texts(table.get_row("k")) == ["1", "2"]
        with pytest.raises(ValueError, match="3 cells"):
            sync_table(table, {"k": ("1", "2", "3")})


async def test_text_is_shown_as_it_is_never_read_as_markup() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(LiveTable)
        table.sync({"a": ("[/]", "[bold red]x", "running")})
        await pilot.pause()  # drawn: "[/]" read as markup would fail here
        table.sync({"a": ("[/]", "[bold red]y", "[i]")})
        await pilot.pause()
        assert shown(table) == {"a": ["[/]", "[bold red]y", "[i]"]}
        assert all(not cell.spans for cell in table.get_row("a"))  # no style slipped in
