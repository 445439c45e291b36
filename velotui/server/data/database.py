"""The data layer in one object: the store and the statements of each part of the server."""

from __future__ import annotations

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


class Database:
    """Open with ``await Database.open(path)``; every SQL statement of the server is behind
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
    async def open(cls, path: Path) -> Database:
        """Open (creating or upgrading) the database at ``path``."""
        return cls(await Store.open(path))

    async def close(self) -> None:
        """Finish every queued write, then close."""
        await self.store.close()
