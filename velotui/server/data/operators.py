"""Operator statements: who may use the operator API, in which role, by which token's hash."""

from __future__ import annotations

from dataclasses import dataclass

from velotui.server.data.audit import AuditEntry, append_audit
from velotui.server.data.store import Store, Transaction


@dataclass(frozen=True)
class OperatorRecord:
    """One row of ``operators``. The token itself is never stored, only its SHA-256 (hex)."""

    name: str
    role: str
    token_hash: str
    created: float
    creator: str


class OperatorExists(Exception):
    """The name, or the token's hash, is already an operator's."""


class LastAdmin(Exception):
    """The change would leave no admin (nobody could manage operators any more)."""


_OTHER_ADMINS = "SELECT count(*) AS n FROM operators WHERE role = 'admin' AND name != ?"


class OperatorTable:
    """Every statement about operators. Each change is audited in its own transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self) -> list[OperatorRecord]:
        rows = await self.store.fetch_all(
            "SELECT name, role, token_hash, created, creator FROM operators ORDER BY name")
        return [OperatorRecord(row["name"], row["role"], row["token_hash"], row["created"],
                               row["creator"]) for row in rows]

    async def add(self, record: OperatorRecord, actor: str | None, only_if_none: bool = False
                  ) -> bool:
        """Insert ``record`` (audited as ``actor``; None: the server's own first admin, no
        operator's action); False when ``only_if_none`` and some operator exists already.
        Raises ``OperatorExists`` for a name or token taken."""

        def op(tx: Transaction) -> bool:
            if only_if_none and tx.one("SELECT 1 FROM operators LIMIT 1") is not None:
                return False
            try:
                tx.execute(
                    "INSERT INTO operators (name, role, token_hash, created, creator)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (record.name, record.role, record.token_hash, record.created,
                     record.creator))
            except tx.IntegrityError:
                raise OperatorExists(record.name) from None
            if actor is not None:
                append_audit(tx, AuditEntry(actor, "operator_add", record.name,
                                            {"role": record.role}), now=record.created)
            return True

        return await self.store.write(op)

    async def remove(self, name: str, actor: str, now: float) -> bool:
        """Delete the operator (audited); False when there is none of that name. Raises
        ``LastAdmin`` for the last admin."""

        def op(tx: Transaction) -> bool:
            row = tx.one("SELECT role FROM operators WHERE name = ?", (name,))
            if row is not None and row["role"] == "admin" and \
                    tx.one(_OTHER_ADMINS, (name,))["n"] == 0:  # type: ignore[index]
                raise LastAdmin(name)
            if not tx.changed("DELETE FROM operators WHERE name = ?", (name,)):
                return False
            append_audit(tx, AuditEntry(actor, "operator_remove", name, {}), now=now)
            return True

        return await self.store.write(op)

    async def set_role(self, name: str, role: str, actor: str, now: float) -> str | None:
        """Change the operator's role (audited); its old role, or None when there is no such
        operator. Raises ``LastAdmin`` when that would leave no admin."""

        def op(tx: Transaction) -> str | None:
            row = tx.one("SELECT role FROM operators WHERE name = ?", (name,))
            if row is None:
                return None
            if row["role"] == "admin" and role != "admin" and \
                    tx.one(_OTHER_ADMINS, (name,))["n"] == 0:  # type: ignore[index]
                raise LastAdmin(name)
            tx.execute("UPDATE operators SET role = ? WHERE name = ?", (role, name))
            append_audit(tx, AuditEntry(actor, "operator_role", name,
                                        {"old": row["role"], "new": role}), now=now)
            return str(row["role"])

        return await self.store.write(op)
