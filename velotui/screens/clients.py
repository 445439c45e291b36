"""Known clients: their facts, whether they are online, and the labels the operator gives them."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from velotui.display import age, utc
from velotui.screens.dialogs import TextPrompt
from velotui.widgets.live_table import LiveTable

COLUMNS = ("Client", "Host", "OS", "Online", "Last seen", "First seen", "Labels")


def client_cells(client: dict[str, Any], now: float) -> list[str]:
    return [
        client["client_id"],
        client["hostname"] or "-",
        client["os"] or "-",
        "yes" if client["online"] else "no",
        "now" if client["online"] else age(client["last_seen"], now),
        utc(client["first_seen"]),
        ", ".join(client["labels"]) or "-",
    ]


class ClientsScreen(Screen[None]):
    """The fleet as the server knows it."""

    CSS_PATH = "clients.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("plus", "add_label", "Add label", id="add-label"),
        Binding("minus", "remove_label", "Remove label", id="remove-label"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        table = LiveTable(id="clients", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#clients", LiveTable).focus()
        self.load()
        if self.app.follow:
            self.set_interval(2.0, self.load)

    @work(exclusive=True, group="clients")
    async def load(self) -> None:
        clients = await self.app.call("list_clients")
        if clients is None:
            return
        now = self.app.clock()
        online = sum(1 for c in clients if c["online"])
        self.query_one("#summary", Static).update(
            f"{len(clients)} clients, {online} online   (+ add a label, - remove one)")
        self.query_one("#clients", LiveTable).sync(
            {c["client_id"]: client_cells(c, now) for c in clients})

    @property
    def selected_client_id(self) -> str | None:
        table = self.query_one("#clients", LiveTable)
        if table.row_count == 0:
            return None
        key, _column = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(key.value)

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

        self.app.push_screen(TextPrompt(f"{title} {client_id}", "label"), answered)

    def action_add_label(self) -> None:
        self._label_change("+", "Add a label to")

    def action_remove_label(self) -> None:
        self._label_change("-", "Remove a label from")

    def action_back(self) -> None:
        self.dismiss(None)
