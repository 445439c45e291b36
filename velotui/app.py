"""The console: the Textual app. It owns the state (the hunts, the link to the server) and the
actions on hunts; each screen and widget is its own module and draws what the app holds.

The embedded server runs on its own event loop and thread (or elsewhere, reached over the
network); either way the app only calls the operator API and awaits its answers, so its own loop
draws frames and reads keys whatever the server is doing. It never touches SQL or sockets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from textual import work
from textual.actions import ActionParseResult
from textual.actions import parse as parse_action
from textual.binding import Binding
from textual.dom import DOMNode
from textual.message import Message

from velotui.key_order import KeysInOrder
from velotui.screens.commands import ConsoleCommands
from velotui.screens.dialogs import ConfirmScreen, ExportOptions, ExportScreen
from velotui.screens.help import HelpScreen
from velotui.screens.hunts import HuntsScreen
from velotui.screens.operator_keys import key_refusal
from velotui.server.datastore import DatastoreError
from velotui.server.errors import ServiceError
from velotui.server_link import EmbeddedLink, ServerLink
from velotui.widgets import vql_editor

PUBLISH_INTERVAL = 0.25
FLEET_INTERVAL = 2.0
RECONNECT_FIRST = 0.5
RECONNECT_LONGEST = 10.0


class HuntsChanged(Message):
    """The hunts the app holds changed; floods collapse to the latest."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HuntsChanged)


