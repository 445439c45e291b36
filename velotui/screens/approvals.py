"""The hunts awaiting approval, each with its whole specification (the hidden server-side
condition included), for an approver to approve (``a``) or reject with a reason (``R``).

The list is the app's live hunts whose approval is pending: a request made or decided anywhere
shows here as soon as the server pushes the hunt. The server refuses what this operator may not
do (their own hunt, a request void since); the refusal is shown as a notification.
"""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from velotui.display import utc
from velotui.widgets.live_table import LiveTable

COLUMNS = ("ID", "Requested by", "Requested", "Reason", "Description")


def pending_hunts(hunts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hunts whose approval is pending, oldest request first."""
    pending = [h for h in hunts if (h.get("approval") or {}).get("state") == "pending"]
    return sorted(pending, key=lambda h: h["approval"].get("requested") or 0)


def specification_text(hunt: dict[str, Any]) -> str:
    """Everything an approver approves, one item a line or block."""
    limits = "; ".join(f"{name} {hunt.get(name) or 'no limit'}" for name in (
        "timeout", "max_rows", "max_upload_bytes", "max_uploads", "max_logs", "max_log_bytes"))
    if hunt.get("max_errors_percent"):
        errors = f"{hunt['max_errors_percent']:g}% of recruited"
    else:
        errors = str(hunt.get("max_errors") or "none")
    lines = [
        f"{hunt['hunt_id']}  created by {hunt.get('creator') or '?'}  specification"
        f" {hunt['spec_hash']}",
        f"description: {hunt.get('description') or '-'}",
        f"request: {hunt['approval'].get('request_reason') or '(no reason given)'}",
        f"rate: {hunt['rate']:g}/min" if hunt.get("rate") else "rate: unlimited",
        f"client limit: {hunt.get('limit') or 'none'}; max errors: {errors}",
        f"expires: {utc(hunt['expires'])}",
        f"each client at most: {limits}",
    ]
    if hunt.get("artifacts"):
        lines.append("artifacts: " + json.dumps(hunt["artifacts"]))
    lines += [
        "collection:", f"  {hunt['query']}",
        "client condition:", f"  {hunt['client_condition']}",
        "server condition (never sent to agents):",
        f"  {hunt.get('server_condition') or '(none)'}",
    ]
    return "\n".join(lines)


class ApprovalsScreen(Screen[None]):
    """Pending approval requests, and the selected one's specification."""

    CSS_PATH = "approvals.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="back"),
        Binding("a", "approve", "Approve", id="approve"),
        Binding("R", "reject", "Reject", id="reject"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="approvals-empty")
        table = LiveTable(id="approvals", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table
        with VerticalScroll(id="approval-spec-frame"):
            yield Static("", id="approval-spec", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self.query_one("#approvals", LiveTable).focus()

    def on_hunts_changed(self) -> None:
        self.redraw()

    def on_screen_resume(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        pending = pending_hunts(list(self.app.hunts.values()))
        table = self.query_one("#approvals", LiveTable)
        table.sync({hunt["hunt_id"]: [
            hunt["hunt_id"], hunt["approval"].get("requester") or "?",
            utc(hunt["approval"].get("requested")),
            hunt["approval"].get("request_reason") or "-", hunt.get("description") or "-",
        ] for hunt in pending}, ordered=True)
        empty = self.query_one("#approvals-empty", Static)
        message = "" if pending else "No hunt is awaiting approval (escape goes back)."
        empty.update(message)
        empty.display = bool(message)
        self._show_selected()

    @property
    def selected_request(self) -> str | None:
        return self.query_one("#approvals", LiveTable).selected_key

    def _show_selected(self) -> None:
        hunt = self.app.hunts.get(self.selected_request or "")
        text = specification_text(hunt) if hunt is not None else ""
        spec = self.query_one("#approval-spec", Static)
        spec.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _selected_or_say_so(self) -> str | None:
        hunt_id = self.selected_request
        if hunt_id is None:
            self.app.notify("No hunt is awaiting approval.", severity="warning")
        return hunt_id

    async def action_approve(self) -> None:
        if hunt_id := self._selected_or_say_so():
            hunt = await self.app.call("approve_hunt", f"{hunt_id} approved", hunt_id=hunt_id)
            self.app.remember_hunt(hunt)
            self.redraw()

    def action_reject(self) -> None:
        from velotui.screens.dialogs import TextPrompt

        hunt_id = self._selected_or_say_so()
        if hunt_id is None:
            return

        async def answered(reason: str | None) -> None:
            if not reason:
                return
            hunt = await self.app.call("reject_hunt", f"{hunt_id} rejected", hunt_id=hunt_id,
                                       reason=reason)
            self.app.remember_hunt(hunt)
            self.redraw()

        self.app.push_screen(TextPrompt(f"Reject {hunt_id}: why?", "the reason, for its author"),
                             answered)
