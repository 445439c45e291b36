"""Which columns a table shows: a checklist of every column, in the table's own order."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList, Static


class ColumnChooser(ModalScreen[list[str] | None]):
    """Tick the ``columns`` to show (``shown`` are ticked at first); dismissed with the ticked
    ones in the order of ``columns`` (enter), or None (esc)."""

    CSS_PATH = "column_chooser.tcss"
    BINDINGS = [
        # Above the list's own enter (which would toggle the option).
        Binding("enter", "apply", "Apply", id="apply", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("j", "move('cursor_down')", "Down", show=False),
        Binding("k", "move('cursor_up')", "Up", show=False),
        Binding("a", "all", "All", id="all"),
    ]

    def __init__(self, columns: list[str], shown: list[str]) -> None:
        super().__init__()
        self.columns = list(dict.fromkeys(columns))
        self.shown = set(shown)

    def compose(self) -> ComposeResult:
        with Vertical(id="chooser-frame"):
            yield Label("Columns", id="chooser-title")
            yield SelectionList[str](
                *[(Text(name), name, name in self.shown) for name in self.columns],
                id="chooser-list",
            )
            yield Static("space show/hide · a all · enter apply · esc cancel",
                         id="chooser-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    @property
    def chosen(self) -> list[str]:
        """The ticked columns, in the table's order."""
        ticked = set(self.query_one(SelectionList).selected)
        return [name for name in self.columns if name in ticked]

    def action_move(self, how: str) -> None:
        getattr(self.query_one(SelectionList), f"action_{how}")()

    def action_all(self) -> None:
        self.query_one(SelectionList).select_all()

    def action_apply(self) -> None:
        chosen = self.chosen
        if not chosen:
            self.notify("Choose at least one column (space ticks it).", severity="warning")
            return
        self.dismiss(chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)
