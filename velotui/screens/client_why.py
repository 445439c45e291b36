"""Why a client stands where it does in a hunt (``w`` on a hunt's clients tab): the server's
explanation in plain words first, then its details field by field, as a row's detail shows
them; ``y`` copies the whole explanation as JSON."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from velotui.clipboard import copy_json
from velotui.screens.row_detail import RowDetailScreen, field_text


class ClientWhyScreen(RowDetailScreen):
    """``explanation`` as ``explain_hunt_client`` gives it: hunt_id, client_id, status,
    summary, details."""

    def __init__(self, explanation: dict[str, Any]) -> None:
        details = explanation.get("details") or {}
        super().__init__(f"Why {explanation.get('client_id')} in {explanation.get('hunt_id')}",
                         details if isinstance(details, dict) else {"details": details})
        self.explanation = explanation

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-frame"):
            yield Label(Text(f"{self.title_text}: {self.explanation.get('status')}",
                             no_wrap=True, overflow="ellipsis"), id="detail-title")
            with VerticalScroll(id="detail-fields"):
                yield Static(Text(str(self.explanation.get("summary") or "")), id="why-summary")
                for name, value in self.row.items():
                    yield Label(Text(name), classes="field-name")
                    yield Static(Text(field_text(value)), classes="field-value")
            yield Static("y copy as JSON · j/k scroll · g/G top/bottom · esc close",
                         id="detail-keys", markup=False)

    def action_copy(self) -> None:
        copy_json(self.app, self.explanation, what="the explanation")

    def action_copy_row(self) -> None:
        self.action_copy()
