"""Small modal dialogs: confirm, export (options, then progress), and a one-line input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, Select, Static

from velotui.display import size
from velotui.export_receiver import ExportReceiveError, ReceiveProgress, receive_export
from velotui.server.errors import ServiceError


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y`` or enter confirms, ``n`` or escape declines."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="yes"),
        Binding("n,escape", "answer(False)", "No", id="no"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="title")
            if self.detail:
                yield Static(self.detail, classes="detail")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="confirm", variant="error")
                yield Button("No (n)", id="decline")

    def on_mount(self) -> None:
        self.query_one("#decline", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text; enter gives it, escape gives None."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel")]

    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Input(placeholder=self.placeholder, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass
class ExportOptions:
    path: str
    format: str = "json"
    summary: bool = False


class ExportScreen(ModalScreen[None]):
    """Where (a file on this machine, whichever machine the server is on) and how to export a
    hunt, then a progress bar while the zip arrives."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("ctrl+s", "export", "Export", id="export", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel"),
    ]

    def __init__(self, hunt_id: str, options: ExportOptions) -> None:
        super().__init__()
        self.hunt_id = hunt_id
        self.options = options
        self.running = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Export {self.hunt_id}", classes="title")
            yield Label("Zip file (on this machine)")
            yield Input(self.options.path, id="path")
            with Horizontal(classes="row"):
                yield Select([("JSON", "json"), ("CSV", "csv"), ("both", "both")],
                             value=self.options.format, allow_blank=False, id="format")
                yield Checkbox("summary only", self.options.summary, id="summary")
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Static("ctrl+s export · escape cancel", id="hint", classes="detail")

    def on_mount(self) -> None:
        self.query_one("#progress", ProgressBar).display = False
        self.query_one("#path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_export()

    def action_cancel(self) -> None:
        if not self.running:  # an export under way finishes; its notification says where
            self.dismiss(None)

    def action_export(self) -> None:
        if self.running:
            return
        path = self.query_one("#path", Input).value.strip()
        if not path:
            self.app.notify("Give the zip file's path.", severity="warning")
            return
        if not Path(path).is_absolute():
            path = str(Path.cwd() / path)
        self.options = ExportOptions(
            path=path,
            format=str(self.query_one("#format", Select).value),
            summary=self.query_one("#summary", Checkbox).value,
        )
        self.running = True
        self.query_one("#progress", ProgressBar).display = True
        self.query_one("#hint", Static).update("receiving…")
        self.write_zip()

    @work(exclusive=True)
    async def write_zip(self) -> None:
        bar = self.query_one("#progress", ProgressBar)
        hint = self.query_one("#hint", Static)

        def show(progress: ReceiveProgress) -> None:
            bar.update(total=max(progress.clients_total, 1), progress=progress.clients_done)
            hint.update(f"receiving… {progress.rows} rows, {size(progress.bytes_received)}")

        events = self.app.api.export_hunt(hunt_id=self.hunt_id, format=self.options.format,
                                          summary=self.options.summary)
        try:
            received = await receive_export(events, self.options.path, show)
        except (ServiceError, ExportReceiveError) as error:
            self.app.notify(str(error), title="Export failed", severity="error")
            self.running = False
            self.dismiss(None)
            return
        self.running = False
        self.app.notify(
            f"{received.path}\nSHA-256 {received.sha256}\n{received.clients} clients,"
            f" {received.rows} rows, {size(received.bytes)}",
            title=f"{self.hunt_id} exported", timeout=10,
        )
        self.dismiss(None)
