"""The home screen: every hunt with its live counts, newest first, and the selected hunt's panel.

The table adapts to the width. At 80 columns it shows what an operator scans for (ID, state,
one "Done/All" cell: clients finished of those taken on, then errors, and the description); wider
terminals give each queue its own column, then created, rate and limit. The description is last,
so a long one is what the screen's edge cuts. Narrower than `PANEL_BESIDE_WIDTH`, the panel goes
under the table in its compact form instead of beside it.

The state says what an operator must notice: a scheduled hunt counts down to its start (live,
once a second), a hunt that paused itself says why, one whose approval was asked for says it
awaits it (``P`` lists those). Archived hunts are left out until ``H`` shows them, marked as
archived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from velotui.clipboard import copy_json
from velotui.display import countdown, rate, utc
from velotui.screens.hunt_actions import HUNT_BINDINGS, HuntActions
from velotui.screens.operator_keys import role_refuses
from velotui.widgets.filter_bar import FilterBar, matches
from velotui.widgets.hunt_panel import HuntPanel, checked_count, finished_count
from velotui.widgets.live_table import LiveTable

# The screen is at least this wide for the panel to sit beside the table (else it goes under).
PANEL_BESIDE_WIDTH = 120
PANEL_WIDTH = 36
# The table is at least this wide for a column per queue, and this wide for created/rate/limit.
COUNT_COLUMNS_WIDTH = 84
ALL_COLUMNS_WIDTH = 120

COMPACT_COLUMNS = ("ID", "State", "Done/All", "Description")
COUNT_COLUMNS = ("ID", "State", "Pend", "Run", "Done", "Res", "Err", "No", "Description")
COLUMNS = ("ID", "State", "Pend", "Run", "Done", "Res", "Err", "No", "Created", "Rate",
           "Limit", "Description")


def progress_cell(hunt: dict[str, Any]) -> str:
    """Clients finished of those taken on, then errors if any: ``12/40``, ``38/40 2 err``."""
    text = f"{finished_count(hunt):,}/{checked_count(hunt):,}"
    errors = int(hunt["counts"].get("errors") or 0)
    return f"{text} {errors:,} err" if errors else text


def state_cell(hunt: dict[str, Any], now: float) -> str:
    """The state, and what goes with it: ``starts in 1h 59m`` for a scheduled hunt, the reason
    of a pause the operator did not ask for (``paused: error limit reached``), ``archived``."""
    state = hunt["state"]
    if hunt.get("archived"):
        return f"{state}, archived"
    if (hunt.get("approval") or {}).get("state") == "pending":
        return "awaiting approval"
    if state == "scheduled":
        return countdown(hunt.get("start_at"), now)
    reason = str(hunt.get("stop_reason") or "")
    if state == "paused" and reason and not reason.startswith("paused by"):
        return f"paused: {reason}"
    return state


CELLS: dict[str, Callable[[dict[str, Any], float], str]] = {
    "ID": lambda hunt, _now: hunt["hunt_id"],
    "State": state_cell,
    "Done/All": lambda hunt, _now: progress_cell(hunt),
    "Pend": lambda hunt, _now: str(hunt["counts"]["pending"]),
    "Run": lambda hunt, _now: str(hunt["counts"]["running"]),
    "Done": lambda hunt, _now: str(hunt["counts"]["completed"]),
    "Res": lambda hunt, _now: str(hunt["counts"]["results"]),
    "Err": lambda hunt, _now: str(hunt["counts"]["errors"]),
    "No": lambda hunt, _now: str(hunt["counts"]["not_matched"]),
    "Created": lambda hunt, _now: utc(hunt["created"]),
    "Rate": lambda hunt, _now: rate(hunt["rate"]),
    "Limit": lambda hunt, _now: str(hunt["limit"] or "-"),
    "Description": lambda hunt, _now: hunt["description"] or "-",
}


def columns_for(screen_width: int) -> tuple[str, ...]:
    """The hunts table's columns on a screen ``screen_width`` cells wide."""
    table_width = screen_width - (PANEL_WIDTH if screen_width >= PANEL_BESIDE_WIDTH else 0)
    if table_width >= ALL_COLUMNS_WIDTH:
        return COLUMNS
    if table_width >= COUNT_COLUMNS_WIDTH:
        return COUNT_COLUMNS
    return COMPACT_COLUMNS


def hunt_cells(hunt: dict[str, Any], columns: tuple[str, ...] = COLUMNS,
               now: float = 0.0) -> list[str]:
    """One hunt as a row of the hunts table with ``columns``, at time ``now``."""
    return [CELLS[column](hunt, now) for column in columns]


def hunt_matches(hunt: dict[str, Any], needle: str) -> bool:
    """The filter looks at the ID, state and description."""
    return matches(needle, [hunt["hunt_id"], hunt["state"], hunt["description"] or ""])


