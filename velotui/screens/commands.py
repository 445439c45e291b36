"""The command palette (ctrl+p): the actions of the screen below, and the app's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider


class ConsoleCommands(Provider):
    """Offers what the current screen's keys do, by name."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        screen: Any = self.screen
        app: Any = self.app
        commands: list[tuple[str, str, Callable[[], Any]]] = []
        if hasattr(screen, "action_new_hunt"):
            commands.append(("New hunt", "create a hunt (n)", screen.action_new_hunt))
        if hasattr(screen, "action_open_hunt"):
            commands.append(("Open hunt", "the selected hunt in full (enter)",
                             screen.action_open_hunt))
        if hasattr(screen, "selected_hunt_id"):
            commands += [
                ("Start hunt", "start the selected hunt (s)", screen.action_start_hunt),
                ("Stop hunt", "stop it, cancelling collections in flight (x)",
                 screen.action_stop_hunt),
                ("Relaunch errored clients", "re-run the clients in errors (r)",
                 screen.action_relaunch_hunt),
                ("Export hunt", "results and files as one zip (e)", screen.action_export_hunt),
                ("Pause hunt", "recruit nobody; collections in flight finish (p)",
                 screen.action_pause_hunt),
                ("Edit hunt", "rate, limit, expiry, max errors, description (u)",
                 screen.action_edit_hunt),
                ("Copy hunt", "a new hunt's form filled in from it (C)", screen.action_copy_hunt),
                ("Archive hunt", "hide it from the list (A)", screen.action_archive_hunt),
                ("Delete hunt", "with its results and files, asking first (D)",
                 screen.action_delete_hunt),
            ]
        if hasattr(screen, "action_toggle_archived"):
            commands.append(("Archived hunts", "show or hide them (H)",
                             screen.action_toggle_archived))
        if hasattr(screen, "action_approvals"):
            commands.append(("Approvals", "hunts awaiting approval, to approve or reject (P)",
                             screen.action_approvals))
        if hasattr(screen, "action_approve"):
            commands += [
                ("Approve hunt", "approve the selected hunt as it is (a)", screen.action_approve),
                ("Reject hunt", "reject it, with a reason (R)", screen.action_reject),
            ]
        if hasattr(screen, "action_switch_collection"):
            commands += [
                ("Create hunt", "create the hunt this form describes (ctrl+s)",
                 screen.action_create),
                ("VQL or artifacts", "switch what the hunt collects (ctrl+t)",
                 screen.action_switch_collection),
                ("Remove artifact", "the one being edited, else the last added (ctrl+r)",
                 screen.action_remove_artifact),
            ]
        if hasattr(screen, "action_add_label"):
            commands += [
                ("Add label", "to the selected client (+)", screen.action_add_label),
                ("Remove label", "from the selected client (-)", screen.action_remove_label),
            ]
        commands += [
            ("Clients", "every known client (c)", app.action_clients),
            ("Keys", "every key (?)", app.action_help),
            ("Quit", "leave velotui (q)", app.action_quit),
        ]
        return commands

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
