"""Known clients: their facts, whether they are online, and their labels.

A client's labels come from two places: its agent's config (shown in brackets, ``[Finance]``),
which only that config can change, and the operator (shown plain), which `+` and `-` change.
The table adapts to the width: at 80 columns the labels stay on screen and OS, Online (folded
into Last seen, which says ``now`` for a client online) and First seen go. Enter opens the
client's page (its hunts and collections, and one-off collections on it); ``i`` shows every
fact of a client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from velotui.clipboard import copy_json
from velotui.display import age, utc
from velotui.screens.dialogs import TextPrompt
from velotui.screens.operator_keys import role_refuses
from velotui.screens.row_detail import RowDetailScreen
from velotui.widgets.filter_bar import FilterBar, matches
from velotui.widgets.live_table import LiveTable

COLUMNS = ("Client", "Host", "OS", "Online", "Last seen", "First seen", "Labels")
COMPACT_COLUMNS = ("Client", "Host", "Last seen", "Labels")
MEDIUM_COLUMNS = ("Client", "Host", "OS", "Online", "Last seen", "Labels")
# The screen is at least this wide for OS and Online, and this wide for First seen too.
MEDIUM_WIDTH = 100
WIDE_WIDTH = 130


def columns_for(width: int) -> tuple[str, ...]:
    """The clients table's columns on a screen ``width`` cells wide."""
    if width >= WIDE_WIDTH:
        return COLUMNS
    if width >= MEDIUM_WIDTH:
        return MEDIUM_COLUMNS
    return COMPACT_COLUMNS


def labels_cell(client: dict[str, Any]) -> Text:
    """The agent's labels in brackets and dimmed, then the operator's; ``-`` for none."""
    agent = list(client.get("agent_labels") or [])
    operator = [label for label in client.get("operator_labels") or [] if label not in agent]
    if not agent and not operator:
        return Text("-", no_wrap=True, end="")
    parts = [Text(f"[{label}]", style="dim") for label in agent]
    parts += [Text(label) for label in operator]
    return Text(", ", no_wrap=True, end="").join(parts)


CELLS: dict[str, Callable[[dict[str, Any], float], str | Text]] = {
    "Client": lambda client, now: client["client_id"],
    "Host": lambda client, now: client["hostname"] or "-",
    "OS": lambda client, now: client["os"] or "-",
    "Online": lambda client, now: "yes" if client["online"] else "no",
    "Last seen": lambda client, now: "now" if client["online"] else age(client["last_seen"], now),
    "First seen": lambda client, now: utc(client["first_seen"]),
    "Labels": lambda client, now: labels_cell(client),
}


def client_cells(client: dict[str, Any], now: float,
                 columns: tuple[str, ...] = COLUMNS) -> list[str | Text]:
    """One client as a row of the clients table with ``columns``."""
    return [CELLS[column](client, now) for column in columns]


def client_matches(client: dict[str, Any], needle: str) -> bool:
    """The filter looks at the ID, host names, OS and labels."""
    return matches(needle, [client["client_id"], client["hostname"] or "",
                            client.get("fqdn") or "", client["os"] or "",
                            *(client.get("labels") or [])])


class ClientsScreen(Screen[None]):
    """The fleet as the server knows it."""

    CSS_PATH = "clients.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("plus", "add_label", "Add label", id="add-label"),
        Binding("minus", "remove_label", "Remove label", id="remove-label"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("y", "copy", "Copy", id="copy"),
        Binding("enter", "open_page", "Client page", id="open-page"),
        Binding("i", "details", "Facts", id="details"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.columns: tuple[str, ...] = COMPACT_COLUMNS
        self.clients: dict[str, dict[str, Any]] = {}  # as list_clients last gave them
        self._filter = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary", markup=False)
        table = LiveTable(id="clients", cursor_type="row", zebra_stripes=True)
        table.add_columns(*((column, column) for column in self.columns))
        yield table
        yield FilterBar(id="filter")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys the operator's role may not use are greyed out (see ``operator_keys``)."""
        return None if role_refuses(self, action) else True

    def on_mount(self) -> None:
        self._fit_columns(self.app.size.width)
        self.query_one("#clients", LiveTable).focus()
        self.load()
        if self.app.follow:
            self.set_interval(2.0, self.load)

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns(event.size.width)

    def on_screen_resume(self) -> None:
        # The terminal may have been resized while a detail or prompt was on top.
        self._fit_columns(self.app.size.width)

    def _fit_columns(self, width: int) -> None:
        columns = columns_for(width)
        if columns == self.columns:
            return
        self.columns = columns
        table = self.query_one("#clients", LiveTable)
        selected = self.selected_client_id
        table.clear(columns=True)
        table.add_columns(*((column, column) for column in columns))
        self.redraw()
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))

    @work(exclusive=True, group="clients")
    async def load(self) -> None:
        clients = await self.app.call("list_clients")
        if clients is None:
            return
        self.clients = {client["client_id"]: client for client in clients}
        self.redraw()

    def redraw(self) -> None:
        clients = list(self.clients.values())
        now = self.app.clock()
        online = sum(1 for c in clients if c["online"])
        shown = [c for c in clients if client_matches(c, self._filter)]
        counted = f"{len(clients)} clients, {online} online"
        if self._filter:
            counted = f"{len(shown)} of {len(clients)} clients shown, {online} online"
        self.query_one("#summary", Static).update(
            f"{counted} · [label] from the agent's config · + add a label, - remove")
        self.query_one("#clients", LiveTable).sync(
            {c["client_id"]: client_cells(c, now, self.columns) for c in shown})

    @property
    def selected_client_id(self) -> str | None:
        return self.query_one("#clients", LiveTable).selected_key

    def _selected_client(self) -> dict[str, Any] | None:
        client_id = self.selected_client_id
        client = self.clients.get(client_id) if client_id else None
        if client is None:
            self.app.notify("No client selected.", severity="warning")
        return client

    def _label_change(self, sign: str, title: str) -> None:
        client_id = self.selected_client_id
        if client_id is None:
            self.app.notify("No client selected.", severity="warning")
            return

        async def answered(label: str | None) -> None:
            if label:
                change = {"add": [label]} if sign == "+" else {"remove": [label]}
                if await self.app.call("label_client", f"{client_id}: {sign}{label}",
                                       client_id=client_id, **change) is not None:
                    self.load()

        placeholder = "label"
        client = self.clients.get(client_id)
        if sign == "-" and client is not None:
            # Only the operator's labels can go; the agent's are its config's.
            yours = ", ".join(client.get("operator_labels") or []) or "none"
            placeholder = f"label (yours: {yours})"
        self.app.push_screen(TextPrompt(f"{title} {client_id}", placeholder), answered)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_page()

    def action_open_page(self) -> None:
        """The client's page: its hunts and collections, and n to run one."""
        if client := self._selected_client():
            from velotui.screens.client_page import ClientPageScreen  # it imports this module

            self.app.push_screen(ClientPageScreen(client["client_id"], client))

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self._filter = event.value
        self.redraw()

    def action_details(self) -> None:
        if client := self._selected_client():
            self.app.push_screen(RowDetailScreen(f"Client {client['client_id']}", client))

    def action_copy(self) -> None:
        if client := self._selected_client():
            copy_json(self.app, client, what=f"client {client['client_id']}")

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_add_label(self) -> None:
        self._label_change("+", "Add a label to")

    def action_remove_label(self) -> None:
        self._label_change("-", "Remove a label from")

    def action_back(self) -> None:
        # Esc clears a filter first, then leaves.
        if not self.query_one(FilterBar).clear():
            self.dismiss(None)
