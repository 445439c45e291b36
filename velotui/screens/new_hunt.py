"""New hunt: the collection (VQL, or artifacts with their parameters), both conditions with live
checking, a live estimate, the limits.

Everything is checked in place as it is typed; ``ctrl+s`` creates the hunt in one call (nothing
is created half way) and ``escape`` leaves without creating anything (asking first when
something was typed). A refusal, the form's own or the server's, is written under the field it
concerns, which takes the focus; it goes once the field holds a value that passes.
``ctrl+t`` switches the collection between a VQL query and artifacts picked from the server's
library, which is fetched once when the form opens and searched here as the operator types.
Opened on a hunt (``C``), the form holds that hunt's specification, to be changed and created
as a new hunt.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import (
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Select,
    Static,
)

from velotui.display import countdown
from velotui.screens.collection_form import CollectionForm
from velotui.screens.dialogs import ConfirmScreen
from velotui.screens.hunt_edit import max_errors_problem, max_errors_text
from velotui.server.errors import ServiceError
from velotui.server.hunts import (
    DEFAULT_CLIENT_CONDITION,
    DEFAULT_LIMITS,
    SERVER_CONDITION_TEMPLATE,
    parse_duration,
)
from velotui.widgets.artifact_parameters import ArtifactParameters, ParameterProblem
from velotui.widgets.artifact_picker import ArtifactPicker
from velotui.widgets.vql_editor import VQLEditor

ESTIMATE_DELAY = 0.6
PARAMETERS_CHECK_DELAY = 0.6  # the server checks artifact parameters once typing pauses
# How the server names a parameter whose value it refused: "Artifact.Name: parameter P (type)..."
_REFUSED_PARAMETER = re.compile(r"^(?P<artifact>[^\s:]+): parameter (?P<parameter>\S+) \(")
# How the server's refusals of create_hunt begin, and the field each concerns.
_REFUSED_FIELD = (
    ("the collection query", "query"), ("the client-side condition", "client_condition"),
    ("the server-side condition", "server_condition"), ("description", "description"),
    ("rate", "rate"), ("limit", "limit"), ("expires", "expires"), ("timeout", "timeout"),
    ("max_rows", "max_rows"), ("max_upload_bytes", "max_upload_mb"),
    ("start at", "start_at"), ("start now or at a time", "start_at"),
    ("max errors", "max_errors"),
)
MIB = 1024 * 1024
_EDITOR_NAMES = {"query": "collection query", "client_condition": "client-side condition",
                 "server_condition": "server-side condition"}


def _number(text: str, what: str, *, whole: bool = True) -> float:
    """A non-negative number from a field. Raises ValueError naming the field."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{what}: a {'whole ' if whole else ''}number") from None
    if value < 0:
        raise ValueError(f"{what}: not below 0")
    return value


class FieldRefusal(ValueError):
    """A value the form cannot send: ``field_id`` names the field it concerns."""

    def __init__(self, field_id: str, message: str) -> None:
        super().__init__(message)
        self.field_id = field_id


