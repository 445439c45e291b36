"""The keys every screen that shows a hunt offers: start, stop, relaunch, export."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

HUNT_BINDINGS = [
    Binding("s", "start_hunt", "Start", id="start"),
    Binding("x", "stop_hunt", "Stop", id="stop"),
    Binding("r", "relaunch_hunt", "Relaunch", id="relaunch"),
    Binding("e", "export_hunt", "Export", id="export"),
]


class HuntActions:
    """Mixed into a screen that knows its ``selected_hunt_id``."""

    app: Any

    @property
    def selected_hunt_id(self) -> str | None:  # pragma: no cover - each screen overrides it
        raise NotImplementedError

    def _hunt_or_say_so(self) -> str | None:
        hunt_id = self.selected_hunt_id
        if hunt_id is None:
            self.app.notify("No hunt selected: press n to create one.", severity="warning")
        return hunt_id

    async def action_start_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            await self.app.start_hunt(hunt_id)

    def action_stop_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            self.app.confirm_stop(hunt_id)

    async def action_relaunch_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            await self.app.relaunch_hunt(hunt_id)

    def action_export_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            self.app.export_hunt(hunt_id)
