"""Tune a hunt while it runs (``u``): rate, client limit, expiry, error limit, description.

The fields open with the hunt's current values; ``ctrl+s`` sends only the fields that differ
from those (one ``set_hunt`` call) and says what changed; ``escape`` leaves without a change.
A refusal, the dialog's own or the server's, is written under the field it concerns, as the
new-hunt form does.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from velotui.display import rate
from velotui.server.errors import ServiceError

# The fields in order: (id, label, how a server's refusal about it begins).
FIELDS = (
    ("rate", "Rate (clients/min, 0 = unlimited)", ("rate",)),
    ("limit", "Client limit (0 = none)", ("limit", "client limit", "a limit")),
    ("expires", "Expires (12h from now, or a time)", ("expires", "expiry")),
    ("max_errors", "Max errors (N, or N% of recruited)", ("max_errors", "max errors",
                                                          "max-errors", "error limit")),
    ("description", "Description", ("description",)),
)
_MAX_ERRORS = re.compile(r"\d+(\.\d+)?%|\d+")


def expiry_text(expires: float | None) -> str:
    """A hunt's expiry as the field shows it: an ISO 8601 time in UTC, to the minute."""
    if not expires:
        return ""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(expires))


def max_errors_text(hunt: dict[str, Any]) -> str:
    """A hunt's error limit as typed: ``10%``, ``5``, or ``0`` for none."""
    percent = float(hunt.get("max_errors_percent") or 0)
    if percent:
        return f"{percent:g}%"
    return str(int(hunt.get("max_errors") or 0))


def max_errors_problem(text: str) -> str | None:
    """Why ``text`` is no error limit (None when it is one: a count or a share in %)."""
    if _MAX_ERRORS.fullmatch(text.strip()):
        if text.strip().endswith("%") and float(text.strip()[:-1]) > 100:
            return "max errors: a share of at most 100%"
        return None
    return "max errors: a whole number (5) or a share of recruited clients (10%)"


def initial_values(hunt: dict[str, Any]) -> dict[str, str]:
    """The fields' texts for ``hunt`` as it is now."""
    return {
        "rate": f"{float(hunt.get('rate') or 0):g}",
        "limit": str(int(hunt.get("limit") or 0)),
        "expires": expiry_text(hunt.get("expires")),
        "max_errors": max_errors_text(hunt),
        "description": str(hunt.get("description") or ""),
    }


def change_text(field: str, old: Any, new: Any) -> str:
    """One change as the operator reads it: ``rate: 10/min -> 5/min``."""
    def shown(value: Any) -> str:
        if field == "rate" and isinstance(value, int | float):
            return rate(value)
        if field == "expires" and isinstance(value, int | float) and value > 1e8:
            return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))
        if field == "description":
            return repr(str(value))
        return "none" if value in (0, None, "") and field != "description" else str(value)

    return f"{field.replace('_', ' ')}: {shown(old)} -> {shown(new)}"


class HuntEditScreen(ModalScreen[None]):
    """The edit dialog over ``hunt`` (a hunt as the operator API describes it)."""

    CSS_PATH = "hunt_edit.tcss"
    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply", id="apply", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel", priority=True),
    ]

    def __init__(self, hunt: dict[str, Any]) -> None:
        super().__init__()
        self.hunt_id = str(hunt["hunt_id"])
        self.initial = initial_values(hunt)
        self._applying = False

    def compose(self) -> ComposeResult:
        with Vertical(id="edit-dialog"):
            yield Label(f"Edit {self.hunt_id}", classes="title")
            for field_id, label, _starts in FIELDS:
                with Horizontal(classes="edit-row"):
                    yield Label(label, classes="edit-label")
                    yield Input(self.initial[field_id], id=field_id, compact=True)
                yield Static("", id=f"{field_id}-refusal", classes="refusal")
            yield Static("", id="edit-problem", classes="refusal")
            yield Static("ctrl+s apply · esc cancel · only the fields changed are sent",
                         id="edit-keys")

    def on_mount(self) -> None:
        self.query_one("#rate", Input).focus()

    def changes(self) -> dict[str, str]:
        """The fields whose text differs from what the dialog opened with."""
        return {field_id: value for field_id, _label, _starts in FIELDS
                if (value := self.query_one(f"#{field_id}", Input).value.strip())
                != self.initial[field_id].strip()}

    def _problem(self, field_id: str, text: str) -> str | None:
        """What the dialog can tell is wrong with a field's text (the server checks more)."""
        if field_id in ("rate", "limit"):
            try:
                value = float(text) if field_id == "rate" else int(text)
            except ValueError:
                return f"{field_id}: a {'whole ' if field_id == 'limit' else ''}number"
            return f"{field_id}: not below 0" if value < 0 else None
        if field_id == "expires" and not text:
            return "expires: a duration from now (12h, 7d) or a time (2026-12-24T18:00)"
        if field_id == "max_errors":
            return max_errors_problem(text)
        return None

    def refuse(self, field_id: str, reason: str) -> None:
        """Write ``reason`` under ``field_id`` and give that field the focus."""
        refusal = self.query_one(f"#{field_id}-refusal", Static)
        refusal.update(Text(f"Not changed: {reason}"))
        refusal.add_class("-shown")
        self.query_one(f"#{field_id}", Input).focus()

    def _say(self, text: str) -> None:
        problem = self.query_one("#edit-problem", Static)
        problem.update(Text(text))
        problem.set_class(bool(text), "-shown")

    @on(Input.Changed)
    def _clear_refusal(self, event: Input.Changed) -> None:
        field_id = event.input.id or ""
        refusal = self.query_one(f"#{field_id}-refusal", Static)
        if refusal.has_class("-shown") and self._problem(field_id, event.value.strip()) is None:
            refusal.remove_class("-shown")
        self._say("")

    def action_apply(self) -> None:
        if self._applying:
            return
        changes = self.changes()
        if not changes:
            self.app.notify(f"{self.hunt_id}: nothing changed")
            self.dismiss(None)
            return
        for field_id, text in changes.items():
            if (problem := self._problem(field_id, text)) is not None:
                self.refuse(field_id, problem)
                return
        values: dict[str, Any] = dict(changes)
        if "rate" in values:
            values["rate"] = float(values["rate"])
        if "limit" in values:
            values["limit"] = int(values["limit"])
        self._applying = True
        self.apply(values)

    @work(group="apply")
    async def apply(self, values: dict[str, Any]) -> None:
        try:
            hunt = await self.app.api.set_hunt(hunt_id=self.hunt_id, **values)
        except ServiceError as error:
            self._applying = False
            self._refused_by_server(str(error), values)
            return
        changed = hunt.get("changed") or {}
        self.app.remember_hunt(hunt)
        if changed:
            lines = [change_text(field, *pair) for field, pair in changed.items()]
            self.app.notify("\n".join(lines), title=f"{self.hunt_id} changed", timeout=8)
        else:
            self.app.notify(f"{self.hunt_id}: nothing changed")
        self.dismiss(None)

    def _refused_by_server(self, reason: str, values: dict[str, Any]) -> None:
        """Under the field the refusal names; else under the only field sent; else below."""
        lowered = reason.lower()
        for field_id, _label, starts in FIELDS:
            if any(lowered.startswith(start) for start in starts):
                self.refuse(field_id, reason)
                return
        if len(values) == 1:
            self.refuse(next(iter(values)), reason)
            return
        self._say(f"Not changed: {reason}")

    def action_cancel(self) -> None:
        self.dismiss(None)
