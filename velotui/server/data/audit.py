"""Audit statements: operator actions, appended, never changed."""

from __future__ import annotations

import json
from typing import Any

from velotui.server.data.store import Store, Transaction


def append_audit(tx: Transaction, time: float, actor: str, action: str, target: str,
                 details: dict[str, Any]) -> None:
    """Record an action inside a caller's transaction (the action and its record commit as
    one)."""
    tx.execute(
        "INSERT INTO audit (time, actor, action, target, details) VALUES (?,?,?,?,?)",
        (time, actor, action, target, json.dumps(details, default=str)),
    )


class AuditTable:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def append(self, time: float, actor: str, action: str, target: str,
                     details: dict[str, Any]) -> None:
        await self.store.write(
            lambda tx: append_audit(tx, time, actor, action, target, details))

    async def entries(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        rows = await self.store.fetch_all(
            "SELECT id, time, actor, action, target, details FROM audit ORDER BY id DESC"
            " LIMIT ?",
            (max(int(limit), 0),),
        )
        return [
            {"id": row["id"], "time": row["time"], "actor": row["actor"],
             "action": row["action"], "target": row["target"],
             "details": json.loads(row["details"])}
            for row in reversed(rows)
        ]
