"""The audit log: every operator action, with its time and who did it."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from velotui.server.store import Store


class AuditLog:
    """Append-only record of operator actions, in the database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, actor: str, action: str, target: str = "",
                     **details: Any) -> None:
        """Write one entry (durably) before the action is reported done."""
        entry = (time.time(), actor, action, target, json.dumps(details, default=str))

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO audit (time, actor, action, target, details) VALUES (?,?,?,?,?)",
                entry,
            )

        await self.store.write(op)

    async def entries(self, limit: int = 1000) -> list[dict[str, Any]]:
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
