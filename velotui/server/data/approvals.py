"""Server settings and hunts' approvals: their statements, and the guard every start passes.

A start with approvals required is allowed only by the hunt's newest approval request, approved,
for the specification the hunt has in that same transaction, and not expired
(``approval_refusal``). Deciding a request is guarded the same way: only a pending request for
the current specification, and never by the hunt's creator or the request's requester.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from velotui.server.data.audit import AuditEntry, append_audit
from velotui.server.data.records import ApprovalRecord, HuntRecord
from velotui.server.data.store import Row, Store, Transaction
from velotui.server.data.topics import hunt_topic
from velotui.server.errors import ServiceError
from velotui.server.hunt_spec import spec_hash

AWAITING_APPROVAL = "awaiting approval"


class ApprovalRefused(ServiceError):
    """A start, request or decision the approval rules refuse; the message says why."""


def setting(tx: Transaction, key: str, default: Any) -> Any:
    """A setting's value as stored (JSON), read inside a transaction."""
    row = tx.one("SELECT value FROM settings WHERE key = ?", (key,))
    return default if row is None else json.loads(row["value"])


def latest_approval(tx: Transaction, hunt_id: str) -> ApprovalRecord | None:
    """The hunt's newest approval request, read inside a transaction."""
    row = tx.one("SELECT * FROM approvals WHERE hunt_id = ? ORDER BY id DESC LIMIT 1",
                 (hunt_id,))
    return ApprovalRecord.from_row(row) if row is not None else None


def approval_refusal(tx: Transaction, hunt: Row, now: float) -> str | None:
    """Why the hunt may not start now, or None: it may (approvals off, or a valid approval of
    its current specification). Read in the caller's transaction, so a change committed just
    before is seen."""
    if setting(tx, "approvals", "off") != "required":
        return None
    hunt_id = hunt["hunt_id"]
    approval = latest_approval(tx, hunt_id)
    if approval is None:
        return (f"{hunt_id} needs an approval before it starts (velotui hunt request-approval"
                f" {hunt_id})")
    state = approval.state(spec_hash(HuntRecord.from_row(hunt)), now)
    if state == "pending":
        return f"{hunt_id} is {AWAITING_APPROVAL} (requested by {approval.requester})"
    if state == "rejected":
        return (f"{hunt_id} was rejected by {approval.decided_by}:"
                f" {approval.decision_reason}; change it and request approval again")
    if state == "void":
        return (f"{hunt_id}'s approval is void: its specification changed since; request"
                " approval again")
    if state == "expired":
        return (f"{hunt_id}'s approval by {approval.decided_by} expired at"
                f" {time.ctime(approval.expires)}; request approval again")
    return None


class SettingsTable:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def all(self) -> dict[str, Any]:
        """Every stored setting (JSON values parsed)."""
        rows = await self.store.fetch_all("SELECT key, value FROM settings ORDER BY key")
        return {row["key"]: json.loads(row["value"]) for row in rows}

    async def set(self, key: str, value: Any, audit: AuditEntry | None = None) -> None:
        """Store a setting, with its audit record in the same transaction."""

        def op(tx: Transaction) -> None:
            if audit is not None:  # the old value as stored, when it was (else the default's)
                old = setting(tx, key, audit.details.get("old"))
                append_audit(tx, replace(audit, details={**audit.details, "old": old}))
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

        await self.store.write(op)


