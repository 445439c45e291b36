"""One hunt in full: its spec and counts, its clients, its results, a query over them, its log.

Each tab's table has the focus while the tab shows (the tab strip never takes it), so arrows
move in the table and only the number keys switch tabs. Every row opens in full with enter and
is copied with ``y``; a results column is stacked with ``t`` and a value chosen there filters the
results to it, the usual way to find the odd one out across a fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.events import Resize
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Label, Static, TabbedContent, TabPane, Tabs
from textual.worker import Worker

from velotui.clipboard import copy_json
from velotui.display import duration, rate, size, utc, utc_seconds
from velotui.screens.column_chooser import ColumnChooser
from velotui.screens.hunt_actions import HUNT_BINDINGS, HuntActions
from velotui.screens.hunt_edit import max_errors_text
from velotui.screens.operator_keys import role_refuses
from velotui.screens.row_detail import RowDetailScreen
from velotui.screens.tally import TallyScreen
from velotui.server.errors import ServiceError
from velotui.server.hunts import QUEUES
from velotui.vql.values import cell_text
from velotui.widgets.filter_bar import FilterBar
from velotui.widgets.live_table import LiveTable, NavigableTable, plain
from velotui.widgets.vql_editor import VQLEditor, VQLTextArea

QUEUE_NAMES = {"not_matched": "not matched"}
FILTERS = (None, "pending", "running", "completed", "results", "errors", "not_matched")
PAGE_SIZE = 100  # rows of the clients and results tabs at a time: loading one stays cheap
FOLLOW_INTERVAL = 1.0  # seconds between reloads of a tab following a running hunt's counts
FILTER_DELAY = 0.25  # seconds of quiet in the filter before the server is asked
TALLY_LIMIT = 1000  # values of a stacked column at most (most frequent first)
QUERY_LIMIT = 1000  # rows of a query at most
QUERY_PREFILL = "SELECT * FROM hunt_results()"
MAX_VALUE_SHOWN = 200  # characters of a parameter's value in the overview (the export has all)
MAX_CELL = 40  # characters of a result cell in a table (enter shows it whole)
MAX_MESSAGE = 200  # characters of a log message in the table
LOG_LINES = 500  # the newest log lines shown (the tab says so when there are more)
WIDE = 100  # terminal columns from which every clients column shows unclipped

# Tab panes in key order: 1-4 stay what they always were, the query tab is 5.
TABS = ("overview", "clients", "results", "log", "query")
CLIENT_COLUMNS = ("Client", "Host", "Queue", "State", "Rows", "Bytes", "Took", "Error")
# At 80 columns: the flow's state (the queue says nearly as much) and bytes go, the ID and host
# are clipped, so the error is on screen.
NARROW_CLIENT_COLUMNS = ("Client", "Host", "Queue", "Rows", "Took", "Error")
PINNED = ("ClientId", "Fqdn")  # results columns kept at the left, narrow
TRAILING = ("FlowId", "_Source")  # results columns after the query's own
# Pinned columns' widths (narrow terminal, wide terminal).
PINNED_WIDTH = {"ClientId": (10, 18), "Fqdn": (14, 28)}


def counts_text(counts: dict[str, int]) -> str:
    return "   ".join(f"{QUEUE_NAMES.get(q, q)} [b]{counts[q]}[/b]" for q in QUEUES)


def artifacts_text(artifacts: list[dict[str, Any]]) -> Text:
    """The artifacts a hunt collects, each with the value of every parameter it ran with (one
    line each: a value of several lines shows its first and how many there are)."""
    text = Text()
    for artifact in artifacts:
        if text:
            text.append("\n")
        text.append(str(artifact["name"]), "bold")
        prefix = f"{artifact['name']}/"
        sources = [str(s).removeprefix(prefix) for s in artifact.get("sources") or []
                   if s != artifact["name"]]
        if sources:
            text.append(f"  sources: {', '.join(sources)}", "dim")
        parameters = artifact.get("parameters") or {}
        width = max((len(str(name)) for name in parameters), default=0)
        for name, value in parameters.items():
            text.append(f"\n  {name!s:<{width}}  ")
            lines = str(value).splitlines() or [""]
            if not lines[0] and len(lines) == 1:
                text.append("(empty)", "dim")
                continue
            shown = lines[0][:MAX_VALUE_SHOWN]
            text.append(shown)
            if len(lines) > 1 or len(lines[0]) > len(shown):
                text.append(f" … ({len(lines)} lines)" if len(lines) > 1 else " …", "dim")
        if not parameters:
            text.append("\n  no parameters", "dim")
    return text


def clip(text: str, width: int) -> str:
    """``text`` on one line and at most ``width`` characters, ending in … when cut."""
    text = text.replace("\r\n", "↵").replace("\n", "↵")
    return text if len(text) <= width else text[:width - 1] + "…"


def client_cells(client: dict[str, Any], narrow: bool = False) -> list[str]:
    """A hunt client's cells: ``CLIENT_COLUMNS``, or ``NARROW_CLIENT_COLUMNS`` when narrow."""
    queue = QUEUE_NAMES.get(client["queue"], client["queue"])
    error = client["error"] or ""
    if narrow:
        return [clip(client["client_id"], 10), clip(client["hostname"] or "-", 14), queue,
                str(client["rows"]), duration(client["duration"]), clip(error, 200)]
    return [
        client["client_id"],
        client["hostname"] or "-",
        queue,
        client["state"] or "-",
        str(client["rows"]),
        size(client["bytes"]) if client["bytes"] else "-",
        duration(client["duration"]),
        clip(error, 200),
    ]


