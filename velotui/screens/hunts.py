"""The home screen: every hunt with its live counts, and the selected hunt's panel."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from velotui.display import rate, utc
from velotui.screens.hunt_actions import HUNT_BINDINGS, HuntActions
from velotui.widgets.hunt_panel import HuntPanel
from velotui.widgets.live_table import LiveTable

COLUMNS = ("ID", "State", "Description", "Pend", "Run", "Done", "Res", "Err", "No",
           "Created", "Rate", "Limit")


def hunt_cells(hunt: dict[str, Any]) -> list[str]:
    """One hunt as a row of the hunts table."""
    counts = hunt["counts"]
    return [
        hunt["hunt_id"],
        hunt["state"],
        hunt["description"] or "-",
        str(counts["pending"]),
        str(counts["running"]),
        str(counts["completed"]),
        str(counts["results"]),
        str(counts["errors"]),
        str(counts["not_matched"]),
        utc(hunt["created"]),
        rate(hunt["rate"]),
        str(hunt["limit"] or "-"),
    ]


class HuntsScreen(HuntActions, Screen[None]):
    """Hunts, updated in place as their counts change."""

    CSS_PATH = "hunts.tcss"
    BINDINGS = [
        Binding("q", "app.quit", "Quit", id="quit"),
        Binding("n", "new_hunt", "New", id="new"),
        Binding("enter", "open_hunt", "Open", id="open", show=True),
        *HUNT_BINDINGS,
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            table = LiveTable(id="hunts", cursor_type="row", zebra_stripes=True)
            table.add_columns(*COLUMNS)
            yield table
            yield HuntPanel(id="panel")
        yield Static("", id="empty")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self.query_one("#hunts", LiveTable).focus()

    def on_hunts_changed(self) -> None:
        self.redraw()

    def on_screen_resume(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        hunts = self.app.hunts_newest_first()
        table = self.query_one("#hunts", LiveTable)
        table.sync({hunt["hunt_id"]: hunt_cells(hunt) for hunt in hunts})
        empty = self.query_one("#empty", Static)
        message = "" if hunts else "No hunts yet. Press n to create one, ? for every key."
        if empty.content != message:  # redrawn many times a second during a hunt: no layout
            empty.update(message)
        empty.display = not hunts
        self._show_selected()

    def _show_selected(self) -> None:
        hunt_id = self.selected_hunt_id
        hunt = self.app.hunts.get(hunt_id) if hunt_id else None
        self.query_one(HuntPanel).show(hunt, self.app.clock())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_hunt()

    @property
    def selected_hunt_id(self) -> str | None:
        table = self.query_one("#hunts", LiveTable)
        if table.row_count == 0:
            return None
        try:
            key, _column = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:  # no cursor row yet
            return None
        return str(key.value) if key.value is not None else None

    def action_new_hunt(self) -> None:
        from velotui.screens.new_hunt import NewHuntScreen

        self.app.push_screen(NewHuntScreen())

    def action_open_hunt(self) -> None:
        from velotui.screens.hunt_detail import HuntDetailScreen

        if hunt_id := self._hunt_or_say_so():
            self.app.push_screen(HuntDetailScreen(hunt_id))