class NewHuntScreen(CollectionForm):
    """The form for a new hunt."""

    CSS_PATH = "new_hunt.tcss"
    BINDINGS = [
        Binding("ctrl+s", "create", "Create", id="create", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel", priority=True),
        # Keys TextArea and Input leave alone, so they work from any field.
        Binding("ctrl+t", "switch_collection", "VQL/Artifacts", id="switch-collection",
                priority=True),
        Binding("ctrl+r", "remove_artifact", "Remove artifact", id="remove-artifact",
                priority=True),
        # A letter typed on a checkbox, a select or a button of the form is a slip, not the
        # app's "quit" or "clients": half a hunt would be lost.
        Binding("q,c", "ignore", show=False),
    ]

    def __init__(self, copy_of: dict[str, Any] | None = None) -> None:
        """An empty form, or one holding the specification of ``copy_of`` (a hunt as the
        operator API describes it)."""
        super().__init__()
        self.copy_of = copy_of
        self._start = form_values(copy_of)
        self._estimate_timer: Timer | None = None
        self._parameters_timer: Timer | None = None
        self._creating = False
        self._defaults: tuple[Any, ...] | None = None
        self._refused: set[str] = set()  # the fields with a refusal shown under them
        self._keep_focus = False  # switching the collection's kind leaves the focus alone

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Label("Description")
            yield Input(self._start["description"], placeholder="what the hunt is for",
                        id="description")
            yield _refusal("description")
            with Horizontal(id="collection-kind"):
                yield Label("Collection")
                # Switched by ctrl+t from any field, so it keeps out of the tab order (which
                # goes from the description straight to the collection).
                kind = RadioSet(id="collection", compact=True)
                kind.can_focus = False
                with kind:
                    yield RadioButton("VQL query", True, id="vql-mode")
                    yield RadioButton("Artifacts", id="artifacts-mode")
                yield Label("ctrl+t switches", id="collection-hint")
            yield Label("Collection query (runs on each recruited client)", classes="vql-only")
            yield VQLEditor(self._start["query"], id="query",
                            placeholder="SELECT * FROM info()", classes="vql-only")
            yield _refusal("query", classes="vql-only")
            with Vertical(id="artifacts", classes="artifacts-only"):
                yield ArtifactPicker(id="picker")
                yield _refusal("picker")
                yield Static("No artifact yet: pick one above (enter adds it).", id="none-chosen")
            yield Label("Client-side condition (each agent runs it)")
            yield VQLEditor(self._start["client_condition"], id="client_condition")
            yield _refusal("client_condition")
            yield Label("Server-side condition (over the agent's rows as `rows`; empty: every"
                        " client)")
            # Empty by default, as the command line's: the template is only a hint.
            yield VQLEditor(self._start["server_condition"], id="server_condition",
                            allow_empty=True,
                            placeholder=SERVER_CONDITION_TEMPLATE)
            yield _refusal("server_condition")
            yield Static("", id="estimate")
            with Grid(id="limits"):
                for field_id, label in (
                    ("rate", "Rate (clients/min, 0 = unlimited)"),
                    ("limit", "Client limit (0 = none)"),
                    ("expires", "Expires after (90m, 12h, 7d)"),
                    ("timeout", "Timeout per client (s)"),
                    ("max_rows", "Max rows (0 = none)"),
                    ("max_upload_mb", "Max upload MB (0 = none)"),
                ):
                    yield Label(label)
                    with Vertical(classes="limit"):
                        yield Input(self._start[field_id], id=field_id)
                        yield _refusal(field_id)
            yield Checkbox("Start now", False, id="start")
            # After "Start now", so the tab order up to it is what it always was.
            with Grid(id="schedule"):
                yield Label("Start at (2026-12-24T18:00, +2h)")
                with Vertical(classes="limit"):
                    yield Input("", id="start_at")
                    yield _refusal("start_at")
                yield Label("Max errors (5, or 10%; 0 = none)")
                with Vertical(classes="limit"):
                    yield Input(self._start["max_errors"], id="max_errors")
                    yield _refusal("max_errors")
        # Refusals that concern no one field: over the footer, in view whatever is scrolled.
        yield Static("", id="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.add_class("-vql-mode")
        if self.copy_of is not None:
            self.sub_title = f"copy of {self.copy_of['hunt_id']}"
            if self.copy_of.get("artifacts"):
                self._keep_focus = True  # on the description, not the artifact search
                self.query_one("#artifacts-mode", RadioButton).value = True
        self.query_one("#description", Input).focus()
        self._schedule_estimate()
        self.load_artifacts()
        self._defaults = self._state()

    def _state(self) -> tuple[Any, ...]:
        """Everything the operator can type or pick, to tell a filled-in form from a new one."""
        return (
            tuple((i.id, i.value) for i in self.query(Input) if i.id in _FORM_INPUTS),
            tuple((e.id, e.text) for e in self.query(VQLEditor)),
            self.query_one("#start", Checkbox).value,
            tuple((f.artifact_name, repr(f.values())) for f in self._chosen()),
        )

    @property
    def has_input(self) -> bool:
        """Whether anything differs from what the form opened with (leaving would lose it)."""
        return self._defaults is not None and self._state() != self._defaults

    # The collection: VQL or artifacts ---------------------------------------------------------

    async def artifacts_loaded(self, library: list[dict[str, Any]]) -> None:
        if self.copy_of is not None and self.copy_of.get("artifacts"):
            await self._fill_artifacts(library, self.copy_of["artifacts"])

    async def _fill_artifacts(self, library: list[dict[str, Any]],
                              chosen: list[dict[str, Any]]) -> None:
        """The copied hunt's artifacts, each with the values it ran with; the form counts as
        untouched afterwards (leaving it loses nothing typed)."""
        untouched = not self.has_input
        known = {str(artifact["name"]): artifact for artifact in library}
        missing = [str(a["name"]) for a in chosen if str(a["name"]) not in known]
        forms = [ArtifactParameters(known[str(a["name"])], a.get("parameters") or {})
                 for a in chosen if str(a["name"]) in known]
        if forms:
            await self.query_one("#artifacts", Vertical).mount_all(forms)
            if self not in self.app.screen_stack:
                return  # the form was created or left while its artifacts were mounted
            self.query_one("#none-chosen", Static).display = False
            self.refresh_bindings()
        if missing:
            self._say(f"Not in the server's library any more: {', '.join(missing)}")
        if untouched:
            self._defaults = self._state()

    def collection_switched(self, artifacts: bool) -> bool:
        if self._keep_focus:
            self._keep_focus = False
            return False
        return True

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
        """What the form says, checked. Raises FieldRefusal for the first wrong field (or
        ParameterProblem for an artifact's parameter)."""
        collection = self._collection()
        fields = ["client_condition", "server_condition", *_LIMIT_IDS, *_SCHEDULE_IDS]
        if not collection:
            fields.insert(0, "query")
        for field_id in fields:
            if (problem := self._field_problem(field_id)) is not None:
                raise FieldRefusal(field_id, problem)
        field = {i.id: i.value.strip() for i in self.query(Input) if i.id}
        editors = {e.id: e.text for e in self.query(VQLEditor)}
        return {
            "description": field["description"],
            "query": editors["query"],
            **collection,
            "client_condition": editors["client_condition"],
            "server_condition": editors["server_condition"],
            "expires": parse_duration(field["expires"]),
            "start": self.query_one("#start", Checkbox).value,
            "rate": float(field["rate"]),
            "limit": int(field["limit"]),
            "timeout": float(field["timeout"]),
            "max_rows": int(field["max_rows"]),
            "max_upload_bytes": round(float(field["max_upload_mb"]) * MIB),
            "start_at": field["start_at"] or None,
            "max_errors": field["max_errors"] or 0,
        }

    def _field_problem(self, field_id: str) -> str | None:
        """What is wrong with one field's value as it stands (None: nothing)."""
        if field_id in _EDITOR_NAMES:
            editor = self.query_one(f"#{field_id}", VQLEditor)
            if editor.valid:
                return None
            name = _EDITOR_NAMES[field_id]
            return f"the {name} is empty" if editor.error is None else \
                f"the {name} is not valid VQL: {editor.error}"
        if field_id == "picker":
            return None if self._chosen() else \
                "no artifact chosen: type part of a name, then enter adds it"
        if field_id == "start_at":
            given = self.query_one("#start_at", Input).value.strip()
            if given and self.query_one("#start", Checkbox).value:
                return "start now or at a time, not both: untick Start now or clear this"
            return None  # the server reads the time
        if field_id == "max_errors":
            return max_errors_problem(self.query_one("#max_errors", Input).value.strip() or "0")
        if field_id not in _LIMIT_IDS:
            return None  # the description: anything goes
        text = self.query_one(f"#{field_id}", Input).value.strip()
        try:
            if field_id == "expires":
                parse_duration(text)
            else:
                whole, what = _LIMIT_NUMBERS[field_id]
                _number(text, what, whole=whole)
        except ValueError as error:
            return f"expires: {error}" if field_id == "expires" else str(error)
        return None

    def _collection(self) -> dict[str, Any]:
        """The artifacts and the values changed in their forms, in artifacts mode (else
        nothing: the query is the collection). Raises ValueError (ParameterProblem for a
        wrong value) when there is nothing to collect."""
        if not self.artifacts_mode:
            return {}
        chosen = self._chosen()
        if not chosen:
            raise FieldRefusal("picker", self._field_problem("picker") or "")
        return {"query": "", "artifacts": [{"name": form.artifact_name,
                                            "parameters": form.values()} for form in chosen]}

    def _say(self, text: str) -> None:
        problem = self.query_one("#problem", Static)
        problem.update(Text(text))
        problem.set_class(bool(text), "-shown")

    def refuse(self, field_id: str, reason: str) -> None:
        """Write ``reason`` under the field ``field_id``, give that field the focus and bring
        it into view (with its message)."""
        self._say("")
        refusal = self.query_one(f"#{field_id}-refusal", Static)
        refusal.update(Text(f"Not created: {reason}"))
        refusal.add_class("-shown")
        self._refused.add(field_id)
        field = self._field(field_id)
        field.focus(scroll_visible=False)
        # The message too, under the field: after the layout that shows it.
        self.call_after_refresh(refusal.scroll_visible, animate=False)

    def _field(self, field_id: str) -> Widget:
        if field_id == "picker":
            return self.query_one(ArtifactPicker).search
        return self.query_one(f"#{field_id}")

    def _clear_refusal(self, field_id: str) -> None:
        """The field's refusal goes once its value passes."""
        if field_id in self._refused and self._field_problem(field_id) is None:
            self._refused.discard(field_id)
            refusal = self.query_one(f"#{field_id}-refusal", Static)
            refusal.remove_class("-shown")
            refusal.update("")

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        if event.input.id:
            self._clear_refusal(event.input.id)

    @on(VQLEditor.Changed)
    def editor_changed(self, event: VQLEditor.Changed) -> None:
        if event.editor.id:
            self._clear_refusal(event.editor.id)

    def action_create(self) -> None:
        if self._creating:
            return  # one hunt per ctrl+s, however often it is pressed while the server works
        try:
            values = self._values()
        except ParameterProblem as problem:
            problem.field.focus()
            self._say(f"Not created: {problem}")
            return
        except FieldRefusal as refusal:
            self.refuse(refusal.field_id, str(refusal))
            return
        self._creating = True
        self.create(values)

    @work(group="create")
    async def create(self, values: dict[str, Any]) -> None:
        try:
            hunt = await self.app.api.create_hunt(**values)
        except ServiceError as error:
            self._creating = False
            self._refused_by_server(str(error))
            return
        self.app.hunts[hunt["hunt_id"]] = hunt
        if hunt["state"] == "scheduled":
            said = f": {countdown(hunt['start_at'], self.app.clock())} (s starts it now)"
        elif values["start"]:
            said = " and started"
        else:
            said = " (paused: press s to start)"
        self.app.notify(f"{hunt['hunt_id']} created{said}")
        home = next((screen for screen in self.app.screen_stack
                     if screen is not self and hasattr(screen, "select_hunt")), None)
        self.dismiss(None)
        if home is not None:
            # The new hunt selected and shown in the panel, once the home screen has redrawn
            # (HuntsScreen.select_hunt).
            home.call_later(home.select_hunt, hunt["hunt_id"])

    def _refused_by_server(self, reason: str) -> None:
        """Say why the server refused, under the field it concerns when there is one."""
        field = self._parameter_problem(reason)
        if field is not None:
            self._say(f"Not created: {reason}")
            field.focus()
            return
        lowered = reason.lower()
        for start, field_id in _REFUSED_FIELD:
            if lowered.startswith(start) and (field_id != "query" or not self.artifacts_mode):
                self.refuse(field_id, reason)
                return
        self._say(f"Not created: {reason}")

    def _parameter_problem(self, reason: str) -> Widget | None:
        """Put the server's ``reason`` under the field of the parameter it names; that field
        (None when it names none on the form)."""
        named = _REFUSED_PARAMETER.match(reason)
        if named is None or not self.artifacts_mode:
            return None
        for form in self._chosen():
            if form.artifact_name == named["artifact"]:
                return form.show_problem(named["parameter"], reason.split(": ", 1)[1])
        return None

    # Parameters, checked by the server as they are typed ----------------------------------------

    @on(ArtifactParameters.Edited)
    def parameters_edited(self) -> None:
        if self._parameters_timer is not None:
            self._parameters_timer.stop()
        self._parameters_timer = self.set_timer(PARAMETERS_CHECK_DELAY, self._check_parameters)

    def _check_parameters(self) -> None:
        try:
            collection = self._collection()
        except ValueError:
            return  # nothing to check yet, or a number already shown wrong in place
        if collection:
            self.check_parameters(collection["artifacts"])

    @work(exclusive=True, group="check-parameters")
    async def check_parameters(self, artifacts: list[dict[str, Any]]) -> None:
        """What the server says of the values (the same check create_hunt makes), shown under
        the field it names; nothing if they changed meanwhile."""
        try:
            await self.app.api.compile_artifacts(artifacts=artifacts)
        except ServiceError as error:
            try:
                current = self._collection().get("artifacts")
            except ValueError:
                return
            if current == artifacts:
                self._parameter_problem(str(error))

    def action_cancel(self) -> None:
        # Escape closes an open select's list first: the form is not lost to it.
        for select in self.query(Select):
            if select.expanded:
                select.expanded = False
                select.focus()
                return
        if not self.has_input:
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(
            ConfirmScreen("Discard the new hunt?", "What was typed in the form is lost."),
            answered)


_LIMIT_NUMBERS = {
    "rate": (False, "rate"), "limit": (True, "client limit"), "timeout": (False, "timeout"),
    "max_rows": (True, "max rows"), "max_upload_mb": (False, "max upload MB"),
}
_LIMIT_IDS = ("rate", "limit", "expires", "timeout", "max_rows", "max_upload_mb")
_SCHEDULE_IDS = ("start_at", "max_errors")
_FORM_INPUTS = ("description", *_LIMIT_IDS, *_SCHEDULE_IDS)


def lifetime_text(seconds: float) -> str:
    """A lifetime as the expiry field takes it, in the largest unit that says it whole to the
    minute (to the hour beyond two days, the day beyond thirty): ``7d``, ``36h``, ``90m``."""
    minutes = max(round(seconds / 60), 1)
    if minutes >= 30 * 24 * 60:
        minutes = round(minutes / (24 * 60)) * 24 * 60
    elif minutes >= 2 * 24 * 60:
        minutes = round(minutes / 60) * 60
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def form_values(hunt: dict[str, Any] | None) -> dict[str, str]:
    """What the form's fields open with: the defaults, or ``hunt``'s specification (its
    expiry as the lifetime it was given; a VQL query only when it was not compiled from
    artifacts)."""
    if hunt is None:
        return {
            "description": "", "query": "", "client_condition": DEFAULT_CLIENT_CONDITION,
            "server_condition": "", "rate": "0", "limit": "0", "expires": "7d",
            "timeout": f"{DEFAULT_LIMITS.timeout:g}", "max_rows": str(DEFAULT_LIMITS.max_rows),
            "max_upload_mb": str(DEFAULT_LIMITS.max_upload_bytes // MIB), "max_errors": "0",
        }
    return {
        "description": str(hunt.get("description") or ""),
        "query": "" if hunt.get("artifacts") else str(hunt.get("query") or ""),
        "client_condition": str(hunt.get("client_condition") or ""),
        "server_condition": str(hunt.get("server_condition") or ""),
        "rate": f"{float(hunt.get('rate') or 0):g}",
        "limit": str(int(hunt.get("limit") or 0)),
        "expires": lifetime_text(float(hunt["expires"]) - float(hunt["created"])),
        "timeout": f"{float(hunt.get('timeout') or 0):g}",
        "max_rows": str(int(hunt.get("max_rows") or 0)),
        "max_upload_mb": f"{int(hunt.get('max_upload_bytes') or 0) / MIB:.10g}",
        "max_errors": max_errors_text(hunt),
    }


def _refusal(field_id: str, classes: str = "") -> Static:
    """The line under a field where a refusal of its value is written (hidden until then)."""
    return Static("", id=f"{field_id}-refusal", classes=f"refusal {classes}".strip())
