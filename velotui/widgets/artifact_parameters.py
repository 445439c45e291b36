"""The parameter form of one artifact chosen for a collection, built from its parameters' types.

A field per parameter, prefilled with its default: a checkbox for ``bool``, a select for
``choices``, a text area for the types that hold several lines (``csv``, ``json``,
``json_array``, ``yara``), a one-line input otherwise. Numbers are checked as they are typed;
every other value is checked by the server, whose one-line reason ``show_problem`` puts under the
field. Values are text, as Velociraptor passes them (a bool is "Y" or "").
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, TextArea

TRUE_WORDS = ("Y", "YES", "TRUE", "OK")  # what Velociraptor reads as true in a bool's text
MULTILINE_TYPES = ("csv", "json", "json_array", "yara")
HIDDEN_TYPES = ("hidden",)  # Velociraptor's forms leave these out: their default is used
_WHOLE_NUMBER = re.compile(r"[-+]?(0x[0-9a-fA-F]+|\d+)")
_NUMBER_CHECKS = {"int": "whole", "int64": "whole", "integer": "whole", "float": "number"}

Field = Input | Checkbox | Select[str] | TextArea


class ParameterProblem(ValueError):
    """A value the form already knows to be wrong; ``field`` is where it is."""

    def __init__(self, message: str, field: Widget) -> None:
        super().__init__(message)
        self.field = field


def number_problem(kind: str, text: str) -> str | None:
    """Why ``text`` is not a value of numeric type ``kind`` (None when it is, or when ``kind``
    is not numeric). Empty text is allowed: the artifact then gets no number."""
    check = _NUMBER_CHECKS.get(kind)
    text = text.strip()
    if check is None or not text:
        return None
    if check == "whole":
        return None if _WHOLE_NUMBER.fullmatch(text) else "not a whole number"
    try:
        float(text)
    except ValueError:
        return "not a number"
    return None


def _initial(parameter: dict[str, Any]) -> str:
    return str(parameter.get("default") or "")


class ArtifactParameters(Vertical):
    """One chosen artifact: its name, a remove button, and a field per parameter."""

    DEFAULT_CSS = """
    ArtifactParameters {
        height: auto;
        border: round $primary-muted;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        margin-top: 1;
    }
    ArtifactParameters:focus-within {
        border: round $primary;
    }
    ArtifactParameters > .artifact-heading {
        height: auto;
    }
    ArtifactParameters > .artifact-heading > .artifact-about {
        width: 1fr;
        color: $text-muted;
    }
    ArtifactParameters > .artifact-heading > Button {
        min-width: 10;
    }
    ArtifactParameters > .parameter-label {
        margin-top: 1;
        width: 1fr;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ArtifactParameters > TextArea {
        height: 4;
    }
    ArtifactParameters > Checkbox {
        margin-top: 1;
    }
    ArtifactParameters > .parameter-problem {
        color: $text-error;
        text-style: bold;
        display: none;
    }
    ArtifactParameters > .parameter-problem.-shown {
        display: block;
    }
    """

    class Edited(Message):
        """A value in ``form`` changed (checked in place already; the server's turn next)."""

        def __init__(self, form: ArtifactParameters) -> None:
            super().__init__()
            self.form = form

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ArtifactParameters.Edited) and message.form is self.form

    def __init__(self, artifact: dict[str, Any], values: dict[str, Any] | None = None) -> None:
        """The form of ``artifact`` (as ``list_artifacts`` gives it), its fields holding
        ``values`` where given (a copied hunt's), else the defaults."""
        super().__init__()
        self.artifact = artifact
        self._given = {str(name): str(value) for name, value in (values or {}).items()}
        self.fields: dict[str, Field] = {}
        self._problems: dict[str, Static] = {}
        self.border_title = Text(str(artifact["name"]))  # drawn as it is, never as markup

    @property
    def artifact_name(self) -> str:
        return str(self.artifact["name"])

    @property
    def shown_parameters(self) -> list[dict[str, Any]]:
        return [p for p in self.artifact.get("parameters") or []
                if p.get("type") not in HIDDEN_TYPES]

    def compose(self) -> ComposeResult:
        parameters = self.shown_parameters
        with Horizontal(classes="artifact-heading"):
            count = len(parameters)
            about = f"{count} parameter{'s' if count != 1 else ''}" if count else \
                "no parameters to set"
            yield Label(about, classes="artifact-about")
            yield Button("Remove", classes="remove", compact=True)
        for parameter in parameters:
            yield from self._field(parameter)

    def _field(self, parameter: dict[str, Any]) -> ComposeResult:
        name, kind = str(parameter["name"]), str(parameter.get("type") or "string")
        initial = self._given.get(name, _initial(parameter))
        label = Text.assemble((str(parameter.get("friendly_name") or name), "bold"),
                              (f" ({kind})", "dim"))
        if parameter.get("description"):
            label.append(" " + " ".join(str(parameter["description"]).split()))
        field: Field
        if kind == "bool":
            field = Checkbox(label, initial.strip().upper() in TRUE_WORDS, compact=True)
        else:
            yield Label(label, classes="parameter-label")
            choices = [str(choice) for choice in parameter.get("choices") or []]
            if kind == "choices" and choices:
                field = Select([(Text(choice), choice) for choice in choices],
                               value=initial if initial in choices else choices[0],
                               allow_blank=False, compact=True)
            elif kind in MULTILINE_TYPES or "\n" in initial:
                field = TextArea(initial, soft_wrap=True, tab_behavior="focus", compact=True)
            else:
                field = Input(initial, compact=True)
        self.fields[name] = field
        yield field
        problem = Static("", classes="parameter-problem")
        self._problems[name] = problem
        yield problem

    # Values ------------------------------------------------------------------------------------

    def _text(self, name: str) -> str:
        field = self.fields[name]
        if isinstance(field, Checkbox):
            return "Y" if field.value else ""
        if isinstance(field, Select):
            return str(field.value)
        if isinstance(field, TextArea):
            return field.text
        return field.value

    def values(self) -> dict[str, str]:
        """The values the operator changed from their defaults, as text (the others are the
        artifact's own defaults, so are left to it). Raises ParameterProblem for a value
        already known to be wrong."""
        changed: dict[str, str] = {}
        for parameter in self.shown_parameters:
            name = str(parameter["name"])
            text = self._text(name)
            problem = number_problem(str(parameter.get("type")), text)
            if problem is not None:
                self.show_problem(name, problem)
                raise ParameterProblem(f"{self.artifact_name}: parameter {name}: {problem}",
                                       self.fields[name])
            default = _initial(parameter)
            if parameter.get("type") == "bool":
                unchanged = (text == "Y") == (default.strip().upper() in TRUE_WORDS)
            else:
                unchanged = text == default
            if not unchanged:
                changed[name] = text
        return changed

    # Problems ----------------------------------------------------------------------------------

    def show_problem(self, name: str, reason: str) -> Widget | None:
        """Show ``reason`` under parameter ``name``'s field; that field (None when the artifact
        shows no such parameter)."""
        problem = self._problems.get(name)
        if problem is None:
            return None
        problem.update(Text(reason))
        problem.add_class("-shown")
        return self.fields[name]

    def clear_problem(self, name: str) -> None:
        problem = self._problems.get(name)
        if problem is not None:
            problem.remove_class("-shown")

    @on(Input.Changed)
    def _checked_as_typed(self, event: Input.Changed) -> None:
        name = next((n for n, f in self.fields.items() if f is event.input), None)
        if name is None:
            return
        parameter = next(p for p in self.shown_parameters if p["name"] == name)
        problem = number_problem(str(parameter.get("type")), event.value)
        if problem is None:
            self.clear_problem(name)
        else:
            self.show_problem(name, problem)
        self.post_message(self.Edited(self))

    @on(TextArea.Changed)
    @on(Checkbox.Changed)
    @on(Select.Changed)
    def _edited(self, event: TextArea.Changed | Checkbox.Changed | Select.Changed) -> None:
        # The server's reason for the old value no longer holds.
        field = event.control
        for name, candidate in self.fields.items():
            if candidate is field:
                self.clear_problem(name)
        self.post_message(self.Edited(self))
