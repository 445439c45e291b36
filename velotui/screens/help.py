"""Every key, for the screen below and the whole app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

SECTIONS = [
    ("Everywhere", [("q", "quit"), ("?", "this list"), ("c", "clients"),
                    ("ctrl+p", "command palette"), ("escape", "back / cancel")]),
    ("Hunts", [("n", "new hunt"), ("enter", "open the selected hunt"), ("s", "start"),
               ("x", "stop (asks first)"), ("r", "relaunch the clients in errors"),
               ("e", "export as a zip"), ("up/down", "select")]),
    ("New hunt", [("tab / shift+tab", "next / previous field"),
                  ("ctrl+t", "collection: a VQL query, or artifacts"),
                  ("up/down enter", "artifacts: choose a match, add it"),
                  ("ctrl+r", "remove the artifact being edited"),
                  ("ctrl+s", "create"), ("escape", "cancel")]),
    ("Hunt detail", [("1 2 3 4", "overview, clients, results, log"),
                     ("f", "clients: show the next queue (all, pending, running, ...)"),
                     ("[ ]", "results: previous / next page"), ("s x r e", "as on hunts")]),
    ("Clients", [("+", "add a label to the selected client"), ("-", "remove a label")]),
]


class HelpScreen(ModalScreen[None]):
    """The keys, grouped by screen."""

    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close", id="close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            for title, keys in SECTIONS:
                yield Label(title, classes="section")
                for key, meaning in keys:
                    yield Static(f"  [b]{key:<16}[/b] {meaning}")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
