"""Audit statements: operator actions, appended in a hash chain, never changed.

Each record holds the hash of the one before it (``previous``; 64 zeros for the first) and its
own ``hash``: SHA-256 hex of ``previous`` followed by the canonical JSON (sorted keys, no spaces)
of its id, time, actor, action, target, details, outcome and reason. Editing, removing or
reordering a record breaks the chain at that record, which ``verify`` names.
"""

from __future__ import annotations

import hashlib
import json
import time as clock
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from velotui.server import failpoints

if TYPE_CHECKING:
    from velotui.server.data.store import Store, Transaction

GENESIS = "0" * 64
OUTCOMES = ("allowed", "refused")
_COLUMNS = "id, time, actor, action, target, details, outcome, reason, previous, hash"


@dataclass(frozen=True)
class AuditEntry:
    """One operator action, as the write that performs it records it."""

    actor: str
    action: str
    target: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainCheck:
    """What ``verify`` found: how many records, and the first broken one (None: intact)."""

    records: int
    broken_at: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def record_hash(previous: str, id: int, time: float, actor: str, action: str, target: str,
                details: Any, outcome: str, reason: str | None) -> str:
    """The hash of one record, chained to ``previous``."""
    body = json.dumps(
        {"id": id, "time": time, "actor": actor, "action": action, "target": target,
         "details": details, "outcome": outcome, "reason": reason},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return hashlib.sha256((previous + body).encode("utf-8")).hexdigest()


def _row_hash(previous: str, row: Mapping[str, Any]) -> str:
    return record_hash(previous, row["id"], row["time"], row["actor"], row["action"],
                       row["target"], json.loads(row["details"]), row["outcome"], row["reason"])


def append_audit(tx: Transaction, entry: AuditEntry, *, outcome: str = "allowed",
                 reason: str | None = None, now: float | None = None) -> int:
    """Record an action inside a caller's transaction (the action and its record commit as
    one), chained to the last record; its id. The writer is one thread, so the last record
    read here is the last one committed before this."""
    if outcome not in OUTCOMES:
        raise ValueError(f"no audit outcome {outcome!r}")
    last = tx.one("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
    previous = last["hash"] if last is not None else GENESIS
    details_text = json.dumps(dict(entry.details), default=str, sort_keys=True,
                              separators=(",", ":"))
    when = clock.time() if now is None else now
    row = tx.one(
        "INSERT INTO audit (time, actor, action, target, details, outcome, reason, previous,"
        " hash) VALUES (?,?,?,?,?,?,?,?,'') RETURNING id",
        (when, entry.actor, entry.action, entry.target, details_text, outcome, reason,
         previous),
    )
    assert row is not None
    digest = record_hash(previous, row["id"], when, entry.actor, entry.action, entry.target,
                         json.loads(details_text), outcome, reason)
    tx.execute("UPDATE audit SET hash = ? WHERE id = ?", (digest, row["id"]))
    tx.announce("audit")
    failpoints.reach_in_writer("audit.before_commit")
    return int(row["id"])


def chain_unchained(tx: Transaction) -> int:
    """Chain the records an older velotui wrote without hashes (an upgrade), in id order,
    after the last chained one; how many. Runs in the transaction that opens the store."""
    rows = tx.all(f"SELECT {_COLUMNS} FROM audit WHERE hash = '' ORDER BY id")
    if not rows:
        return 0
    last = tx.one("SELECT hash FROM audit WHERE hash <> '' AND id < ? ORDER BY id DESC LIMIT 1",
                  (rows[0]["id"],))
    previous = last["hash"] if last is not None else GENESIS
    for row in rows:
        digest = _row_hash(previous, row)
        tx.execute("UPDATE audit SET previous = ?, hash = ? WHERE id = ?",
                   (previous, digest, row["id"]))
        previous = digest
    return len(rows)


def _describe(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "time": row["time"], "actor": row["actor"],
            "action": row["action"], "target": row["target"],
            "details": json.loads(row["details"]), "outcome": row["outcome"],
            "reason": row["reason"], "previous": row["previous"], "hash": row["hash"]}


class AuditTable:
    PAGE = 1000  # records read at once by verify and follow

    def __init__(self, store: Store) -> None:
        self.store = store

    async def append(self, entry: AuditEntry, *, outcome: str = "allowed",
                     reason: str | None = None) -> int:
        """Record, in its own transaction, an action that writes nothing else (an export, a
        query) or a refusal; its id once durable."""
        return await self.store.write(
            lambda tx: append_audit(tx, entry, outcome=outcome, reason=reason))

    async def entries(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        rows = await self.store.fetch_all(
            f"SELECT {_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?", (max(int(limit), 0),))
        return [_describe(row) for row in reversed(rows)]

    async def after(self, last_id: int, limit: int = PAGE) -> list[dict[str, Any]]:
        """Entries after id ``last_id``, oldest first, at most ``limit``."""
        rows = await self.store.fetch_all(
            f"SELECT {_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",
            (int(last_id), int(limit)))
        return [_describe(row) for row in rows]

    async def last_id(self) -> int:
        row = await self.store.fetch_one("SELECT COALESCE(MAX(id), 0) AS id FROM audit")
        return int(row["id"]) if row is not None else 0

    async def verify(self) -> ChainCheck:
        """Check every record's link to the one before it and its own hash, in id order; the
        first record that fails (a record removed shows at the one after it, a record edited
        or moved at itself)."""
        previous, count, last_id = GENESIS, 0, 0
        while True:
            rows = await self.store.fetch_all(
                f"SELECT {_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, self.PAGE))
            for row in rows:
                if row["previous"] != previous:
                    return ChainCheck(count, row["id"], "it does not follow the record before"
                                      " it (a record was removed, added or moved)")
                try:
                    digest = _row_hash(previous, row)
                except (TypeError, ValueError):
                    digest = ""
                if row["hash"] != digest:
                    return ChainCheck(count, row["id"], "its content does not match its hash"
                                      " (the record was changed)")
                previous, last_id = row["hash"], row["id"]
                count += 1
            if len(rows) < self.PAGE:
                return ChainCheck(count)
