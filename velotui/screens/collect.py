"""One-off collections on one client: the form that runs one (``CollectScreen``) and the screen
that shows one's rows as they arrive (``CollectionScreen``): the CLI's ``velotui collect`` from
the keyboard.

The form takes VQL (checked as it is typed) or artifacts with their parameters (the new-hunt
form's picker and parameter fields), a timeout and a row limit; ``ctrl+s`` schedules the
collection (``schedule_collection``) and the form gives way to the collection's screen, which
follows it (``follow``): rows are added to the table as they become durable on the server, the
agent's log lines under it, the state and counts over it; ``x`` cancels it (``cancel_flow``).
Artifacts are compiled by the server (``compile_artifacts``) and sent as the VQL they compile
to, whose first line names them, so the client's page can say what ran.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Static,
)

from velotui.clipboard import copy_json
from velotui.display import duration, utc_seconds
from velotui.screens.collection_form import CollectionForm
from velotui.screens.dialogs import ConfirmScreen
from velotui.screens.operator_keys import role_refuses
from velotui.screens.row_detail import RowDetailScreen
from velotui.server.errors import ServiceError
from velotui.server.hunts import DEFAULT_LIMITS
from velotui.vql.values import cell_text
from velotui.widgets.artifact_parameters import ParameterProblem
from velotui.widgets.artifact_picker import ArtifactPicker
from velotui.widgets.live_table import NavigableTable, plain
from velotui.widgets.vql_editor import VQLEditor

ACTIVE_STATES = ("queued", "running")
STATE_POLL = 1.0  # seconds between reads of a collection's state while it is queued or running
SHOWN_ROWS = 5000  # rows put in the table at most (the CLI's collect or the API give them all)
MAX_CELL = 40  # characters of a cell in the table (enter shows it whole)
MAX_MESSAGE = 200  # characters of a log message in the table
# How the server names a parameter whose value it refused: "Artifact.Name: parameter P (type)..."
_REFUSED_PARAMETER = re.compile(r"^(?P<artifact>[^\s:]+): parameter (?P<parameter>\S+) \(")
STATE_STYLES = {"queued": "yellow", "running": "bold cyan", "finished": "bold green",
                "error": "bold red", "timeout": "bold red", "cancelled": "bold magenta"}


def client_name(client: dict[str, Any]) -> str:
    """``host (C.x)``, or the client ID alone when its host is not known."""
    host = client.get("hostname") or ""
    return f"{host} ({client['client_id']})" if host else client["client_id"]


def clip(text: str, width: int) -> str:
    """``text`` on one line and at most ``width`` characters, ending in … when cut."""
    text = text.replace("\r\n", "↵").replace("\n", "↵")
    return text if len(text) <= width else text[:width - 1] + "…"


def upload_count(flow: dict[str, Any]) -> int:
    """How many files a flow uploaded: ``flow()`` lists them, a stored record counts them."""
    uploads = flow.get("uploads") or 0
    return len(uploads) if isinstance(uploads, list) else int(uploads)


def _number(text: str, what: str, *, whole: bool) -> float:
    """A non-negative number from a field. Raises ValueError naming the field."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{what}: a {'whole ' if whole else ''}number") from None
    if value < 0:
        raise ValueError(f"{what}: not below 0")
    return value


