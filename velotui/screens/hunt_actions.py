"""The keys every screen that shows a hunt offers: start, pause, stop, edit, relaunch, export,
copy into a new hunt, archive and delete."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

from velotui.display import size

HUNT_BINDINGS = [
    Binding("s", "start_hunt", "Start", id="start"),
    Binding("p", "pause_hunt", "Pause", id="pause"),
    Binding("x", "stop_hunt", "Stop", id="stop"),
    Binding("u", "edit_hunt", "Edit", id="edit"),
    Binding("r", "relaunch_hunt", "Relaunch", id="relaunch"),
    Binding("e", "export_hunt", "Export", id="export"),
    # Rarer, and the footer of 80 columns is full: the list of keys (?) has them.
    Binding("C", "copy_hunt", "Copy to new", id="copy-hunt", show=False),
    Binding("A", "archive_hunt", "Archive", id="archive", show=False),
    Binding("D", "delete_hunt", "Delete", id="delete", show=False),
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

    async def action_pause_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            hunt = await self.app.call(
                "pause_hunt", f"{hunt_id} paused: collections in flight finish", hunt_id=hunt_id)
            self.app.remember_hunt(hunt)

    def action_stop_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            self.app.confirm_stop(hunt_id)

    async def action_relaunch_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            await self.app.relaunch_hunt(hunt_id)

    def action_export_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            self.app.export_hunt(hunt_id)

    def action_edit_hunt(self) -> None:
        from velotui.screens.hunt_edit import HuntEditScreen

        if (hunt_id := self._hunt_or_say_so()) and (hunt := self.app.hunts.get(hunt_id)):
            self.app.push_screen(HuntEditScreen(hunt))

    def action_copy_hunt(self) -> None:
        """The new-hunt form, filled in from the selected hunt (nothing is created until
        ctrl+s there)."""
        from velotui.screens.new_hunt import NewHuntScreen

        if (hunt_id := self._hunt_or_say_so()) and (hunt := self.app.hunts.get(hunt_id)):
            self.app.push_screen(NewHuntScreen(copy_of=hunt))

    async def action_archive_hunt(self) -> None:
        if hunt_id := self._hunt_or_say_so():
            hunt = await self.app.call("archive_hunt",
                                       f"{hunt_id} archived (H shows archived hunts)",
                                       hunt_id=hunt_id)
            self.app.remember_hunt(hunt)

    def action_delete_hunt(self) -> None:
        """Ask, then delete the hunt with its rows, logs and files, and say what that freed."""
        from velotui.screens.dialogs import ConfirmScreen

        hunt_id = self._hunt_or_say_so()
        if hunt_id is None:
            return

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            deleted = await self.app.call("delete_hunt", hunt_id=hunt_id)
            if deleted is None:
                return
            rows, files = deleted["rows"], deleted["files"]
            self.app.notify(
                f"deleted {hunt_id}: {size(deleted['bytes_freed'])} freed ({rows:,}"
                f" row{'s' if rows != 1 else ''}, {files:,} file{'s' if files != 1 else ''})")
            self.app.forget_hunt(hunt_id)

        self.app.push_screen(
            ConfirmScreen(f"Delete {hunt_id}?",
                          "Its results, logs and uploaded files are removed for good."),
            answered)
