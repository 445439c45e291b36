"""The audit log: every operator action, allowed or refused, with its time and who did it, in
a hash chain (see ``data/audit.py``) that ``verify`` checks.

An action that writes records itself in the transaction of its write (the data layer's write
methods take an ``AuditEntry``); one that writes nothing (an export, a query) is recorded here in
its own transaction before its answer; a refusal is recorded by the operator API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from velotui.server.data import AuditEntry, Database
from velotui.server.data.audit import ChainCheck

# The Service methods that act (everything that is not a pure read), with the action their
# records name and the parameter that names their target. A refusal of one is recorded.
ACTIONS: dict[str, tuple[str, str]] = {
    "schedule_collection": ("collect", "client_id"),
    "collect": ("collect", "client_id"),
    "cancel_flow": ("cancel", "client_id"),
    "import_artifacts": ("import_artifacts", ""),
    "create_hunt": ("create", ""),
    "start_hunt": ("start", "hunt_id"),
    "stop_hunt": ("stop", "hunt_id"),
    "pause_hunt": ("pause", "hunt_id"),
    "set_hunt": ("set", "hunt_id"),
    "copy_hunt": ("copy", "hunt_id"),
    "archive_hunt": ("archive", "hunt_id"),
    "delete_hunt": ("delete", "hunt_id"),
    "relaunch_hunt": ("relaunch", "hunt_id"),
    "export_hunt": ("export", "hunt_id"),
    "query_hunt": ("query_hunt", "hunt_id"),
    "label_client": ("label", "client_id"),
    "revoke_client": ("revoke", "client_id"),
    # the other parts' actions (operators, settings, approvals), recorded when refused too
    "add_operator": ("operator_add", "name"),
    "remove_operator": ("operator_remove", "name"),
    "set_operator_role": ("operator_role", "name"),
    "set_setting": ("setting", "key"),
    "request_approval": ("request_approval", "hunt_id"),
    "approve_hunt": ("approve", "hunt_id"),
    "reject_hunt": ("reject", "hunt_id"),
}
# Parameters a refusal's record leaves out: bulky, and not what was asked
_UNRECORDED = frozenset({"definitions"})
def refusal_entry(actor: str, method: str, params: dict[str, Any]) -> AuditEntry | None:
    """The record of a refused call of ``method`` (None: a read, which is not recorded)."""
    known = ACTIONS.get(method)
    if known is None:
        return None
    action, target_param = known
    target = params.get(target_param, "") if target_param else ""
    details = {key: value for key, value in params.items()
               if key not in _UNRECORDED and key != target_param}
    return AuditEntry(actor, action, str(target)[:256], details)


class AuditLog:
    """The audit table as the service uses it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, entry: AuditEntry) -> None:
        """Write, in its own transaction and durably, an action that writes nothing else;
        called before the action's answer."""
        await self.db.audit.append(entry)

    async def refused(self, entry: AuditEntry, reason: str) -> None:
        """Record a refusal and its one-line reason."""
        await self.db.audit.append(entry, outcome="refused", reason=reason)

    async def entries(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        return await self.db.audit.entries(limit)

    async def verify(self) -> ChainCheck:
        return await self.db.audit.verify()

    async def follow(self, after: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each record committed after record ``after`` (None: from now on), as it commits."""
        store = self.db.store
        last = await self.db.audit.last_id() if after is None else after
        while True:
            changed = store.changed("audit")  # before reading: a commit in between wakes it
            try:
                while True:
                    entries = await self.db.audit.after(last)
                    for entry in entries:
                        last = entry["id"]
                        yield entry
                    if len(entries) < self.db.audit.PAGE:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 30.0)
            finally:
                store.forget("audit", changed)