class CollectScreen(CollectionForm):
    """The form for a one-off collection on ``client`` (as ``list_clients`` gives one)."""

    CSS_PATH = "collect.tcss"
    BINDINGS = [
        Binding("ctrl+s", "run", "Run", id="run", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel", priority=True),
        Binding("ctrl+t", "switch_collection", "VQL/Artifacts", id="switch-collection",
                priority=True),
        Binding("ctrl+r", "remove_artifact", "Remove artifact", id="remove-artifact",
                priority=True),
        # A letter typed on a radio button or a button is a slip, not "quit" or "clients".
        Binding("q,c", "ignore", show=False),
    ]

    def __init__(self, client: dict[str, Any], query: str = "") -> None:
        super().__init__()
        self.client = client
        self.initial_query = query
        self._submitting = False

    @property
    def client_id(self) -> str:
        return str(self.client["client_id"])

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self._target_text(), id="target")
        with VerticalScroll(id="form"):
            with Horizontal(id="collection-kind"):
                yield Label("Collection")
                kind = RadioSet(id="collection", compact=True)
                kind.can_focus = False  # ctrl+t switches, from any field
                with kind:
                    yield RadioButton("VQL query", True, id="vql-mode")
                    yield RadioButton("Artifacts", id="artifacts-mode")
                yield Label("ctrl+t switches", id="collection-hint")
            yield VQLEditor(self.initial_query, id="query", placeholder="SELECT * FROM info()",
                            classes="vql-only")
            with Vertical(id="artifacts", classes="artifacts-only"):
                yield ArtifactPicker(id="picker")
                yield Static("No artifact yet: pick one above (enter adds it).", id="none-chosen")
            with Horizontal(id="limits"):
                yield Label("Timeout (s)")
                yield Input(f"{DEFAULT_LIMITS.timeout:g}", id="timeout")
                yield Label("Max rows (0 = none)")
                yield Input(str(DEFAULT_LIMITS.max_rows), id="max_rows")
        yield Static("", id="problem")
        yield Footer()

    def _target_text(self) -> Text:
        text = Text("On ")
        text.append(client_name(self.client), "bold")
        if self.client.get("online"):
            text.append(": online, it runs at once")
        else:
            text.append(": offline, it runs when the client connects", "yellow")
        return text

    def on_mount(self) -> None:
        self.sub_title = f"collect on {self.client_id}"
        self.add_class("-vql-mode")
        self.query_one("#query", VQLEditor).focus()
        self.load_artifacts()

    def collection_switched(self, artifacts: bool) -> bool:
        self._say("")
        return True

    def _say(self, text: str) -> None:
        problem = self.query_one("#problem", Static)
        problem.update(Text(text))
        problem.set_class(bool(text), "-shown")

    def _refuse(self, reason: str, field: Widget | None = None) -> None:
        self._say(f"Not run: {reason}")
        if field is not None:
            field.focus()

    @on(VQLEditor.Changed, "#query")
    def query_changed(self, event: VQLEditor.Changed) -> None:
        if event.valid:
            self._say("")

    def _limits(self) -> dict[str, Any]:
        """The timeout and row limit, checked. Raises ParameterProblem naming the field."""
        values: dict[str, Any] = {}
        for field_id, what, whole in (("timeout", "timeout", False),
                                      ("max_rows", "max rows", True)):
            field = self.query_one(f"#{field_id}", Input)
            try:
                values[field_id] = _number(field.value.strip(), what, whole=whole)
            except ValueError as error:
                raise ParameterProblem(str(error), field) from None
        return values

    def action_run(self) -> None:
        if self._submitting:
            return  # one collection per ctrl+s, however often it is pressed meanwhile
        editor = self.query_one("#query", VQLEditor)
        if not self.artifacts_mode and not editor.valid:
            error = editor.error
            self._refuse("the query is empty" if error is None
                         else f"the query is not valid VQL: {error}", editor)
            return
        artifacts: list[dict[str, Any]] = []
        try:
            if self.artifacts_mode:
                chosen = self._chosen()
                if not chosen:
                    self._refuse("no artifact chosen: type part of a name, then enter adds it",
                                 self.query_one(ArtifactPicker).search)
                    return
                artifacts = [{"name": form.artifact_name, "parameters": form.values()}
                             for form in chosen]
            limits = self._limits()
        except ParameterProblem as problem:
            self._refuse(str(problem), problem.field)
            return
        self._submitting = True
        self._say("")
        self.run_collection(editor.text, artifacts, limits)

    @work(group="run")
    async def run_collection(self, query: str, artifacts: list[dict[str, Any]],
                             limits: dict[str, Any]) -> None:
        try:
            # Artifacts are compiled by the server, which keeps them with the flow.
            flow = await self.app.api.schedule_collection(
                client_id=self.client_id, query="" if artifacts else query,
                artifacts=artifacts or None, **limits)
        except ServiceError as error:
            self._submitting = False
            self._refused_by_server(str(error))
            return
        if not self.client.get("online"):
            self.app.notify(f"{flow['flow_id']} is queued: {client_name(self.client)} is"
                            " offline; it runs when the client connects")
        if self.app.screen is not self:
            # Left (escape) while the server scheduled it: it runs; the client's page lists it.
            self.app.notify(f"{flow['flow_id']} scheduled on {client_name(self.client)}")
            return
        self.app.switch_screen(CollectionScreen(self.client, flow))

    def _refused_by_server(self, reason: str) -> None:
        named = _REFUSED_PARAMETER.match(reason)
        if named is not None and self.artifacts_mode:
            for form in self._chosen():
                if form.artifact_name == named["artifact"]:
                    field = form.show_problem(named["parameter"], reason.split(": ", 1)[1])
                    self._refuse(reason, field)
                    return
        self._refuse(reason)

    def _has_input(self) -> bool:
        return self.query_one("#query", VQLEditor).text != self.initial_query \
            or bool(self._chosen())

    def action_cancel(self) -> None:
        if self._submitting or not self._has_input():
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Discard this collection?",
                                           "What was typed is lost; nothing was run."),
                             answered)


