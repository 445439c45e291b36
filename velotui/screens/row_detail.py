"""One row in full: every field one after another, nested values as pretty JSON, long values whole.

A table cell stops at the column's width; this is where the rest is read (enter on any row of
the console's tables opens it), and where a row or cell is copied as JSON (`y`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from velotui.clipboard import copy_json

# A flat list or map at most this long is shown on one line, longer or nested ones indented.
ONE_LINE_JSON = 60


def field_text(value: Any) -> str:
    """How a field's value is shown: text as it is, a dict or list as JSON (indented unless
    short and flat), anything else (numbers, true/false, null) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        one_line = json.dumps(value, ensure_ascii=False, default=str)
        if len(one_line) <= ONE_LINE_JSON and not any(
                isinstance(item, dict | list | tuple)
                for item in (value.values() if isinstance(value, dict) else value)):
            return one_line  # a short flat list or map reads best on one line
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return json.dumps(value, ensure_ascii=False, default=str)


class RowDetailScreen(ModalScreen[None]):
    """Every field of ``row``; ``column`` (when given) is the selected cell, marked and copied
    by `y` (`Y` copies the row)."""

    CSS_PATH = "row_detail.tcss"
    BINDINGS = [
        Binding("escape,enter,q", "close", "Close", id="close"),
        Binding("y", "copy", "Copy", id="copy"),
        Binding("Y", "copy_row", "Copy row", id="copy-row", show=False),
        Binding("j,down", "scroll('scroll_down')", "Down", show=False),
        Binding("k,up", "scroll('scroll_up')", "Up", show=False),
        Binding("pagedown,ctrl+d,space", "scroll('scroll_page_down')", "Page down", show=False),
        Binding("pageup,ctrl+u", "scroll('scroll_page_up')", "Page up", show=False),
        Binding("g,home", "scroll('scroll_home')", "Top", show=False),
        Binding("G,end", "scroll('scroll_end')", "Bottom", show=False),
    ]

    def __init__(self, title: str, row: Mapping[str, Any], column: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.row = dict(row)
        self.column = column if column in self.row else None

    def compose(self) -> ComposeResult:
        copy_hint = (f"y copy {self.column}, Y copy the row" if self.column is not None
                     else "y copy the row as JSON")
        with Vertical(id="detail-frame"):
            yield Label(Text(self.title_text, no_wrap=True, overflow="ellipsis"),
                        id="detail-title")
            with VerticalScroll(id="detail-fields"):
                for name, value in self.row.items():
                    selected = " -selected" if name == self.column else ""
                    yield Label(Text(name), classes="field-name" + selected)
                    yield Static(Text(field_text(value)), classes="field-value" + selected)
            yield Static(f"{copy_hint} · j/k scroll · g/G top/bottom · esc close",
                         id="detail-keys", markup=False)

    def on_mount(self) -> None:
        fields = self.query_one("#detail-fields", VerticalScroll)
        fields.focus()
        if self.column is not None:
            # The selected cell in view, after the first layout has placed it.
            selected = self.query_one(".field-name.-selected")
            self.call_after_refresh(fields.scroll_to_widget, selected, animate=False, top=True)

    def action_scroll(self, how: str) -> None:
        fields = self.query_one("#detail-fields", VerticalScroll)
        getattr(fields, how)(animate=False)

    def action_copy(self) -> None:
        if self.column is not None:
            copy_json(self.app, self.row[self.column], what=f"{self.column}")
        else:
            copy_json(self.app, self.row, what="row")

    def action_copy_row(self) -> None:
        copy_json(self.app, self.row, what="row")

    def action_close(self) -> None:
        self.dismiss(None)
