"""The audit log: every operator action, with its time and who did it."""

from __future__ import annotations

import time
from typing import Any

from velotui.server.data import Database


class AuditLog:
    """Append-only record of operator actions, in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, actor: str, action: str, target: str = "",
                     **details: Any) -> None:
        """Write one entry (durably) before the action is reported done."""
        await self.db.audit.append(time.time(), actor, action, target, details)

    async def entries(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        return await self.db.audit.entries(limit)
