"""One client's page: its facts, every hunt it took part in and every collection run on it alone.

The data is the server's ``client_history``, read again every few seconds while the console
follows the server (and at once with ``ctrl+r``), each table updated in place so the cursor
stays on its row. Enter on a hunt opens that hunt; enter on a collection opens its rows; ``n``
runs a new collection on the client (see ``collect``).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from velotui.clipboard import copy_json
from velotui.display import age, utc
from velotui.screens.clients import labels_cell
from velotui.screens.collect import CollectionScreen, CollectScreen
from velotui.screens.hunt_detail import HuntDetailScreen
from velotui.screens.operator_keys import role_refuses
from velotui.screens.row_detail import RowDetailScreen
from velotui.widgets.live_table import LiveTable

FOLLOW_INTERVAL = 2.0  # seconds between reads of the history while following, as the clients
WIDE = 100  # terminal columns from which every column shows
HUNT_COLUMNS = ("Hunt", "Description", "Hunt state", "Queue", "State", "Rows", "Uploads",
                "Error")
NARROW_HUNT_COLUMNS = ("Hunt", "Description", "Queue", "Rows", "Error")
COLLECTION_COLUMNS = ("Flow", "Query", "State", "Rows", "Error", "Created")
# At 80 columns the error goes (the state says "error"; enter shows why).
NARROW_COLLECTION_COLUMNS = ("Flow", "Query", "State", "Rows", "Created")
QUEUE_NAMES = {"not_matched": "not matched"}


def one_line(text: str, width: int) -> str:
    """``text`` on one line and at most ``width`` characters, ending in … when cut."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def query_summary(flow: dict[str, Any]) -> str:
    """What a collection runs, in a few words: ``artifacts: A, B`` for one made of artifacts,
    else its query on one line."""
    names = [artifact["name"] for artifact in flow.get("artifacts") or []]
    if names:
        return "artifacts: " + ", ".join(names)
    return " ".join((flow.get("query") or "").split())


def error_width(width: int, narrow: bool, table: str) -> int:
    """How wide the error cell of ``table`` ("hunts" or "collections") may be on a screen
    ``width`` cells wide: what the other columns at their widest leave (cells have a cell of
    padding each side; a scrollbar may take two), so the table never scrolls sideways."""
    others = {("hunts", True): (15, 16, 11, 5), ("hunts", False): (15, 24, 10, 11, 9, 5, 7),
              ("collections", False): (15, 32, 9, 5, 16)}[(table, narrow)]
    return max(width - sum(others) - 2 * (len(others) + 1) - 2, 12)


def hunt_cells(entry: dict[str, Any], narrow: bool, error_width: int = 40) -> list[str]:
    """A hunt the client took part in, as a row with ``NARROW_HUNT_COLUMNS`` or
    ``HUNT_COLUMNS``; its error cut to ``error_width``."""
    queue = QUEUE_NAMES.get(entry.get("queue") or "", entry.get("queue") or "-")
    error = one_line(entry.get("error") or "", error_width)
    if narrow:
        return [entry["hunt_id"], one_line(entry.get("description") or "-", 16), queue,
                str(entry.get("rows") or 0), error]
    return [entry["hunt_id"], one_line(entry.get("description") or "-", 24),
            entry.get("hunt_state") or "-", queue, entry.get("state") or "-",
            str(entry.get("rows") or 0), str(entry.get("uploads") or 0), error]


def collection_cells(flow: dict[str, Any], narrow: bool, error_width: int = 40) -> list[str]:
    """A collection run on the client alone, as a row with ``NARROW_COLLECTION_COLUMNS`` or
    ``COLLECTION_COLUMNS``; its error cut to ``error_width``."""
    query = query_summary(flow)
    if narrow:
        return [flow["flow_id"], one_line(query, 24), flow["state"], str(flow["rows"]),
                utc(flow["created"])]
    return [flow["flow_id"], one_line(query, 32), flow["state"], str(flow["rows"]),
            one_line(flow.get("error") or "", error_width), utc(flow["created"])]


def facts_text(client: dict[str, Any], now: float) -> Text:
    """The client's facts in three lines: who it is, when it was seen, its labels."""
    text = Text()
    text.append(client["client_id"], "bold")
    text.append(f"  {client.get('hostname') or '-'}")
    fqdn = client.get("fqdn") or ""
    if fqdn and fqdn != client.get("hostname"):
        text.append(f" ({fqdn})")
    text.append(f"  {client.get('os') or '-'}")
    text.append("\n")
    if client.get("online"):
        text.append("online", "bold green")
    else:
        text.append(f"offline, last seen {age(client.get('last_seen'), now)}", "yellow")
    text.append(f" · first seen {utc(client.get('first_seen'))}\nlabels ")
    text.append_text(labels_cell(client))
    return text