class HuntsScreen(HuntActions, Screen[None]):
    """Hunts, newest first, updated in place as their counts change."""

    CSS_PATH = "hunts.tcss"
    BINDINGS = [
        Binding("q", "app.quit", "Quit", id="quit"),
        Binding("n", "new_hunt", "New", id="new"),
        Binding("enter", "open_hunt", "Open", id="open", show=True),
        *HUNT_BINDINGS,
        Binding("H", "toggle_archived", "Archived", id="archived", show=False),
        Binding("P", "approvals", "Approvals", id="approvals", show=False),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("y", "copy", "Copy", id="copy", show=False),
        Binding("escape", "clear_filter", "Clear filter", id="clear-filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.columns: tuple[str, ...] = COMPACT_COLUMNS
        self._filter = ""
        self._wanted: str | None = None  # a hunt to select once it is in the list
        self.show_archived = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Container(id="body"):
            table = LiveTable(id="hunts", cursor_type="row", zebra_stripes=True)
            table.add_columns(*((column, column) for column in self.columns))
            yield table
            yield HuntPanel(id="panel")
        yield FilterBar(id="filter")
        yield Static("", id="empty")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys the operator's role may not use are greyed out (see ``operator_keys``)."""
        return None if role_refuses(self, action) else True

    def on_mount(self) -> None:
        self._fit_columns(self.app.size.width)
        self.redraw()
        self.query_one("#hunts", LiveTable).focus()
        if self.app.follow:  # snapshots draw the countdown once, at their fixed time
            self.set_interval(1.0, self._count_down)

    def _count_down(self) -> None:
        """A scheduled hunt's countdown moves on, though nothing was pushed."""
        if any(hunt["state"] == "scheduled" for hunt in self.app.hunts.values()):
            self.redraw()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns(event.size.width)

    def _fit_columns(self, width: int) -> None:
        """Lay the screen out for ``width``: the panel beside the table or under it (compact),
        and the columns that fit; the cursor stays on its hunt."""
        narrow = width < PANEL_BESIDE_WIDTH
        self.set_class(narrow, "-narrow")
        self.query_one(HuntPanel).set_class(narrow, "-compact")
        columns = columns_for(width)
        if columns == self.columns:
            return
        self.columns = columns
        table = self.query_one("#hunts", LiveTable)
        selected = self.selected_hunt_id
        table.clear(columns=True)
        table.add_columns(*((column, column) for column in columns))
        self._wanted = self._wanted or selected
        self.redraw()

    def on_hunts_changed(self) -> None:
        self.redraw()

    def on_screen_resume(self) -> None:
        # The terminal may have been resized while another screen was on top.
        self._fit_columns(self.app.size.width)
        self.redraw()

    def redraw(self) -> None:
        hunts = self.app.hunts_newest_first()
        panel = self.query_one(HuntPanel)
        # Every hunt's completions are noted, not only the selected one's: a hunt that finished
        # while another was selected has its sparkline right when it is selected.
        now = self.app.clock()
        panel.observe(hunts, now)
        wanted = self._wanted
        if wanted and self._filter and any(
                h["hunt_id"] == wanted and not hunt_matches(h, self._filter) for h in hunts):
            self._filter = ""  # the hunt asked for is shown, whatever the filter was
            self.query_one(FilterBar).clear()
        if wanted and not self.show_archived and any(
                h["hunt_id"] == wanted and h.get("archived") for h in hunts):
            self.show_archived = True  # likewise
        listed = [hunt for hunt in hunts if self.show_archived or not hunt.get("archived")]
        shown = [hunt for hunt in listed if hunt_matches(hunt, self._filter)]
        table = self.query_one("#hunts", LiveTable)
        table.sync({hunt["hunt_id"]: hunt_cells(hunt, self.columns, now) for hunt in shown},
                   ordered=True)
        if wanted and wanted in table.rows:
            self._wanted = None
            table.move_cursor(row=table.get_row_index(wanted))
        empty = self.query_one("#empty", Static)
        archived = len(hunts) - len(listed)
        if not hunts:
            message = "No hunts yet. Press n to create one, ? for every key."
        elif not listed:
            message = f"Every hunt is archived ({archived}): H shows them, n creates one."
        elif not shown:
            message = "No hunt matches the filter (esc clears it)."
        elif self.show_archived and any(hunt.get("archived") for hunt in hunts):
            message = "Archived hunts shown (H hides them)."
        else:
            message = ""
        if empty.content != message:  # redrawn many times a second during a hunt: no layout
            empty.update(message)
        empty.display = bool(message)
        self._show_selected()

    def select_hunt(self, hunt_id: str) -> None:
        """Put the cursor on ``hunt_id`` and show it in the panel (a hunt just created in the
        console), as soon as the app holds it; a filter that would hide it is cleared."""
        self._wanted = hunt_id
        self.redraw()

    def _show_selected(self) -> None:
        hunt_id = self.selected_hunt_id
        hunt = self.app.hunts.get(hunt_id) if hunt_id else None
        self.query_one(HuntPanel).show(hunt, self.app.clock())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_hunt()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self._filter = event.value
        self.redraw()

    @property
    def selected_hunt_id(self) -> str | None:
        return self.query_one("#hunts", LiveTable).selected_key

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_copy(self) -> None:
        """The selected hunt as the operator API gives it, as JSON (OSC 52)."""
        if (hunt_id := self._hunt_or_say_so()) and (hunt := self.app.hunts.get(hunt_id)):
            copy_json(self.app, hunt, what=f"hunt {hunt_id}")

    def action_toggle_archived(self) -> None:
        """Show the archived hunts too (marked as such), or hide them again."""
        self.show_archived = not self.show_archived
        self.redraw()
        if not self.show_archived:
            return
        if not any(hunt.get("archived") for hunt in self.app.hunts.values()):
            self.notify("No hunt is archived (A archives the selected one).")

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).clear()

    def action_approvals(self) -> None:
        """The hunts awaiting approval, each with its whole specification."""
        from velotui.screens.approvals import ApprovalsScreen

        self.app.push_screen(ApprovalsScreen())

    def action_new_hunt(self) -> None:
        from velotui.screens.new_hunt import NewHuntScreen

        self.app.push_screen(NewHuntScreen())

    def action_open_hunt(self) -> None:
        from velotui.screens.hunt_detail import HuntDetailScreen

        if hunt_id := self._hunt_or_say_so():
            self.app.push_screen(HuntDetailScreen(hunt_id))
