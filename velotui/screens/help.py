"""Every key, for the screen below and the whole app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

SECTIONS = [
    ("Everywhere", [("ctrl+q", "quit (asks if hunts run here)"), ("?", "this list"),
                    ("c", "clients"),
                    ("ctrl+p", "command palette"), ("escape", "back / cancel")]),
    ("Every table", [("up/down j/k", "move"), ("g / G", "first / last row"),
                     ("ctrl+d / ctrl+u", "half a page down / up"),
                     ("/", "filter as you type; enter keeps it, esc clears it"),
                     ("enter", "open the row (its detail, or the hunt)")]),
    ("Hunts", [("q", "quit (asks if hunts run here)"), ("n", "new hunt"),
               ("enter", "open the selected hunt"), ("y", "copy the hunt as JSON"),
               ("s", "start, resume, or start a scheduled hunt now"),
               ("p", "pause (collections in flight finish)"),
               ("x", "stop (asks first; cancels a scheduled start)"),
               ("u", "edit rate, limit, expiry, max errors, description"),
               ("r", "relaunch the clients in errors"),
               ("e", "export as a zip"), ("C", "copy into a new hunt's form"),
               ("A", "archive (hidden from the list)"), ("H", "show / hide archived hunts"),
               ("D", "delete with its results and files (asks first)"),
               ("P", "hunts awaiting approval (approve / reject)"),
               ("/", "filter by ID, state, description"),
               ("Done/All", "narrow screens: finished of taken on, then errors")]),
    ("New hunt", [("tab / shift+tab", "next / previous field"),
                  ("ctrl+t", "collection: a VQL query, or artifacts"),
                  ("up/down enter", "artifacts: choose a match, add it"),
                  ("ctrl+r", "remove the artifact being edited"),
                  ("ctrl+e", "edit the VQL field in $EDITOR"),
                  ("Start at", "blank: start now or paused; 2026-12-24T18:00 or +2h"),
                  ("ctrl+s", "create"), ("escape", "cancel (asks if anything was typed)")]),
    ("Hunt detail", [("1 2 3 4 5", "overview, clients, results, log, query"),
                     ("left/right", "results, query: move between cells"),
                     ("enter", "the row's detail"), ("y / Y", "copy the cell / the row"),
                     ("t", "stack: count rows by the column's value"),
                     ("v", "choose the columns shown"), ("/", "filter clients or results"),
                     ("f", "clients: show the next queue (all, pending, running, ...)"),
                     ("w", "clients: why the client stands where it does"),
                     ("[ ]", "previous / next page"),
                     ("i / ctrl+r", "query: edit the VQL / run it"),
                     ("s p x u r e", "as on hunts"), ("C A D", "as on hunts")]),
    ("Edit a hunt (u)", [("tab", "next field"), ("ctrl+s", "apply what changed"),
                         ("escape", "cancel")]),
    ("Clients", [("+", "add a label to the selected client"),
                 ("-", "remove a label you added ([label]: the agent's, kept)"),
                 ("enter", "the client's page: its hunts and collections"),
                 ("i", "every fact of the client"), ("y", "copy the client as JSON"),
                 ("/", "filter by ID, host, OS, label")]),
    ("Client page", [("tab", "hunts / collections table"),
                     ("enter", "open the hunt, or the collection's rows"),
                     ("n", "run a collection on this client (VQL or artifacts)"),
                     ("i", "every fact of the client"), ("y", "copy the row as JSON"),
                     ("ctrl+r", "read it again now")]),
    ("Collection", [("ctrl+s", "form: run it"), ("ctrl+t", "form: VQL or artifacts"),
                    ("x", "cancel it while queued or running"),
                    ("enter", "the row's detail"), ("y / Y", "copy the cell / the row"),
                    ("n", "edit its query and run it again")]),
    ("Approvals (P)", [("a", "approve the selected hunt as it is"),
                       ("R", "reject it, with a reason"), ("escape", "back")]),
    ("Row detail", [("y", "copy the row (or the cell opened) as JSON"), ("Y", "copy the row"),
                    ("j/k g/G", "scroll"), ("esc enter q", "close")]),
    ("Stack (t on a column)", [("enter", "filter the results to the value"),
                               ("/", "filter the values"), ("esc", "back")]),
    ("Columns (v)", [("space", "show / hide a column"), ("a", "all"),
                     ("enter", "apply"), ("esc", "cancel")]),
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
