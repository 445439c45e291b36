"""Stacking: how many rows (and clients) hold each value of one results column, most first.

The usual way to find the odd one out across a fleet: the value only two clients have is at the
bottom. Enter on a value gives it back to the screen below, which filters its results to it.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from velotui.widgets.filter_bar import FilterBar, matches
from velotui.widgets.live_table import LiveTable


def value_text(value: Any) -> str:
    """A tallied value as its text: a string as it is, anything else as JSON (null, 3, true)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class TallyScreen(ModalScreen[str | None]):
    """The values of ``column`` (each ``{"value", "rows", "clients"}``, as the server counts
    them); dismissed with the text of the value chosen by enter, or None (esc)."""

    CSS_PATH = "tally.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("slash", "filter", "Filter", id="filter"),
    ]

    def __init__(self, column: str, values: list[dict[str, Any]], note: str = "") -> None:
        super().__init__()
        self.column = column
        self.values = sorted(values, key=lambda v: (-int(v.get("rows") or 0),
                                                    -int(v.get("clients") or 0),
                                                    value_text(v.get("value"))))
        self.note = note
        self._texts = [value_text(v.get("value")) for v in self.values]

    def compose(self) -> ComposeResult:
        with Vertical(id="tally-frame"):
            yield Label(Text(f"Stack of {self.column}", no_wrap=True, overflow="ellipsis"),
                        id="tally-title")
            yield Static(self.note, id="tally-note", markup=False)
            table = LiveTable(id="tally-table", cursor_type="row", zebra_stripes=True)
            table.add_column("Value", key="value")
            table.add_column(Text("Rows", justify="right"), key="rows")
            table.add_column(Text("Clients", justify="right"), key="clients")
            yield table
            yield FilterBar(id="tally-filter")
            yield Static("enter filter the results to a value · / filter · esc back",
                         id="tally-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one("#tally-note").display = bool(self.note)
        self._show("")
        self.query_one("#tally-table", LiveTable).focus()

    def _show(self, needle: str) -> None:
        rows = {
            str(index): [text, Text(f"{int(v.get('rows') or 0):,}", justify="right"),
                         Text(f"{int(v.get('clients') or 0):,}", justify="right")]
            for index, (v, text) in enumerate(zip(self.values, self._texts, strict=True))
            if matches(needle, [text])
        }
        self.query_one("#tally-table", LiveTable).sync(rows, ordered=True)

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self._show(event.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.dismiss(self._texts[int(event.row_key.value)])

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_back(self) -> None:
        if not self.query_one(FilterBar).clear():
            self.dismiss(None)