class ClientPageScreen(Screen[None]):
    """A client's facts, its hunts and its own collections."""

    CSS_PATH = "client_page.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("n", "collect", "Collect", id="collect"),
        Binding("ctrl+r", "refresh", "Refresh", id="refresh"),
        Binding("y", "copy", "Copy", id="copy"),
        Binding("i", "facts", "Facts", id="facts"),
    ]

    def __init__(self, client_id: str, client: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.client_id = client_id
        self.client: dict[str, Any] = client or {"client_id": client_id}
        self.hunts: dict[str, dict[str, Any]] = {}  # by hunt ID, as client_history gave them
        self.collections: dict[str, dict[str, Any]] = {}  # by flow ID
        self._narrow: bool | None = None
        self._loading = False
        self._loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="facts")
        yield Static("", id="hunts-heading", classes="heading")
        yield LiveTable(id="client-hunts", cursor_type="row", zebra_stripes=True)
        yield Static("", id="collections-heading", classes="heading")
        yield LiveTable(id="client-collections", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys the operator's role may not use are greyed out (see ``operator_keys``)."""
        return None if role_refuses(self, action) else True

    def on_mount(self) -> None:
        self.sub_title = f"client {self.client_id}"
        self._fit_columns(self.app.size.width)
        self.query_one("#client-hunts", LiveTable).focus()
        self.redraw()
        self.load()
        if self.app.follow:
            self.set_interval(FOLLOW_INTERVAL, self.load)

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns(event.size.width)
        if self._loaded:
            self.redraw()  # the errors' width follows the terminal's

    def on_screen_resume(self) -> None:
        self._fit_columns(self.app.size.width)
        self.load()  # a collection run meanwhile, a hunt opened and stopped

    def on_hunts_changed(self) -> None:
        # A hunt's state changed: the client's place in it may have too.
        self.load()

    def _fit_columns(self, width: int) -> None:
        narrow = width < WIDE
        if narrow == self._narrow:
            return
        self._narrow = narrow
        for table_id, columns in (
            ("#client-hunts", NARROW_HUNT_COLUMNS if narrow else HUNT_COLUMNS),
            ("#client-collections",
             NARROW_COLLECTION_COLUMNS if narrow else COLLECTION_COLUMNS),
        ):
            table = self.query_one(table_id, LiveTable)
            selected = table.selected_key
            table.clear(columns=True)
            table.add_columns(*((column, column) for column in columns))
            if self._loaded:
                self.redraw()
            if selected is not None and selected in table.rows:
                table.move_cursor(row=table.get_row_index(selected))

    @work(group="client-history")
    async def load(self) -> None:
        """Read the client's history; a read in flight is not started again (a slow server
        gets each answer through, and reads never pile up)."""
        if self._loading:
            return
        self._loading = True
        try:
            history = await self.app.call("client_history", client_id=self.client_id)
        finally:
            self._loading = False
        if history is None:
            return
        self.client = history["client"]
        self.hunts = {entry["hunt_id"]: entry for entry in history["hunts"]}
        self.collections = {flow["flow_id"]: flow for flow in history["collections"]}
        self._loaded = True
        self.redraw()

    def redraw(self) -> None:
        narrow = bool(self._narrow)
        width = self.app.size.width
        hunt_error = error_width(width, narrow, "hunts")
        collection_error = error_width(width, narrow, "collections") if not narrow else 0
        self.query_one("#facts", Static).update(facts_text(self.client, self.app.clock()))
        if not self._loaded:
            self.query_one("#hunts-heading", Static).update("Hunts: loading…")
            return
        self.query_one("#hunts-heading", Static).update(
            f"Hunts it took part in: {len(self.hunts)}"
            + ("  (enter opens the hunt)" if self.hunts else ""))
        self.query_one("#collections-heading", Static).update(
            f"Collections on this client alone: {len(self.collections)}  (n runs one"
            + (", enter opens its rows)" if self.collections else ")"))
        self.query_one("#client-hunts", LiveTable).sync(
            {key: hunt_cells(entry, narrow, hunt_error) for key, entry in self.hunts.items()},
            ordered=True)
        self.query_one("#client-collections", LiveTable).sync(
            {key: collection_cells(flow, narrow, collection_error)
             for key, flow in self.collections.items()}, ordered=True)

    # What is selected ---------------------------------------------------------------------------

    def _selected(self) -> tuple[str, dict[str, Any]] | None:
        """The table with the focus ("hunt" or "collection") and its row under the cursor."""
        focused = self.focused
        if not isinstance(focused, LiveTable):
            return None
        key = focused.selected_key
        if key is None:
            return None
        if focused.id == "client-hunts":
            entry = self.hunts.get(key)
            return ("hunt", entry) if entry is not None else None
        flow = self.collections.get(key)
        return ("collection", flow) if flow is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        kind, row = selected
        if kind == "hunt":
            hunt_id = row["hunt_id"]
            if hunt_id not in self.app.hunts:
                self.app.notify(f"{hunt_id} is no longer on the server's list of hunts.",
                                severity="warning")
                return
            self.app.push_screen(HuntDetailScreen(hunt_id))
            return
        self.app.push_screen(CollectionScreen(self.client, row))

    def action_collect(self) -> None:
        self.app.push_screen(CollectScreen(self.client))

    def action_refresh(self) -> None:
        self.load()

    def action_copy(self) -> None:
        selected = self._selected()
        if selected is None:
            self.app.notify("Nothing to copy: the table is empty.", severity="warning")
            return
        kind, row = selected
        key = row["hunt_id"] if kind == "hunt" else row["flow_id"]
        copy_json(self.app, row, what=f"{kind} {key}")

    def action_facts(self) -> None:
        self.app.push_screen(RowDetailScreen(f"Client {self.client_id}", self.client))

    def action_back(self) -> None:
        self.dismiss(None)