class CollectionScreen(Screen[None]):
    """One collection on one client: its rows as they arrive, its state, its agent's log."""

    CSS_PATH = "collect.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("x", "cancel_collection", "Cancel it", id="cancel-collection"),
        Binding("y", "copy", "Copy", id="copy"),
        Binding("Y", "copy_row", "Copy row", id="copy-row", show=False),
        Binding("n", "again", "Edit, run again", id="again"),
    ]

    def __init__(self, client: dict[str, Any], flow: dict[str, Any]) -> None:
        super().__init__()
        self.client = client
        self.flow = dict(flow)
        self.rows: list[dict[str, Any]] = []  # every row received (the table shows the first)
        self.columns: list[str] = []
        self.log_lines: list[dict[str, Any]] = []
        self.failure = ""  # why following stopped, if it did

    @property
    def client_id(self) -> str:
        return str(self.client["client_id"])

    @property
    def flow_id(self) -> str:
        return str(self.flow["flow_id"])

    @property
    def active(self) -> bool:
        return self.flow.get("state") in ACTIVE_STATES

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="flow-status")
        yield Static(Text(clip(" ".join((self.flow.get("query") or "").split()), 400),
                          no_wrap=True, overflow="ellipsis"), id="flow-query")
        yield NavigableTable(id="flow-rows", cursor_type="cell", zebra_stripes=True)
        yield Static("", id="log-heading", classes="heading")
        log = NavigableTable(id="flow-log", cursor_type="row", zebra_stripes=True)
        log.add_columns("Time (UTC)", "Level", "Message")
        yield log
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys the operator's role may not use are greyed out (see ``operator_keys``)."""
        return None if role_refuses(self, action) else True

    def on_mount(self) -> None:
        self.sub_title = f"{self.flow_id} on {client_name(self.client)}"
        self.query_one("#flow-rows").focus()
        self.redraw()
        self.follow_rows()
        if self.active:
            self.set_interval(STATE_POLL, self.read_state)

    # Following ----------------------------------------------------------------------------------

    @work(group="follow")
    async def follow_rows(self) -> None:
        """The collection's rows and log lines as they become durable, then its end."""
        try:
            async for event in self.app.api.follow(client_id=self.client_id,
                                                   flow_id=self.flow_id):
                kind = event.get("event")
                if kind == "rows":
                    self._add_rows(event["rows"])
                elif kind == "log":
                    self._add_log(event)
                elif kind == "status":
                    self.flow = {k: v for k, v in event.items() if k != "event"}
                self.redraw()
        except ServiceError as error:
            self.failure = str(error)
            self.redraw()

    @work(exclusive=True, group="state")
    async def read_state(self) -> None:
        """Queued to running, and the counts, between batches of rows."""
        if not self.active:
            return
        try:
            flow = await self.app.api.flow(client_id=self.client_id, flow_id=self.flow_id)
        except ServiceError:
            return  # following says why
        if self.active:  # the final status from following wins
            self.flow = flow
            self.redraw()

    def _add_rows(self, rows: list[dict[str, Any]]) -> None:
        table = self.query_one("#flow-rows", NavigableTable)
        room = SHOWN_ROWS - len(self.rows)
        start = len(self.rows)
        self.rows.extend(rows)
        shown = rows[:max(room, 0)]
        new_columns = [key for row in shown for key in row if key not in self.columns]
        if new_columns:
            # A column not seen before: the table is drawn again with it (rare: most
            # queries give every row the same columns).
            self.columns.extend(dict.fromkeys(new_columns))
            cursor = table.cursor_coordinate
            table.clear(columns=True)
            for column in self.columns:
                table.add_column(plain(column), key=column)
            start, shown = 0, self.rows[:SHOWN_ROWS]
            self._append(table, shown, start)
            if table.row_count:
                table.move_cursor(row=min(cursor.row, table.row_count - 1),
                                  column=min(cursor.column, len(self.columns) - 1))
            return
        self._append(table, shown, start)

    def _append(self, table: NavigableTable, rows: list[dict[str, Any]], start: int) -> None:
        for offset, row in enumerate(rows):
            table.add_row(*(plain(clip(cell_text(row.get(column)), MAX_CELL))
                            if column in row else "" for column in self.columns),
                          key=str(start + offset))

    def _add_log(self, entry: dict[str, Any]) -> None:
        self.log_lines.append(entry)
        table = self.query_one("#flow-log", NavigableTable)
        table.add_row(utc_seconds(entry.get("time")), plain(str(entry.get("level") or "")),
                      plain(clip(str(entry.get("message") or ""), MAX_MESSAGE)),
                      key=str(len(self.log_lines) - 1))
        table.move_cursor(row=table.row_count - 1)  # the newest line in view

    def redraw(self) -> None:
        self.query_one("#flow-status", Static).update(self._status_text())
        self.query_one("#log-heading", Static).update(
            f"The agent's log: {len(self.log_lines)} lines" if self.log_lines
            else "The agent's log: nothing yet")

    def _status_text(self) -> Text:
        flow = self.flow
        state = str(flow.get("state") or "-")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(state, STATE_STYLES.get(state, ""))
        rows = max(int(flow.get("rows") or 0), len(self.rows))
        text.append(f" · {rows:,} rows")
        if len(self.rows) > SHOWN_ROWS:
            text.append(f" (the first {SHOWN_ROWS:,} shown)")
        uploads = upload_count(flow)
        if uploads:
            text.append(f" · {uploads} uploads")
        if flow.get("duration") is not None:
            text.append(f" · took {duration(flow['duration'])}")
        if state == "queued" and not self.client.get("online"):
            text.append(" · the client is offline: it runs when the client connects", "yellow")
        elif self.active:
            text.append(" · x cancels it")
        if flow.get("error"):
            text.append(f" · {flow['error']}", "red")
        if self.failure:
            text.append(f" · not followed: {self.failure}", "red")
        return text

    # Keys ---------------------------------------------------------------------------------------

    def _row_under_cursor(self) -> tuple[str, dict[str, Any], str | None] | None:
        """The focused table's row under its cursor: a title, the row, the column (rows)."""
        table = self.focused
        if not isinstance(table, DataTable) or table.row_count == 0:
            return None
        row_key, column_key = table.coordinate_to_cell_key(table.cursor_coordinate)
        index = int(str(row_key.value))
        if table.id == "flow-log":
            entry = {k: v for k, v in self.log_lines[index].items() if k != "event"}
            return f"log of {self.flow_id} at {utc_seconds(entry.get('time'))}", entry, \
                "message"
        row = self.rows[index]
        column = str(column_key.value)
        return f"row {index + 1:,} of {self.flow_id}", row, column if column in row else None

    @on(DataTable.CellSelected)
    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.CellSelected | DataTable.RowSelected) -> None:
        event.stop()
        found = self._row_under_cursor()
        if found is not None:
            self.app.push_screen(RowDetailScreen(*found))

    def action_copy(self) -> None:
        """The cell under the cursor (the message of a log line), as in a row's detail."""
        found = self._row_under_cursor()
        if found is None:
            self.notify("Nothing to copy: the table is empty.", severity="warning")
            return
        _title, row, column = found
        if column is None:
            copy_json(self.app, row, what="row")
        else:
            copy_json(self.app, row.get(column), what=column)

    def action_copy_row(self) -> None:
        found = self._row_under_cursor()
        if found is None:
            self.notify("Nothing to copy: the table is empty.", severity="warning")
            return
        copy_json(self.app, found[1], what="row")

    async def action_cancel_collection(self) -> None:
        if not self.active:
            self.notify(f"{self.flow_id} is not running: it is {self.flow.get('state')}.",
                        severity="warning")
            return
        flow = await self.app.call("cancel_flow", client_id=self.client_id,
                                   flow_id=self.flow_id)
        if flow is not None:
            self.notify(f"{self.flow_id} cancelled")

    def action_again(self) -> None:
        """The form again, holding this collection's query, to change it and run it anew."""
        self.app.switch_screen(CollectScreen(self.client, self.flow.get("query") or ""))

    def action_back(self) -> None:
        self.dismiss(None)
