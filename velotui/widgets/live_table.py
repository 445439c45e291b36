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
rows under the operator's cursor is exactly what this module exists to avoid, unless the caller
asks for it (`ordered=True`): then the rows are put in the order given and the cursor follows
its row (the hunts list keeps newest first that way, a hunt created now going to the top).

Every table in the console is a `NavigableTable`: the vi-style keys an operator of k9s or lazygit
reaches for (j/k, g/G, ctrl+d/ctrl+u) move the cursor as the arrow and page keys do.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.render import measure
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, CellKey, RowKey

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


def _put_in_order(table: DataTable[Any], keys: Sequence[str]) -> bool:
    """Order the table's rows as ``keys`` gives them (every row key once); True when it moved
    any. What `DataTable.sort` does, with the order given rather than computed from cells."""
    locations = {RowKey(key): index for index, key in enumerate(keys)}
    if all(table.get_row_index(row_key) == index for row_key, index in locations.items()):
        return False
    table._row_locations = TwoWayDict(locations)
    table._update_count += 1
    table.refresh()
    return True


def sync_table(
    table: DataTable[Any], rows: Mapping[str, Sequence[RenderableType | str]],
    *, ordered: bool = False,
) -> None:
    """Make `table` show exactly `rows` (row key -> cells in column order) by a keyed diff.

    Only changed cells are updated (with their column widened if needed), new keys are appended
    in the order given, keys no longer in `rows` are removed; existing rows keep their order,
    unless ``ordered``: then every row is put in the order of ``rows``. The cursor stays on the
    same row key and the scroll position is left alone. A highlight message is posted only when
    the row under the cursor is a different one afterwards (its row was removed, or the table was
    empty), so a screen that follows highlights is not told about moves that did not change the
    selection.

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

        if ordered:
            _put_in_order(table, list(rows))

        if target_before is not None and target_before[0] in table.rows:
            # Rows removed above the cursor shift its row up; follow the row, not the index.
            # set_reactive moves it without the watcher's scroll-into-view, keeping the scroll.
            row_index = table.get_row_index(target_before[0])
            if row_index != table.cursor_coordinate.row:
                table.set_reactive(DataTable.cursor_coordinate, Coordinate(row_index, column_index))
                table.refresh()

    if _cursor_target(table) != target_before:
        _announce_cursor(table)


class NavigableTable(DataTable[Any]):
    """A DataTable with the vi-style moves besides the arrows: j/k down/up, g/G first/last row,
    ctrl+d/ctrl+u half a page down/up."""

    BINDINGS: list[BindingType] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First", show=False),
        Binding("G", "scroll_bottom", "Last", show=False),
        Binding("ctrl+d", "half_page_down", "Half page down", show=False),
        Binding("ctrl+u", "half_page_up", "Half page up", show=False),
    ]

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when there is none."""
        target = _cursor_target(self)
        if target is None or target.row_key.value is None:
            return None
        return str(target.row_key.value)

    def _half_page(self) -> int:
        """Rows in half the visible height (at least one)."""
        height = self.scrollable_content_region.height - (
            self.header_height if self.show_header else 0)
        return max(1, height // 2)

    def action_half_page_down(self) -> None:
        self._move_rows(self._half_page())

    def action_half_page_up(self) -> None:
        self._move_rows(-self._half_page())

    def _move_rows(self, delta: int) -> None:
        if self.row_count == 0:
            return
        if not self.show_cursor or self.cursor_type not in ("cell", "row"):
            self.scroll_relative(y=delta, animate=False)
            return
        row = min(max(self.cursor_coordinate.row + delta, 0), self.row_count - 1)
        self.move_cursor(row=row, animate=False)


class LiveTable(NavigableTable):
    """A DataTable that is updated in place from a mapping of rows (see `sync_table`)."""

    def sync(self, rows: Mapping[str, Sequence[RenderableType | str]], *,
             ordered: bool = False) -> None:
        """Show exactly `rows` (row key -> cells in column order), touching only what changed;
        with ``ordered``, in the order of ``rows`` (the cursor stays on its row).

        Raises ValueError when a row has more cells than the table has columns. Text is shown
        as it is, never read as markup."""
        sync_table(self, {key: [plain(cell) if isinstance(cell, str) else cell for cell in cells]
                          for key, cells in rows.items()}, ordered=ordered)
