"""The data layer in one object: the store and the statements of each part of the server."""

from __future__ import annotations

import re
from pathlib import Path

from velotui.server.data.approvals import ApprovalTable, SettingsTable
from velotui.server.data.audit import AuditTable
from velotui.server.data.clients import ClientTable
from velotui.server.data.explain_reads import ExplainReader
from velotui.server.data.export_reads import ExportReader
from velotui.server.data.flows import FlowTable
from velotui.server.data.hunts import HuntTable
from velotui.server.data.operators import OperatorTable
from velotui.server.data.results import ResultReader
from velotui.server.data.store import Store

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


class DatabaseUnreachable(Exception):
    """The database cannot be opened (PostgreSQL down, refusing, no such database); the
    message says which in one line."""


def is_postgresql_url(target: Path | str) -> bool:
    """Whether ``target`` names a PostgreSQL database (else: a SQLite file)."""
    return isinstance(target, str) and target.startswith(POSTGRESQL_SCHEMES)


class Database:
    """Open with ``await Database.open(path_or_url)``; every SQL statement of the server is behind
    ``flows``, ``hunts``, ``clients``, ``audit``, ``operators``, ``settings``, ``approvals``,
    ``results``, ``exports`` and ``explain``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.flows = FlowTable(store)
        self.hunts = HuntTable(store)
        self.clients = ClientTable(store)
        self.audit = AuditTable(store)
        self.operators = OperatorTable(store)
        self.settings = SettingsTable(store)
        self.approvals = ApprovalTable(store)
        self.results = ResultReader(store)
        self.exports = ExportReader(store)
        self.explain = ExplainReader(store)

    @classmethod
    async def open(cls, target: Path | str) -> Database:
        """Open (creating or upgrading) the database at ``target``: a SQLite file's path, or a
        ``postgresql://`` URL. Raises DatabaseUnreachable when PostgreSQL cannot be
        reached."""
        if is_postgresql_url(target):
            import psycopg

            from velotui.server.data.postgres_store import PostgresStore

            try:
                return cls(await PostgresStore.open(str(target)))  # type: ignore[arg-type]
            except psycopg.OperationalError as error:
                said = str(error).strip().splitlines()
                raise DatabaseUnreachable(
                    f"cannot open the PostgreSQL database {_without_password(str(target))}:"
                    f" {said[-1] if said else type(error).__name__}") from None
        return cls(await Store.open(Path(target)))

    async def close(self) -> None:
        """Finish every queued write, then close."""
        await self.store.close()


def _without_password(url: str) -> str:
    """The URL as it may be printed: a password in it replaced by ***."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
