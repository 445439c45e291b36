"""The data layer: the schema, every SQL statement of the server, typed records, and guarded
state changes. Nothing else in the server writes SQL (a test says so)."""

from velotui.server.data.audit import AuditEntry
from velotui.server.data.database import Database, DatabaseUnreachable
from velotui.server.data.records import (
    ACTIVE_STATES,
    CHECKING,
    FINAL_STATES,
    QUEUES,
    RECRUITED,
    ClientRecord,
    FlowChange,
    FlowRecord,
    HuntChange,
    HuntRecord,
    QueueMove,
)
from velotui.server.data.store import StoreClosed

__all__ = [
    "ACTIVE_STATES", "CHECKING", "FINAL_STATES", "QUEUES", "RECRUITED", "AuditEntry",
    "ClientRecord", "Database", "DatabaseUnreachable", "FlowChange", "FlowRecord", "HuntChange",
    "HuntRecord", "QueueMove", "StoreClosed",
]