class ApprovalTable:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def latest(self) -> dict[str, ApprovalRecord]:
        """Each hunt's newest approval request."""
        rows = await self.store.fetch_all(
            "SELECT a.* FROM approvals a WHERE a.id = (SELECT MAX(b.id) FROM approvals b"
            " WHERE b.hunt_id = a.hunt_id)")
        return {row["hunt_id"]: ApprovalRecord.from_row(row) for row in rows}

    async def request(self, hunt_id: str, requester: str, reason: str, now: float,
                      audit: AuditEntry | None = None) -> ApprovalRecord:
        """A new request to approve the hunt's current specification. Raises ApprovalRefused
        when one is pending for it already, or the hunt is gone."""

        def op(tx: Transaction) -> ApprovalRecord:
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,))
            tx.announce(hunt_topic(hunt_id))  # the hunt's approval, shown with it
            if hunt is None:
                raise ApprovalRefused(f"no hunt {hunt_id!r} (see: velotui hunt list)")
            current = spec_hash(HuntRecord.from_row(hunt))
            previous = latest_approval(tx, hunt_id)
            if previous is not None and previous.state(current, now) == "pending":
                raise ApprovalRefused(f"{hunt_id} is {AWAITING_APPROVAL} already (requested"
                                      f" by {previous.requester})")
            row = tx.one(
                "INSERT INTO approvals (hunt_id, spec_hash, requester, reason, requested,"
                " decision) VALUES (?,?,?,?,?, 'pending') RETURNING *",
                (hunt_id, current, requester, reason, now),
            )
            _audit_with_spec(tx, audit, current)
            return ApprovalRecord.from_row(row)

        return await self.store.write(op)

    async def decide(self, hunt_id: str, decider: str, approve: bool, reason: str, now: float,
                     lifetime: float, audit: AuditEntry | None = None) -> ApprovalRecord:
        """Approve (valid for ``lifetime`` seconds) or reject the hunt's pending request, as
        ``decider``. Raises ApprovalRefused when nothing is pending, the specification changed
        since the request, or the decider created the hunt or asked for the approval."""

        def op(tx: Transaction) -> ApprovalRecord:
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,))
            tx.announce(hunt_topic(hunt_id))  # the hunt's approval, shown with it
            if hunt is None:
                raise ApprovalRefused(f"no hunt {hunt_id!r} (see: velotui hunt list)")
            current = spec_hash(HuntRecord.from_row(hunt))
            pending = latest_approval(tx, hunt_id)
            state = None if pending is None else pending.state(current, now)
            if pending is None or state not in ("pending", "void"):
                raise ApprovalRefused(f"{hunt_id} has no approval request pending (velotui"
                                      f" hunt request-approval {hunt_id})")
            if state == "void":
                raise ApprovalRefused(f"{hunt_id} changed since its approval was requested:"
                                      " the request is void; it must be requested again")
            if decider in (hunt["creator"], pending.requester):
                who = "created" if decider == hunt["creator"] else "asked to approve"
                raise ApprovalRefused(f"nobody approves their own hunt: {decider} {who}"
                                      f" {hunt_id}")
            row = tx.one(
                "UPDATE approvals SET decision = ?, decided_by = ?, decided = ?,"
                " decision_reason = ?, expires = ? WHERE id = ? AND decision = 'pending'"
                " AND spec_hash = ? RETURNING *",
                ("approved" if approve else "rejected", decider, now, reason,
                 now + lifetime if approve else None, pending.id, current),
            )
            if row is None:  # decided by someone else in between
                raise ApprovalRefused(f"{hunt_id}'s request was decided already")
            _audit_with_spec(tx, audit, current)
            return ApprovalRecord.from_row(row)

        return await self.store.write(op)

    async def start_refusal(self, hunt_id: str, now: float) -> str | None:
        """Why the hunt may not start now (see ``approval_refusal``), or None."""

        def op(tx: Transaction) -> str | None:
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,))
            tx.announce(hunt_topic(hunt_id))  # the hunt's approval, shown with it
            return None if hunt is None else approval_refusal(tx, hunt, now)

        return await self.store.write(op)

    async def requests(self, pending_only: bool = True) -> list[ApprovalRecord]:
        """Requests, newest first: each hunt's newest only, pending ones only unless told."""
        where = " AND a.decision = 'pending'" if pending_only else ""
        rows = await self.store.fetch_all(
            "SELECT a.* FROM approvals a WHERE a.id = (SELECT MAX(b.id) FROM approvals b"
            f" WHERE b.hunt_id = a.hunt_id){where} ORDER BY a.id DESC")
        return [ApprovalRecord.from_row(row) for row in rows]


def _audit_with_spec(tx: Transaction, audit: AuditEntry | None, current: str) -> None:
    """Write the action's record, naming the specification it acted on."""
    if audit is not None:
        append_audit(tx, replace(audit, details={**audit.details, "spec_hash": current}))
