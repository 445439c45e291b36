"""One hunt in full: its spec and counts, its clients, its results and its log."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Label, Static, TabbedContent, TabPane
from textual.worker import Worker

from velotui.display import duration, rate, size, utc, utc_seconds
from velotui.screens.hunt_actions import HUNT_BINDINGS, HuntActions
from velotui.server.hunts import QUEUES
from velotui.vql.values import cell_text
from velotui.widgets.live_table import LiveTable, plain
from velotui.widgets.vql_editor import VQLTextArea

QUEUE_NAMES = {"not_matched": "not matched"}
FILTERS = (None, "pending", "running", "completed", "results", "errors", "not_matched")
PAGE_SIZE = 100  # rows of the clients and results tabs at a time: loading one stays cheap
FOLLOW_INTERVAL = 1.0  # seconds between reloads of a tab following a running hunt's counts
CLIENT_COLUMNS = ("Client", "Host", "Queue", "State", "Rows", "Bytes", "Took", "Error")
MAX_VALUE_SHOWN = 200  # characters of a parameter's value in the overview (the export has all)


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


def client_cells(client: dict[str, Any]) -> list[str]:
    return [
        client["client_id"],
        client["hostname"] or "-",
        QUEUE_NAMES.get(client["queue"], client["queue"]),
        client["state"] or "-",
        str(client["rows"]),
        size(client["bytes"]) if client["bytes"] else "-",
        duration(client["duration"]),
        (client["error"] or "")[:60],
    ]


class HuntDetailScreen(HuntActions, Screen[None]):
    """Overview, Clients, Results and Log of one hunt."""

    CSS_PATH = "hunt_detail.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("1", "tab('overview')", "Overview", id="tab-overview", show=False),
        Binding("2", "tab('clients')", "Clients", id="tab-clients", show=False),
        Binding("3", "tab('results')", "Results", id="tab-results", show=False),
        Binding("4", "tab('log')", "Log", id="tab-log", show=False),
        Binding("f", "filter", "Filter", id="filter"),
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
        self._drawn_counts: dict[str, int] | None = None
        self._stale: set[str] = set()  # groups to load again once their load in flight ends
        self._followed_at: dict[str, float] = {}  # when each group last loaded for new counts
        self._follow_timers: dict[str, Timer] = {}

    @property
    def selected_hunt_id(self) -> str | None:
        return self.hunt_id

    @property
    def hunt(self) -> dict[str, Any]:
        return self.app.hunts[self.hunt_id]

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="overview"):
            with TabPane("1 Overview", id="overview"), VerticalScroll():
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
                yield Static("", id="clients-filter")
                clients = LiveTable(id="clients-table", cursor_type="row", zebra_stripes=True)
                clients.add_columns(*CLIENT_COLUMNS)
                yield clients
            with TabPane("3 Results", id="results"):
                yield Static("", id="results-page")
                yield DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
            with TabPane("4 Log", id="log"):
                log = DataTable(id="log-table", cursor_type="row", zebra_stripes=True)
                log.add_columns("Time (UTC)", "Client", "Level", "Message")
                yield log
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.hunt_id}  {self.hunt['description']}"
        self.redraw()
        self.load_errors()
        self.load_clients()
        self.load_results()
        self.load_log()

    def on_hunts_changed(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        hunt = self.hunt
        active = self.query_one("#tabs", TabbedContent).active
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
        if event.pane.id == "overview":
            self.query_one("#spec", Static).update(self._spec_text(self.hunt))
        loaders = {"clients": self.load_clients, "results": self.load_results,
                   "log": self.load_log}
        loader = loaders.get(event.pane.id or "")
        if loader is not None:
            loader()

    @staticmethod
    def _spec_text(hunt: dict[str, Any]) -> str:
        state = hunt["state"] + (f" ({hunt['stop_reason']})" if hunt.get("stop_reason") else "")
        return "\n".join([
            f"[b]{hunt['hunt_id']}[/b]  {state}",
            f"{hunt['description'] or '(no description)'}",
            f"created {utc(hunt['created'])} UTC by {hunt['creator'] or '?'}",
            f"started {utc(hunt['started'])}   expires {utc(hunt['expires'])}"
            + (f"   stopped {utc(hunt['stopped'])}" if hunt.get("stopped") else ""),
            f"rate {rate(hunt['rate'])}   client limit {hunt['limit'] or 'none'}   timeout"
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

    # Tabs ---------------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def action_back(self) -> None:
        self.dismiss(None)

    # Clients ------------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(FILTERS)
        self.clients_page = 0
        self.action_tab("clients")
        self.load_clients()

    def _clients_in_filter(self) -> int:
        """How many clients the filter holds, by the hunt's counts."""
        queue, hunt = FILTERS[self.filter_index], self.hunt
        if queue is not None:
            return int(hunt["counts"][queue])
        return sum(hunt["counts"].values()) + int(hunt.get("checking") or 0)

    @work(exclusive=True, group="clients")
    async def load_clients(self) -> None:
        queue = FILTERS[self.filter_index]
        offset = self.clients_page * PAGE_SIZE
        clients = await self.app.call("hunt_clients", hunt_id=self.hunt_id, queue=queue,
                                      offset=offset, limit=PAGE_SIZE)
        if clients is None:
            return
        shown = QUEUE_NAMES.get(queue, queue) if queue else "all queues"
        total = max(self._clients_in_filter(), offset + len(clients))
        first = offset + 1 if clients else 0
        self.query_one("#clients-filter", Static).update(
            f"clients {first}-{offset + len(clients)} of {total} in {shown}"
            "  (f: next queue, [ previous, ] next)", layout=False)  # one line
        self.query_one("#clients-table", LiveTable).sync(
            {client["client_id"]: client_cells(client) for client in clients})

    # Results ------------------------------------------------------------------------------------

    def action_page(self, step: int) -> None:
        """The next or previous page of the clients tab when it shows, else of the results."""
        if self.query_one("#tabs", TabbedContent).active == "clients":
            last_page = max((self._clients_in_filter() - 1) // PAGE_SIZE, 0)
            self.clients_page = min(max(self.clients_page + step, 0), last_page)
            self.load_clients()
            return
        last_page = max((self.total_rows - 1) // PAGE_SIZE, 0)
        self.page = min(max(self.page + step, 0), last_page)
        self.action_tab("results")
        self.load_results()

    @work(exclusive=True, group="results")
    async def load_results(self) -> None:
        page = await self.app.call("hunt_results_page", hunt_id=self.hunt_id,
                                   offset=self.page * PAGE_SIZE, limit=PAGE_SIZE)
        if page is None:
            return
        self.total_rows = page["total"]
        rows = page["rows"]
        table = self.query_one("#results-table", DataTable)
        table.clear(columns=True)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table.add_columns(*map(plain, columns))
        for row in rows:
            table.add_row(*(plain(cell_text(row.get(column))[:80]) for column in columns))
        first = self.page * PAGE_SIZE + 1 if rows else 0
        self.query_one("#results-page", Static).update(
            f"rows {first}-{self.page * PAGE_SIZE + len(rows)} of {self.total_rows}"
            "  ([ previous, ] next)", layout=False)  # one line

    # Log ----------------------------------------------------------------------------------------

    @work(exclusive=True, group="log")
    async def load_log(self) -> None:
        entries = await self.app.call("hunt_log", hunt_id=self.hunt_id, limit=500)
        if entries is None:
            return
        table = self.query_one("#log-table", DataTable)
        table.clear()
        for entry in entries:
            table.add_row(utc_seconds(entry["time"]), entry["client_id"], plain(entry["level"]),
                          plain((entry["message"] or "")[:200]))