class VelotuiApp(KeysInOrder):
    """velotui's console.

    ``q`` (on the hunts screen only) and ``ctrl+q`` (anywhere) quit through ``action_quit``,
    which asks first when quitting would stop running hunts or lose a form's input."""

    TITLE = "velotui"
    CSS_PATH = "app.tcss"
    COMMANDS = KeysInOrder.COMMANDS | {ConsoleCommands}
    BINDINGS = [
        Binding("question_mark", "help", "Keys", id="help"),
        Binding("c", "clients", "Clients", id="clients"),
    ]

    def __init__(self, link: ServerLink, *, clock: Callable[[], float] = time.time,
                 follow: bool = True) -> None:
        super().__init__()
        self.link = link
        self.clock = clock
        self.follow = follow  # False in snapshot tests: draw what is stored, no live updates
        self.api: Any = None
        self.hunts: dict[str, dict[str, Any]] = {}
        self.operator: dict[str, Any] | None = None  # who the console acts as: {"name", "role"}
        self.failure: str | None = None
        self.reconnecting = False
        self._hunts_dirty = False
        self._asking_to_quit = False

    # Start and stop -----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.theme = "textual-dark"
        # Off this loop and while the server starts: the first VQL editor shown then opens
        # without building the lexer first.
        threading.Thread(target=vql_editor.prepare, name="velotui-vql", daemon=True).start()
        try:
            self.api = await self.link.start()
        except (OSError, ServiceError, DatastoreError) as error:
            # Printed once, by the command, after the terminal is given back.
            self.failure = f"velotui: cannot start: {error}"
            self.exit(1)
            return
        self.operator = (await self.api.server_info()).get("operator")
        # Archived ones too: the hunts screen hides them until H shows them.
        for hunt in await self.api.list_hunts(all=True):
            self.hunts[hunt["hunt_id"]] = hunt
        await self.update_fleet_summary()
        await self.push_screen(HuntsScreen())
        if self.follow:
            self.follow_hunts()
            self.set_interval(PUBLISH_INTERVAL, self._publish_hunts)
            self.set_interval(FLEET_INTERVAL, self.update_fleet_summary)

    async def update_fleet_summary(self) -> None:
        """The header says how many clients are known and online."""
        if self.reconnecting:
            return  # the header says so meanwhile
        try:
            info = await self.api.server_info()
        except ServiceError:
            return  # follow_hunts reports a lost server
        if self.reconnecting:
            return
        self.operator = info.get("operator", self.operator)  # a role changed meanwhile
        self.sub_title = f"{info['online']} of {info['clients']} clients online{self.acting_as}"
        self.screen.refresh_bindings()

    @property
    def acting_as(self) -> str:
        """" · as NAME (role)" for the header: who the server takes this console for."""
        if not self.operator:
            return ""
        return f" · as {self.operator['name']} ({self.operator['role']})"

    def key_refusal(self, action: str) -> str | None:
        """Why the operator's role may not use the key for ``action``; None when it may."""
        return key_refusal(self.operator, action)

    async def run_action(self, action: str | ActionParseResult,
                         default_namespace: DOMNode | None = None,
                         namespaces: Mapping[str, DOMNode] | None = None) -> bool:
        """A key the role does not allow says so in one line rather than doing nothing."""
        name = parse_action(action)[1] if isinstance(action, str) else action[1]
        refused = self.key_refusal(name)
        if refused is not None:
            self.notify(refused, title="Not allowed", severity="warning")
            return True
        return await super().run_action(action, default_namespace, namespaces)

    async def on_unmount(self) -> None:
        await self.link.stop()

    @work(exclusive=True, group="follow-hunts")
    async def follow_hunts(self) -> None:
        """Keep ``hunts`` current from the server's pushes; when a --connect'ed server goes
        away (restarted), reconnect and go on."""
        while True:
            reason = "the server ended the updates"
            try:
                async for event in self.api.watch_hunts():
                    if event.get("event") == "hunt_deleted":
                        self.forget_hunt(str(event["hunt_id"]))
                        continue
                    hunt = event["hunt"]
                    self.hunts[hunt["hunt_id"]] = hunt
                    self._hunts_dirty = True
            except ServiceError as error:
                reason = str(error)
            if not self.link.can_reconnect:
                # The embedded server died: say so rather than show stale counts.
                self.failure = f"velotui: lost the server: {reason}"
                self.exit(1)
                return
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Retry, waiting longer each time, until the server answers; then reload the hunts
        (what changed meanwhile was not pushed)."""
        self.reconnecting = True
        where = self.link.server_address
        delay = RECONNECT_FIRST
        self.sub_title = f"reconnecting to {where}…"
        while True:
            try:
                self.api = await self.link.reconnect()
                hunts = await self.api.list_hunts(all=True)
                break
            except ServiceError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_LONGEST)
        self.hunts.clear()
        self.hunts.update((hunt["hunt_id"], hunt) for hunt in hunts)
        self.reconnecting = False
        self.notify(f"reconnected to {where}")
        await self.update_fleet_summary()
        self._hunts_dirty = True
        self._publish_hunts()

    def _publish_hunts(self) -> None:
        # Pushes may come many times a second; screens redraw at most this often.
        if self._hunts_dirty:
            self._hunts_dirty = False
            self.screen.post_message(HuntsChanged())

    def hunts_newest_first(self) -> list[dict[str, Any]]:
        return sorted(self.hunts.values(), key=lambda h: h["created"], reverse=True)

    # Global actions -----------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit, asking first when that stops running hunts or loses a form's input."""
        if self._asking_to_quit:
            return  # the question is on screen: y or n answers it
        losses = self.quit_losses()
        if not losses:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            self._asking_to_quit = False
            if yes:
                self.exit()

        self._asking_to_quit = True
        self.push_screen(ConfirmScreen("Quit velotui?", " ".join(losses)), answered)

    def quit_losses(self) -> list[str]:
        """What quitting now would stop or lose, one sentence each (none: quit at once)."""
        losses = []
        running = sum(1 for hunt in self.hunts.values() if hunt["state"] == "running")
        if running and isinstance(self.link, EmbeddedLink):
            fleet = f" and the demo fleet of {self.link.demo}" if self.link.demo else ""
            hunts = "1 hunt is" if running == 1 else f"{running} hunts are"
            losses.append(f"{hunts} running: quitting stops the embedded server{fleet}, so"
                          " no client is recruited until the console is started again.")
        if any(getattr(screen, "has_input", False) for screen in self.screen_stack):
            losses.append("The new hunt's form holds input that will be lost.")
        return losses

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_clients(self) -> None:
        from velotui.screens.clients import ClientsScreen

        if not isinstance(self.screen, ClientsScreen):
            self.push_screen(ClientsScreen())

    # Actions on a hunt (the screens call these with the hunt they show) ------------------------

    async def call(self, method: str, success: str | None = None, **params: Any) -> Any:
        """Call the operator API; a refusal becomes a notification, not a traceback."""
        try:
            result = await getattr(self.api, method)(**params)
        except ServiceError as error:
            self.notify(str(error), title="Refused", severity="error")
            return None
        if success:
            self.notify(success)
        return result

    async def start_hunt(self, hunt_id: str) -> None:
        scheduled = self.hunts.get(hunt_id, {}).get("state") == "scheduled"
        said = f"{hunt_id} started" + (" ahead of its schedule" if scheduled else "")
        hunt = await self.call("start_hunt", said, hunt_id=hunt_id)
        self.remember_hunt(hunt)

    def confirm_stop(self, hunt_id: str) -> None:
        """Ask first: stopping cancels every collection in flight (or a scheduled start)."""

        async def answered(yes: bool | None) -> None:
            if yes:
                hunt = await self.call("stop_hunt", f"{hunt_id} stopped", hunt_id=hunt_id)
                self.remember_hunt(hunt)

        if self.hunts.get(hunt_id, {}).get("state") == "scheduled":
            question, detail = f"Cancel {hunt_id}?", "Its scheduled start is cancelled: it stops."
        else:
            question = f"Stop {hunt_id}?"
            detail = "Recruiting ends and collections in flight are cancelled."
        self.push_screen(ConfirmScreen(question, detail), answered)

    async def relaunch_hunt(self, hunt_id: str) -> None:
        hunt = await self.call("relaunch_hunt", hunt_id=hunt_id)
        if hunt is not None:
            self.notify(f"{hunt_id}: {hunt['relaunched']} clients relaunched")
            self.remember_hunt(hunt)

    def export_hunt(self, hunt_id: str) -> None:
        # The zip lands on this machine, by default in the folder the console was started in.
        default = Path.cwd() / f"{hunt_id}.zip"
        self.push_screen(ExportScreen(hunt_id, ExportOptions(path=str(default))))

    def remember_hunt(self, hunt: dict[str, Any] | None) -> None:
        """Hold ``hunt`` as an action's answer gave it (None: the action was refused)."""
        if hunt is not None:
            hunt = {k: v for k, v in hunt.items() if k not in ("relaunched", "changed")}
            self.hunts[hunt["hunt_id"]] = hunt
            self._hunts_dirty = True
            self._publish_hunts()

    def forget_hunt(self, hunt_id: str) -> None:
        """A hunt deleted (here or elsewhere): gone from the screens, and a detail screen
        showing it is closed."""
        if self.hunts.pop(hunt_id, None) is None:
            return
        if getattr(self.screen, "hunt_id", None) == hunt_id:
            self.screen.dismiss(None)  # one under a dialog closes itself when shown again
        self._hunts_dirty = True
        self._publish_hunts()
