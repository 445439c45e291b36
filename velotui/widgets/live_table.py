"""Live tables: a DataTable kept equal to a mapping of rows by a keyed diff, never by clearing.

Counts on the hunts screen change many times a second while an operator reads them. Clearing and
refilling a DataTable would lose the cursor, jump the scroll position and repaint every cell, so
`sync_table` (Dolphie-style) touches only what changed: `update_cell` for changed cells, `add_row`
for new keys, `remove_row` for keys gone, all inside one batch so the screen repaints once.

Column widths follow the cells without measuring whole columns: the width of each cell shown is
remembered, a column grows to its widest changed cell, and is measured again (once) only when a
cell that may have been its widest became narrower. (DataTable's own `update_width` measures the
whole column for every cell that got narrower: a thousand rows changing at once took a minute.)

Row order: rows already in the table keep their place; new rows are appended at the end in the
order `rows` gives them. A different order of existing keys in `rows` is ignored, because moving
rows under the operator's cursor is exactly what this module exists to avoid (sort the table
explicitly with `DataTable.sort` when a new order is wanted).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.text import Text
from textual.coordinate import Coordinate
from textual.render import measure
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, CellKey

# What each table last showed, per row key: one signature per cell. Comparing these tuples skips
# unchanged rows with one comparison, without asking the table for every cell on every update.
_shown: WeakKeyDictionary[DataTable[Any], dict[str, tuple[Hashable, ...]]] = WeakKeyDictionary()
# The width of each cell shown, per row key (None: not known, the row was not added here).
_widths: WeakKeyDictionary[DataTable[Any], dict[str, tuple[int | None, ...]]] = WeakKeyDictionary()

# Stands in for a cell whose previous content is unknown, so it always counts as changed.
_UNKNOWN = object()

_HIGHLIGHT_MESSAGES = (
    DataTable.RowHighlighted,
    DataTable.CellHighlighted,
    DataTable.ColumnHighlighted,
)


def _signature(cell: Any) -> Any:
    """A value equal for two cells exactly when they look the same.

    Rich's `Text.__eq__` ignores the base style, so a state cell that only changes colour would
    be missed; the signature includes it. Other renderables compare with their own equality."""
    if isinstance(cell, Text):
        return (
            "text",
            cell.plain,
            str(cell.style),
            tuple(cell.spans),
            cell.justify,
            cell.overflow,
            cell.no_wrap,
        )
    return cell


def plain(value: str) -> Text:
    """``value`` as a table cell shown exactly as it is. DataTable reads a string cell as Rich
    markup: a host name, error or row value an agent sent could style the console, hide text,
    or (``[/]``) break drawing the table."""
    return Text(value, no_wrap=True, end="")


def _cell_width(console: Console, cell: Any) -> int:
    """The width DataTable gives ``cell`` (a string is read as markup, as it reads it)."""
    if isinstance(cell, str):
        if "[" not in cell and ":" not in cell:  # no markup, no emoji code: the common case
            text = cell
        else:
            try:
                text = Text.from_markup(cell).plain
            except Exception:  # not valid markup: measured as it stands
                text = cell
    elif isinstance(cell, Text):
        text = cell.plain
    else:
        return measure(console, cell, 1)
    return max(map(cell_len, text.splitlines()), default=0)


def _cursor_target(table: DataTable[Any]) -> CellKey | None:
    """The row and column keys under the cursor, or None when the table has no rows."""
    if table.row_count == 0 or not table.columns:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate)
    except CellDoesNotExist:
        return None


def _announce_cursor(table: DataTable[Any]) -> None:
    """Post the highlight message for whatever is under the cursor now.

    Used when a sync changed the highlighted row (its row was removed, or the table was empty),
    because the screen follows these messages to show the selected item."""
    if not table.show_cursor or table.row_count == 0:
        return
    coordinate = table.cursor_coordinate
    cell_key = table.coordinate_to_cell_key(coordinate)
    row_key, column_key = cell_key
    if table.cursor_type == "row":
        table.post_message(DataTable.RowHighlighted(table, coordinate.row, row_key))
    elif table.cursor_type == "cell":
        value = table.get_cell(row_key, column_key)
        table.post_message(DataTable.CellHighlighted(table, value, coordinate, cell_key))
    elif table.cursor_type == "column":
        table.post_message(DataTable.ColumnHighlighted(table, coordinate.column, column_key))


def sync_table(
    table: DataTable[Any], rows: Mapping[str, Sequence[RenderableType | str]]
) -> None:
    """Make `table` show exactly `rows` (row key -> cells in column order) by a keyed diff.

    Only changed cells are updated (with their column widened if needed), new keys are appended
    in the order given, keys no longer in `rows` are removed; existing rows keep their order.
    The cursor stays on the same row key and the scroll position is left alone. A highlight
    message is posted only when the row under the cursor is a different one afterwards (its row
    was removed, or the table was empty), so a screen that follows highlights is not told about
    moves that did not change the selection.

    Raises ValueError when a row has more cells than the table has columns.
    """
    columns = [column.key for column in table.ordered_columns]
    width = len(columns)
    shown = _shown.setdefault(table, {})
    shown_widths = _widths.setdefault(table, {})
    console = table.app.console
    target_before = _cursor_target(table)
    column_index = table.cursor_coordinate.column
    changed: list[tuple[str, int, Any]] = []  # (row key, column index, new cell)
    widest: dict[int, tuple[int, str]] = {}  # column index -> (width, row key) beyond the column
    narrowed: dict[int, str] = {}  # column index -> a row whose cell may have been its widest

    with table.app.batch_update(), table.prevent(*_HIGHLIGHT_MESSAGES):
        # Rows removed behind our back (clear(), remove_row()) are forgotten, so they come back.
        for key in [key for key in shown if key not in table.rows]:
            del shown[key]
            shown_widths.pop(key, None)

        for key, values in rows.items():
            if len(values) > width:
                raise ValueError(
                    f"row {key!r} has {len(values)} cells but the table has {width} columns"
                )
            # Missing trailing cells show as empty, as add_row would show them.
            cells = (*values, *([""] * (width - len(values))))
            signature = tuple(_signature(cell) for cell in cells)
            if key in table.rows:
                before = shown.get(key)
                if before is None:
                    # A row added by someone else: compare with what the table holds.
                    before = tuple(_signature(table.get_cell(key, column)) for column in columns)
                elif len(before) != width:
                    before = (_UNKNOWN,) * width
                if before != signature:
                    widths = list(shown_widths.get(key) or ())
                    widths += [None] * (width - len(widths))
                    for index, column in enumerate(columns):
                        if before[index] == signature[index]:
                            continue
                        cell_width = _cell_width(console, cells[index])
                        content_width = table.columns[column].content_width
                        old_width = widths[index]
                        if cell_width > content_width:
                            widest[index] = max(widest.get(index, (0, key)), (cell_width, key))
                        elif cell_width < content_width and (
                                old_width is None or old_width >= content_width):
                            narrowed.setdefault(index, key)
                        widths[index] = cell_width
                        changed.append((key, index, cells[index]))
                    shown_widths[key] = tuple(widths)
            else:
                table.add_row(*cells, key=key)
                shown_widths[key] = tuple(_cell_width(console, cell) for cell in cells)
            shown[key] = signature

        # One cell per column asks the table to fit the column: the widest that grew past it
        # (no measuring), else one that narrowed (the column is measured once).
        fitting = {(key, index) for index, (_width, key) in widest.items()}
        fitting |= {(key, index) for index, key in narrowed.items() if index not in widest}
        for key, index, cell in changed:
            table.update_cell(key, columns[index], cell, update_width=(key, index) in fitting)

        # Removed after adding, so the table is as long as it gets while rows go and the cursor
        # is clamped (and made to jump) as rarely as possible.
        gone = [row_key for row_key in table.rows if row_key.value not in rows]
        for row_key in gone:
            table.remove_row(row_key)
            shown.pop(str(row_key.value), None)
            shown_widths.pop(str(row_key.value), None)

        if target_before is not None and target_before[0] in table.rows:
            # Rows removed above the cursor shift its row up; follow the row, not the index.
            # set_reactive moves it without the watcher's scroll-into-view, keeping the scroll.
            row_index = table.get_row_index(target_before[0])
            if row_index != table.cursor_coordinate.row:
                table.set_reactive(DataTable.cursor_coordinate, Coordinate(row_index, column_index))
                table.refresh()

    if _cursor_target(table) != target_before:
        _announce_cursor(table)


class LiveTable(DataTable[Any]):
    """A DataTable that is updated in place from a mapping of rows (see `sync_table`)."""

    def sync(self, rows: Mapping[str, Sequence[RenderableType | str]]) -> None:
        """Show exactly `rows` (row key -> cells in column order), touching only what changed.

        Raises ValueError when a row has more cells than the table has columns. Text is shown
        as it is, never read as markup."""
        sync_table(self, {key: [plain(cell) if isinstance(cell, str) else cell for cell in cells]
                          for key, cells in rows.items()})
