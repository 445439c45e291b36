"""New hunt: the collection, both conditions with live checking, a live estimate, the limits.

Everything is checked in place as it is typed; ``ctrl+s`` creates the hunt in one call (nothing
is created half way) and ``escape`` leaves without creating anything.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Checkbox, Footer, Header, Input, Label, Static

from velotui.server.errors import ServiceError
from velotui.server.hunts import (
    DEFAULT_CLIENT_CONDITION,
    DEFAULT_LIMITS,
    SERVER_CONDITION_TEMPLATE,
    parse_duration,
)
from velotui.widgets.vql_editor import VQLEditor

ESTIMATE_DELAY = 0.6


def _number(text: str, what: str, *, whole: bool = True) -> float:
    """A non-negative number from a field. Raises ValueError naming the field."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{what}: a {'whole ' if whole else ''}number") from None
    if value < 0:
        raise ValueError(f"{what}: not below 0")
    return value


class NewHuntScreen(Screen[None]):
    """The form for a new hunt."""

    CSS_PATH = "new_hunt.tcss"
    BINDINGS = [
        Binding("ctrl+s", "create", "Create", id="create", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._estimate_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Label("Description")
            yield Input(placeholder="what the hunt is for", id="description")
            yield Label("Collection query (runs on each recruited client)")
            yield VQLEditor("", id="query", placeholder="SELECT * FROM info()")
            yield Label("Client-side condition (each agent runs it)")
            yield VQLEditor(DEFAULT_CLIENT_CONDITION, id="client_condition")
            yield Label("Server-side condition (over the agent's rows as `rows`; never sent)")
            yield VQLEditor(SERVER_CONDITION_TEMPLATE, id="server_condition", allow_empty=True)
            yield Static("", id="estimate")
            with Grid(id="limits"):
                for field_id, label, value in (
                    ("rate", "Rate (clients/min, 0 = unlimited)", "0"),
                    ("limit", "Client limit (0 = none)", "0"),
                    ("expires", "Expires after (90m, 12h, 7d)", "7d"),
                    ("timeout", "Timeout per client (s)", f"{DEFAULT_LIMITS.timeout:g}"),
                    ("max_rows", "Max rows (0 = none)", str(DEFAULT_LIMITS.max_rows)),
                    ("max_upload_mb", "Max upload MB (0 = none)",
                     str(DEFAULT_LIMITS.max_upload_bytes // (1024 * 1024))),
                ):
                    yield Label(label)
                    yield Input(value, id=field_id)
            yield Checkbox("Start now", False, id="start")
            yield Static("", id="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#description", Input).focus()
        self._schedule_estimate()

    # Live estimate ------------------------------------------------------------------------------

    @on(VQLEditor.Changed)
    def conditions_changed(self, event: VQLEditor.Changed) -> None:
        if event.editor.id in ("client_condition", "server_condition"):
            self._schedule_estimate()

    def _schedule_estimate(self) -> None:
        # Recomputed shortly after typing stops, not at every key.
        if self._estimate_timer is not None:
            self._estimate_timer.stop()
        self._estimate_timer = self.set_timer(ESTIMATE_DELAY, self._estimate)

    def _estimate(self) -> None:
        client = self.query_one("#client_condition", VQLEditor)
        server = self.query_one("#server_condition", VQLEditor)
        label = self.query_one("#estimate", Static)
        if not client.valid or not server.valid:
            label.update("matches ? of the known clients (fix the conditions first)")
            return
        self.run_estimate(client.text, server.text)

    @work(exclusive=True, group="estimate")
    async def run_estimate(self, client_condition: str, server_condition: str) -> None:
        label = self.query_one("#estimate", Static)
        try:
            result = await self.app.api.estimate_hunt(server_condition=server_condition,
                                                      client_condition=client_condition)
        except ServiceError as error:
            label.update(f"no estimate: {error}")
            return
        text = f"matches {result['matched']} of {result['total']} known clients"
        if result["undetermined"]:
            text += f" ({result['undetermined']} cannot be judged from their last facts)"
        if result.get("errors"):
            text += f" — {result['errors'][0]}"
        label.update(text)

    # Create -------------------------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        """What the form says, checked. Raises ValueError naming the first wrong field."""
        editors = {e.id: e for e in self.query(VQLEditor)}
        names = {"query": "collection query", "client_condition": "client-side condition",
                 "server_condition": "server-side condition"}
        for editor_id, editor in editors.items():
            if not editor.valid:
                editor.focus()
                reason = editor.error or "it is empty"
                raise ValueError(f"the {names[editor_id]} is not valid VQL: {reason}")
        field = {i.id: i.value.strip() for i in self.query(Input)}
        try:
            expires = parse_duration(field["expires"])
        except ValueError as error:
            self.query_one("#expires", Input).focus()
            raise ValueError(f"expires: {error}") from None
        numbers = {
            "rate": _number(field["rate"], "rate", whole=False),
            "limit": _number(field["limit"], "client limit"),
            "timeout": _number(field["timeout"], "timeout", whole=False),
            "max_rows": _number(field["max_rows"], "max rows"),
            "max_upload_bytes": int(_number(field["max_upload_mb"], "max upload MB",
                                            whole=False) * 1024 * 1024),
        }
        return {
            "description": field["description"],
            "query": editors["query"].text,
            "client_condition": editors["client_condition"].text,
            "server_condition": editors["server_condition"].text,
            "expires": expires,
            "start": self.query_one("#start", Checkbox).value,
            **numbers,
        }

    async def action_create(self) -> None:
        problem = self.query_one("#problem", Static)
        try:
            values = self._values()
        except ValueError as error:
            problem.update(f"Not created: {error}")
            return
        try:
            hunt = await self.app.api.create_hunt(**values)
        except ServiceError as error:
            problem.update(f"Not created: {error}")
            return
        self.app.hunts[hunt["hunt_id"]] = hunt
        self.app.notify(f"{hunt['hunt_id']} created" + (" and started" if values["start"]
                                                         else " (paused: press s to start)"))
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