def result_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of ``rows`` in the order shown: ClientId and Fqdn, the query's own columns
    in the order it gave them, then FlowId and _Source."""
    seen = list(dict.fromkeys(key for row in rows for key in row))
    own = [column for column in seen if column not in PINNED and column not in TRAILING]
    return ([c for c in PINNED if c in seen] + own + [c for c in TRAILING if c in seen])


def in_order(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its fields in the order the table shows them (see ``result_columns``)."""
    return {column: row[column] for column in result_columns([row])}


def tally_rows(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """Rows counted by the text of their ``column`` cell ("" without one), as the server
    tallies a hunt's results: most frequent first, ties by value, each with the number of
    distinct clients (by ``ClientId``) that gave it."""
    counts: Counter[str] = Counter()
    clients: dict[str, set[Any]] = {}
    for row in rows:
        value = cell_text(row.get(column))
        counts[value] += 1
        clients.setdefault(value, set()).add(row.get("ClientId"))
    ordered = sorted(counts, key=lambda value: (-counts[value], value))
    return [{"value": value, "rows": counts[value], "clients": len(clients[value] - {None})}
            for value in ordered]


def value_shown(value: str) -> str:
    return repr(clip(value, 30))


class HuntDetailScreen(HuntActions, Screen[None]):
    """Overview, Clients, Results, Log and Query of one hunt."""

    CSS_PATH = "hunt_detail.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("1", "tab('overview')", "Overview", id="tab-overview", show=False),
        Binding("2", "tab('clients')", "Clients", id="tab-clients", show=False),
        Binding("3", "tab('results')", "Results", id="tab-results", show=False),
        Binding("4", "tab('log')", "Log", id="tab-log", show=False),
        Binding("5", "tab('query')", "Query", id="tab-query", show=False),
        Binding("slash", "filter_rows", "Filter", id="filter-rows"),
        Binding("t", "tally", "Tally", id="tally"),
        Binding("v", "choose_columns", "Columns", id="columns"),
        Binding("y", "copy", "Copy", id="copy"),
        Binding("Y", "copy_row", "Copy row", id="copy-row", show=False),
        Binding("ctrl+r", "run_query", "Run", id="run-query"),
        Binding("i", "edit_query", "Edit", id="edit-query"),
        Binding("f", "filter", "Queue", id="filter"),
        Binding("w", "why", "Why", id="why"),
        Binding("left_square_bracket", "page(-1)", "Prev page", id="prev-page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", id="next-page", show=False),
        *HUNT_BINDINGS,
    ]

    def __init__(self, hunt_id: str) -> None:
        super().__init__()
        self.hunt_id = hunt_id
        self.filter_index = 0
        self.page = 0
        self.clients_page = 0
        self.total_rows = 0
        self.clients_total = 0
        self.clients_filter = ""
        self.results_filter = ""
        self.results_value: tuple[str, str] | None = None  # (column, value) a tally chose
        self._clients: dict[str, dict[str, Any]] = {}  # the page shown, by client ID
        self._results: list[dict[str, Any]] = []  # the page shown, whole
        self._results_hidden: set[str] = set()  # columns the chooser took away
        self._results_known: list[str] = []  # every results column seen, in order
        self._log: list[dict[str, Any]] = []
        self._query_rows: list[dict[str, Any]] | None = None  # None: no query run yet
        self._query_note = ""
        self._query_hidden: set[str] = set()
        self._query_value: tuple[str, str] | None = None
        self._narrow: bool | None = None  # the clients columns drawn: narrow or wide
        self._drawn_counts: dict[str, int] | None = None
        self._stale: set[str] = set()  # groups to load again once their load in flight ends
        self._followed_at: dict[str, float] = {}  # when each group last loaded for new counts
        self._follow_timers: dict[str, Timer] = {}
        self._last_seen: dict[str, Any] = {}

    @property
    def selected_hunt_id(self) -> str | None:
        return self.hunt_id

    @property
    def hunt(self) -> dict[str, Any]:
        """The hunt as the app holds it; once deleted, as it was last seen (the screen closes
        as soon as it is on top)."""
        hunt = self.app.hunts.get(self.hunt_id)
        if hunt is not None:
            self._last_seen = hunt
        return hunt or self._last_seen

    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="overview"):
            with TabPane("1 Overview", id="overview"), VerticalScroll(id="overview-scroll"):
                yield Static("", id="spec")
                yield Static("", id="errors")
                if self.hunt.get("artifacts"):
                    yield Label("Artifacts", classes="heading")
                    yield Static(artifacts_text(self.hunt["artifacts"]), id="artifacts")
                    yield Label("Collection (compiled from the artifacts)", classes="heading")
                else:
                    yield Label("Collection", classes="heading")
                yield VQLTextArea(self.hunt["query"], read_only=True, id="query")
                yield Label("Client-side condition", classes="heading")
                yield VQLTextArea(self.hunt["client_condition"], read_only=True,
                                  id="client_condition")
                yield Label("Server-side condition", classes="heading")
                yield VQLTextArea(self.hunt["server_condition"] or "-- none", read_only=True,
                                  id="server_condition")
            with TabPane("2 Clients", id="clients"):
                yield FilterBar(id="clients-filter-bar")
                yield Static("", id="clients-filter")
                yield LiveTable(id="clients-table", cursor_type="row", zebra_stripes=True)
            with TabPane("3 Results", id="results"):
                yield FilterBar(id="results-filter-bar")
                yield Static("", id="results-page")
                yield NavigableTable(id="results-table", cursor_type="cell", zebra_stripes=True)
            with TabPane("4 Log", id="log"):
                yield Static(f"the newest {LOG_LINES:,} lines (the export holds every one)",
                             id="log-status")
                log = NavigableTable(id="log-table", cursor_type="row", zebra_stripes=True)
                log.add_columns("Time (UTC)", "Client", "Level", "Message")
                yield log
            with TabPane("5 Query", id="query"):
                yield VQLEditor(QUERY_PREFILL, id="query-editor")
                yield Static("ctrl+r runs the query over this hunt's results", id="query-status",
                             markup=False)
                yield NavigableTable(id="query-table", cursor_type="cell", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.hunt_id}  {self.hunt['description']}"
        # The tab strip takes no focus: arrows belong to the tables, the number keys to tabs.
        for tabs in self.query(Tabs):
            tabs.can_focus = False
        self._draw_client_columns()
        self.redraw()
        self.load_errors()
        self.load_clients()
        self.load_results()
        self.load_log()
        self._focus_tab("overview")

    def on_resize(self, event: Resize) -> None:
        """Tables follow the terminal's width: narrower columns below ``WIDE``."""
        if self._draw_client_columns():
            self.load_clients()
            self.load_log()
            self._draw_results()
            if self._query_rows is not None:
                self._draw_query()

    def _draw_client_columns(self) -> bool:
        """Give the clients table the columns that fit the terminal; True when they changed."""
        narrow = self.app.size.width < WIDE
        if narrow == self._narrow:
            return False
        self._narrow = narrow
        table = self.query_one("#clients-table", LiveTable)
        table.clear(columns=True)
        table.add_columns(*(NARROW_CLIENT_COLUMNS if narrow else CLIENT_COLUMNS))
        return True

    def on_hunts_changed(self) -> None:
        self.redraw()

    def on_screen_resume(self) -> None:
        if self.hunt_id not in self.app.hunts:  # deleted while a dialog was on top
            self.dismiss(None)

    def redraw(self) -> None:
        hunt = self.hunt
        active = self.active_tab
        if active == "overview":  # drawing a hidden tab would cost a layout of the screen
            self.query_one("#spec", Static).update(self._spec_text(hunt))
        if hunt["counts"] != self._drawn_counts:
            if self._drawn_counts is not None and \
                    hunt["counts"]["errors"] != self._drawn_counts["errors"]:
                self._follow("errors")
            self._drawn_counts = dict(hunt["counts"])
            # Only the tab in view follows the counts; the others load when shown.
            if active in ("clients", "results"):
                self._follow(active)

    def _follow(self, group: str) -> None:
        """Load ``group`` again for new counts: at most once per FOLLOW_INTERVAL, and never
        while its load is in flight (not cancelling that one either, so a busy server still
        gets each answer through and loads never pile up): then once it has ended."""
        busy = any(worker.group == group and worker.node is self and not worker.is_finished
                   for worker in self.workers)
        wait = self._followed_at.get(group, -FOLLOW_INTERVAL) + FOLLOW_INTERVAL \
            - time.monotonic()
        if busy or group in self._follow_timers or wait > 0:
            self._stale.add(group)
            if not busy and group not in self._follow_timers:
                self._follow_timers[group] = self.set_timer(wait, lambda: self._due(group))
            return
        self._followed_at[group] = time.monotonic()
        {"errors": self.load_errors, "clients": self.load_clients,
         "results": self.load_results}[group]()

    def _due(self, group: str) -> None:
        self._follow_timers.pop(group, None)
        if group in self._stale:
            self._stale.discard(group)
            self._follow(group)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if event.worker.is_finished and group in self._stale \
                and group not in self._follow_timers:
            self._stale.discard(group)
            self._follow(group)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id or ""
        if pane == "overview":
            self.query_one("#spec", Static).update(self._spec_text(self.hunt))
        loaders = {"clients": self.load_clients, "results": self.load_results,
                   "log": self.load_log}
        loader = loaders.get(pane)
        if loader is not None:
            loader()
        self._focus_tab(pane)
        self.refresh_bindings()

    def _focus_tab(self, pane: str) -> None:
        """Focus the tab's table, in the query tab too (``i`` goes to its editor), so the
        number keys always switch tabs and arrows always move in a table."""
        if pane == "overview":
            self.query_one("#overview-scroll").focus()
        elif pane:
            self.query_one(f"#{pane}-table").focus()

    @staticmethod
    def _spec_text(hunt: dict[str, Any]) -> str:
        state = hunt["state"] + (f" ({hunt['stop_reason']})" if hunt.get("stop_reason") else "")
        return "\n".join([
            f"[b]{hunt['hunt_id']}[/b]  {state}",
            f"{hunt['description'] or '(no description)'}",
            f"created {utc(hunt['created'])} UTC by {hunt['creator'] or '?'}",
            (f"starts {utc(hunt['start_at'])}" if hunt.get("start_at")
             else f"started {utc(hunt['started'])}") + f"   expires {utc(hunt['expires'])}"
            + (f"   stopped {utc(hunt['stopped'])}" if hunt.get("stopped") else "")
            + (f"   archived {utc(hunt['archived'])}" if hunt.get("archived") else ""),
            f"rate {rate(hunt['rate'])}   client limit {hunt['limit'] or 'none'}"
            + (f"   max errors {errors}" if (errors := max_errors_text(hunt)) != "0" else "")
            + "   timeout"
            f" {duration(hunt['timeout'])}   max rows {hunt['max_rows'] or 'none'}   max upload"
            f" {size(hunt['max_upload_bytes']) if hunt['max_upload_bytes'] else 'none'}",
            "",
            counts_text(hunt["counts"]),
        ])

    @work(exclusive=True, group="errors")
    async def load_errors(self) -> None:
        """Why the hunt's clients in errors are there (a server-side condition that fails
        shows here, not only in the log)."""
        hunt = await self.app.call("get_hunt", hunt_id=self.hunt_id)
        if hunt is None:
            return
        lines = [f"[b]errors[/b] {error['clients']} client{'s' if error['clients'] != 1 else ''}"
                 f": {escape(error['reason'])}" for error in hunt.get("errors", [])]
        self.query_one("#errors", Static).update("\n".join(lines))

    # Keys ---------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that mean nothing in the tab shown are hidden from the footer and do nothing;
        those the operator's role may not use are greyed out."""
        if role_refuses(self, action):
            return None
        tabs = {
            "filter_rows": ("clients", "results"),
            "page": ("clients", "results"),
            "tally": ("results", "query"),
            "choose_columns": ("results", "query"),
            "copy": ("clients", "results", "log", "query"),
            "copy_row": ("clients", "results", "log", "query"),
            "run_query": ("query",),
            "edit_query": ("query",),
            "why": ("clients",),
        }.get(action)
        if tabs is None:
            return True
        try:
            return self.active_tab in tabs
        except NoMatches:  # asked before the tabs are composed
            return True

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def action_back(self) -> None:
        """Esc undoes the nearest thing first: leaves the query editor, drops the value a
        tally chose, clears the filter; only then leaves the screen."""
        active = self.active_tab
        editor = self.query_one("#query-editor", VQLEditor)
        if active == "query" and editor.text_area.has_focus:
            self.query_one("#query-table").focus()
        elif active == "query" and self._query_value is not None:
            self._query_value = None
            self._draw_query()
        elif active == "results" and self.results_value is not None:
            self.results_value = None
            self.page = 0
            self.load_results()
        elif active in ("clients", "results") and self._filter_bar(active).clear():
            pass  # a filter was on: cleared, the screen stays
        else:
            self.dismiss(None)

    def _filter_bar(self, tab: str) -> FilterBar:
        return self.query_one(f"#{tab}-filter-bar", FilterBar)

    def action_filter_rows(self) -> None:
        self._filter_bar(self.active_tab).open()

    @on(FilterBar.Changed, "#clients-filter-bar")
    def _clients_filter_changed(self, event: FilterBar.Changed) -> None:
        if event.value == self.clients_filter:
            return
        self.clients_filter = event.value
        self.clients_page = 0
        self.load_clients(delay=FILTER_DELAY)

    @on(FilterBar.Changed, "#results-filter-bar")
    def _results_filter_changed(self, event: FilterBar.Changed) -> None:
        if event.value == self.results_filter:
            return
        self.results_filter = event.value
        self.page = 0
        self.load_results(delay=FILTER_DELAY)

    # Rows in full and copied --------------------------------------------------------------------

    def _row_under_cursor(self) -> tuple[str, Mapping[str, Any], str | None] | None:
        """The row of the table in view under its cursor: a title, the whole row, and the
        column under the cursor (for tables with a cell cursor). None when the table is empty."""
        active = self.active_tab
        if active not in ("clients", "results", "log", "query"):
            return None
        table = self.query_one(f"#{active}-table", DataTable)
        if table.row_count == 0:
            return None
        row_key, column_key = table.coordinate_to_cell_key(table.cursor_coordinate)
        key = str(row_key.value)
        column = str(column_key.value) if table.cursor_type == "cell" else None
        if active == "clients":
            client = self._clients[key]
            return f"{client['client_id']} in {self.hunt_id}", client, None
        if active == "log":
            entry = self._log[int(key)]
            return f"log of {self.hunt_id} at {utc_seconds(entry['time'])}", entry, "message"
        if active == "results":
            number = self.page * PAGE_SIZE + int(key) + 1
            return f"row {number:,} of {self.hunt_id}", in_order(self._results[int(key)]), column
        assert self._query_rows is not None
        return f"query row {int(key) + 1:,}", in_order(self._query_rows[int(key)]), column

    def _open_detail(self) -> None:
        found = self._row_under_cursor()
        if found is not None:
            title, row, column = found
            self.app.push_screen(RowDetailScreen(title, row, column))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open_detail()

    @on(DataTable.CellSelected)
    def _cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self._open_detail()

    def action_copy(self) -> None:
        """The cell under the cursor where the cursor is on cells (results, query), else the
        row; as in a row's detail."""
        found = self._row_under_cursor()
        if found is None:
            self.notify("Nothing to copy: the table is empty.", severity="warning")
            return
        _title, row, column = found
        if column is not None and self.active_tab != "log":
            copy_json(self.app, row.get(column), what=column)
        else:
            self.action_copy_row()

    def action_copy_row(self) -> None:
        found = self._row_under_cursor()
        if found is None:
            self.notify("Nothing to copy: the table is empty.", severity="warning")
            return
        what = "client" if self.active_tab == "clients" else "row"
        copy_json(self.app, dict(found[1]), what=what)

    # Clients ------------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(FILTERS)
        self.clients_page = 0
        self.action_tab("clients")
        self.load_clients()

    @work(exclusive=True, group="why")
    async def action_why(self) -> None:
        """Where the selected client stands in the hunt and why, in plain words (explained
        by the server)."""
        from velotui.screens.client_why import ClientWhyScreen

        table = self.query_one("#clients-table", LiveTable)
        if self.active_tab != "clients" or table.row_count == 0:
            self.notify("No client selected: the clients tab is empty.", severity="warning")
            return
        client_id = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        answer = await self.app.call("explain_hunt_client", hunt_id=self.hunt_id,
                                     client_id=client_id)
        if answer is not None and self.is_current:
            self.app.push_screen(ClientWhyScreen(answer))

    @work(exclusive=True, group="clients")
    async def load_clients(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)  # typing on cancels this load: one ask per pause
        queue = FILTERS[self.filter_index]
        offset = self.clients_page * PAGE_SIZE
        page = await self.app.call("hunt_clients_page", hunt_id=self.hunt_id, queue=queue,
                                   offset=offset, limit=PAGE_SIZE, filter=self.clients_filter)
        if page is None:
            return
        clients = page["clients"]
        self.clients_total = page["total"]
        shown = QUEUE_NAMES.get(queue, queue) if queue else "all queues"
        first = offset + 1 if clients else 0
        self.query_one("#clients-filter", Static).update(Text(
            f"clients {first:,}-{offset + len(clients):,} of {self.clients_total:,} in {shown}"
            "  (/ filter, f queue, [ ] page)", no_wrap=True, overflow="ellipsis"),
            layout=False)  # one line
        self._clients = {client["client_id"]: client for client in clients}
        narrow = bool(self._narrow)
        self.query_one("#clients-table", LiveTable).sync(
            {client["client_id"]: client_cells(client, narrow) for client in clients})

    # Results ------------------------------------------------------------------------------------

    def action_page(self, step: int) -> None:
        """The next or previous page of the clients tab when it shows, else of the results."""
        if self.active_tab == "clients":
            last_page = max((self.clients_total - 1) // PAGE_SIZE, 0)
            self.clients_page = min(max(self.clients_page + step, 0), last_page)
            self.load_clients()
            return
        last_page = max((self.total_rows - 1) // PAGE_SIZE, 0)
        self.page = min(max(self.page + step, 0), last_page)
        self.action_tab("results")
        self.load_results()

    @work(exclusive=True, group="results")
    async def load_results(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)  # typing on cancels this load: one ask per pause
        column, value = self.results_value or (None, None)
        page = await self.app.call("hunt_results_page", hunt_id=self.hunt_id,
                                   offset=self.page * PAGE_SIZE, limit=PAGE_SIZE,
                                   filter=self.results_filter, column=column, value=value)
        if page is None:
            return
        self.total_rows = page["total"]
        self._results = page["rows"]
        for known in result_columns(self._results):
            if known not in self._results_known:
                self._results_known.append(known)
        self._draw_results()
        rows = self._results
        first = self.page * PAGE_SIZE + 1 if rows else 0
        parts = []
        if self.results_value is not None:
            parts.append(f"{column} = {value_shown(value)} (esc clears)")
        parts.append(f"rows {first:,}-{self.page * PAGE_SIZE + len(rows):,} of"
                     f" {self.total_rows:,}")
        self.query_one("#results-page", Static).update(Text(
            "  ".join(parts) + "  ([ ] page, / filter, t tally, v columns)", no_wrap=True,
            overflow="ellipsis"), layout=False)  # one line

    def _draw_results(self) -> None:
        table = self.query_one("#results-table", NavigableTable)
        columns = [c for c in result_columns(self._results) if c not in self._results_hidden]
        fill_table(table, self._results, columns, pinned=self.app.size.width < WIDE)

    # Tally, columns: the results and the query tab ---------------------------------------------

    def action_tally(self) -> None:
        table = self.query_one(f"#{self.active_tab}-table", DataTable)
        if table.row_count == 0:
            self.notify("Nothing to tally: the table is empty.", severity="warning")
            return
        column = str(table.coordinate_to_cell_key(table.cursor_coordinate).column_key.value)
        if self.active_tab == "query":
            rows = self._query_rows or []
            note = f"over the {len(rows):,} rows the query returned"
            self.app.push_screen(TallyScreen(column, tally_rows(rows, column), note),
                                 lambda value: self._query_value_chosen(column, value))
        else:
            self.tally_results(column)

    @work(exclusive=True, group="tally")
    async def tally_results(self, column: str) -> None:
        """Count every row of the hunt (within the filter) by ``column``, then offer the
        values: the one chosen filters the results."""
        tally = await self.app.call("tally_hunt_results", hunt_id=self.hunt_id, column=column,
                                    filter=self.results_filter, limit=TALLY_LIMIT)
        if tally is None:
            return
        note = (f"{tally['rows']:,} row{'s' if tally['rows'] != 1 else ''},"
                f" {tally['distinct']:,} distinct value{'s' if tally['distinct'] != 1 else ''}")
        if self.results_filter:
            note += f", matching {self.results_filter!r}"
        if tally["truncated"]:
            note += f"; the {TALLY_LIMIT:,} most frequent shown"
        self.app.push_screen(TallyScreen(column, tally["values"], note),
                             lambda value: self._results_value_chosen(column, value))

    def _results_value_chosen(self, column: str, value: str | None) -> None:
        if value is None:
            return
        self.results_value = (column, value)
        self.page = 0
        self.load_results()

    def _query_value_chosen(self, column: str, value: str | None) -> None:
        if value is None:
            return
        self._query_value = (column, value)
        self._draw_query()

    def action_choose_columns(self) -> None:
        if self.active_tab == "query":
            known = result_columns(self._query_rows or [])
            hidden = self._query_hidden
        else:
            # Every column any page showed, in the table's order.
            known = result_columns([dict.fromkeys(self._results_known)])
            hidden = self._results_hidden
        if not known:
            self.notify("No columns yet: the table is empty.", severity="warning")
            return
        shown = [column for column in known if column not in hidden]

        def chosen(columns: list[str] | None) -> None:
            if columns is None:
                return
            hidden.clear()
            hidden.update(column for column in known if column not in columns)
            self._draw_query() if self.active_tab == "query" else self._draw_results()

        self.app.push_screen(ColumnChooser(known, shown), chosen)

    # Query --------------------------------------------------------------------------------------

    def action_edit_query(self) -> None:
        self.query_one("#query-editor", VQLEditor).focus()

    def action_run_query(self) -> None:
        editor = self.query_one("#query-editor", VQLEditor)
        if not editor.text.strip():
            self._query_status("Nothing to run: write a query first.", error=True)
            return
        self._query_status("running…")
        self.run_query(editor.text)

    def _query_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#query-status", Static)
        status.update(text)
        status.set_class(error, "-error")

    @work(exclusive=True, group="query")
    async def run_query(self, query: str) -> None:
        """Run ``query`` on the server over this hunt; its rows go to the table, a refusal
        (a malformed query says where) to the line under the editor."""
        try:
            answer = await self.app.api.query_hunt(hunt_id=self.hunt_id, query=query,
                                                   limit=QUERY_LIMIT)
        except ServiceError as error:
            self._query_status(str(error), error=True)
            return
        rows = answer["rows"]
        self._query_rows = rows
        self._query_value = None
        if answer["truncated"]:
            self._query_note = (f"first {answer['limit']:,} rows: the query was cut at the"
                                " limit")
        else:
            self._query_note = f"{len(rows):,} row{'s' if len(rows) != 1 else ''}"
        self._draw_query()
        if self.active_tab == "query" and rows:
            self.query_one("#query-table").focus()

    def _draw_query(self) -> None:
        rows = self._query_rows or []
        # Keyed by their places in the whole answer, so detail and copy find them filtered too.
        shown = {str(index): row for index, row in enumerate(rows)}
        note = self._query_note
        if self._query_value is not None:
            column, value = self._query_value
            shown = {key: row for key, row in shown.items()
                     if cell_text(row.get(column)) == value}
            note = f"{column} = {value_shown(value)} (esc clears): {len(shown):,} of {note}"
        columns = [c for c in result_columns(rows) if c not in self._query_hidden]
        fill_table(self.query_one("#query-table", NavigableTable), shown, columns,
                   pinned=self.app.size.width < WIDE)
        self._query_status(note)

    # Log ----------------------------------------------------------------------------------------

    @work(exclusive=True, group="log")
    async def load_log(self) -> None:
        entries = await self.app.call("hunt_log", hunt_id=self.hunt_id, limit=LOG_LINES + 1)
        if entries is None:
            return
        # One more than shown asked for: whether the log is longer than the tab shows.
        self.query_one("#log-status").display = len(entries) > LOG_LINES
        entries = entries[-LOG_LINES:]
        self._log = entries
        table = self.query_one("#log-table", DataTable)
        cursor = table.cursor_coordinate
        table.clear()
        client_width = 18 if self.app.size.width >= WIDE else 10  # the message needs room
        for index, entry in enumerate(entries):
            table.add_row(utc_seconds(entry["time"]), clip(entry["client_id"], client_width),
                          plain(entry["level"]),
                          plain(clip(entry["message"] or "", MAX_MESSAGE)), key=str(index))
        if entries:
            table.move_cursor(row=min(cursor.row, len(entries) - 1))


def fill_table(table: DataTable[Any], rows: list[dict[str, Any]] | dict[str, dict[str, Any]],
               columns: list[str], *, pinned: bool) -> None:
    """Show ``rows`` (a list keyed by position, or rows by key) in ``columns``, cells clipped;
    ClientId and Fqdn first and fixed, narrower when ``pinned`` (a narrow terminal). The
    cursor stays on the same row number and column name where it can."""
    keyed = rows if isinstance(rows, dict) else {str(i): row for i, row in enumerate(rows)}
    before = table.cursor_coordinate
    before_column = None
    if table.row_count and table.columns:
        before_column = table.coordinate_to_cell_key(before).column_key.value
    same_columns = [str(column.key.value) for column in table.ordered_columns] == columns
    table.clear(columns=not same_columns)
    if not same_columns:
        for column in columns:
            table.add_column(plain(column), key=column)
    widths = {column: PINNED_WIDTH[column][0 if pinned else 1] for column in PINNED}
    fixed = 0
    for column in columns:
        if column not in PINNED:
            break
        fixed += 1
    table.fixed_columns = fixed
    for key, row in keyed.items():
        table.add_row(*(plain(clip(cell_text(row.get(column)), widths.get(column, MAX_CELL)))
                        for column in columns), key=key)
    if keyed and columns:
        column_index = columns.index(before_column) if before_column in columns else 0
        table.move_cursor(row=min(before.row, len(keyed) - 1), column=column_index)
