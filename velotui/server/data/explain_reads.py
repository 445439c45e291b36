"""What explaining a client reads: its place in one hunt (its row there, the condition check and
the collection that row names, its place in the pending queue), and every hunt and collection it
took part in. All on the operators' pool, each a bounded read: an operator asking why never makes
the agents' path wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from velotui.server.data.flows import BATCHES_PER_PAGE, unpack_rows
from velotui.server.data.records import FlowRecord
from velotui.server.data.store import Store


@dataclass(frozen=True)
class HuntPlace:
    """A client's row in a hunt, with the flows it names: ``condition`` the check of its
    condition (a 'condition' flow, or a 'hunt' flow that checks and collects), ``collection``
    its current collection (the same hunt flow, or a 'collection' flow); either may be None.
    ``condition_rows``: what a hunt flow's client-side condition returned (None: not come, or
    kept as the condition flow's result rows instead)."""

    queue: str
    stage: str
    checked: float
    updated: float
    error: str | None
    attempt: int
    condition_attempt: int
    condition_rows: list[dict[str, Any]] | None
    condition: FlowRecord | None
    collection: FlowRecord | None


class ExplainReader:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hunt_place(self, hunt_id: str, client_id: str) -> HuntPlace | None:
        """The client's place in the hunt, or None when the hunt never looked at it."""
        row = await self.store.fetch_one(
            "SELECT queue, stage, checked, updated, error, attempt, condition_attempt,"
            " condition_rows, flow_id, condition_flow_id FROM hunt_clients"
            " WHERE hunt_id = ? AND client_id = ?",
            (hunt_id, client_id),
        )
        if row is None:
            return None
        wanted = [flow_id for flow_id in (row["flow_id"], row["condition_flow_id"]) if flow_id]
        flows: dict[str, FlowRecord] = {}
        if wanted:
            found = await self.store.fetch_all(
                "SELECT * FROM flows WHERE client_id = ? AND flow_id IN"
                f" ({', '.join('?' * len(wanted))})",
                (client_id, *wanted),
            )
            flows = {flow["flow_id"]: FlowRecord.from_row(flow) for flow in found}
        packed = row["condition_rows"]
        return HuntPlace(
            queue=row["queue"], stage=row["stage"], checked=row["checked"],
            updated=row["updated"], error=row["error"], attempt=row["attempt"],
            condition_attempt=row["condition_attempt"],
            condition_rows=unpack_rows(packed) if packed is not None else None,
            condition=flows.get(row["condition_flow_id"] or ""),
            collection=flows.get(row["flow_id"] or ""),
        )

    async def flow_rows(self, client_id: str, flow_id: str, limit: int
                        ) -> list[dict[str, Any]]:
        """The first ``limit`` stored rows of a flow (a condition check's rows), in order."""
        rows: list[dict[str, Any]] = []
        after_seq = 0
        while len(rows) < limit:
            page = await self.store.fetch_all(
                "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (client_id, flow_id, after_seq, BATCHES_PER_PAGE),
            )
            for batch in page:
                rows += unpack_rows(batch["data"])
                after_seq = batch["seq"]
            if len(page) < BATCHES_PER_PAGE:
                break
        return rows[:limit]

    async def pending_ahead(self, hunt_id: str, checked: float, client_id: str) -> int:
        """How many of the hunt's pending clients the recruiter takes before this one: it
        takes the oldest check first, then by client ID (``HuntTable.pending``)."""
        row = await self.store.fetch_one(
            "SELECT COUNT(*) AS ahead FROM hunt_clients WHERE hunt_id = ? AND queue = 'pending'"
            " AND (checked < ? OR (checked = ? AND client_id < ?))",
            (hunt_id, checked, checked, client_id),
        )
        return row["ahead"] if row is not None else 0

    async def client_hunts(self, client_id: str, limit: int) -> list[dict[str, Any]]:
        """Every hunt that looked at the client, the most recently changed first: hunt_id,
        description, hunt_state, queue, flow_id (its collection, or its condition check when it
        has none), state (that flow's), rows (of a collection), uploads, error, updated."""
        rows = await self.store.fetch_all(
            "SELECT hc.hunt_id, h.description, h.state AS hunt_state, hc.queue,"
            " COALESCE(hc.flow_id, hc.condition_flow_id) AS flow_id, f.state,"
            " CASE WHEN f.kind = 'condition' THEN 0 ELSE COALESCE(f.rows, 0) END AS rows,"
            " COALESCE(f.uploads, 0) AS uploads, COALESCE(hc.error, f.error) AS error,"
            " hc.updated FROM hunt_clients hc JOIN hunts h ON h.hunt_id = hc.hunt_id"
            " LEFT JOIN flows f ON f.client_id = hc.client_id"
            " AND f.flow_id = COALESCE(hc.flow_id, hc.condition_flow_id)"
            # One lookup of (hunt, client) per hunt, by the primary key: hunt_clients has no
            # index by client alone (one would slow every check the foreman records).
            " WHERE hc.hunt_id IN (SELECT hunt_id FROM hunts) AND hc.client_id = ?"
            " ORDER BY hc.updated DESC, hc.hunt_id DESC LIMIT ?",
            (client_id, limit),
        )
        return [dict(row) for row in rows]

    async def client_collections(self, client_id: str, limit: int) -> list[FlowRecord]:
        """The client's own collections (of no hunt), newest first."""
        rows = await self.store.fetch_all(
            "SELECT * FROM flows WHERE client_id = ? AND hunt_id IS NULL"
            " ORDER BY created DESC, flow_id DESC LIMIT ?",
            (client_id, limit),
        )
        return [FlowRecord.from_row(row) for row in rows]

    async def uploads(self, client_id: str, flow_ids: Sequence[str]
                      ) -> dict[str, list[dict[str, Any]]]:
        """The uploads of each of these flows of the client (each flow's list, possibly
        empty), as ``FlowTable.uploads`` gives them."""
        found: dict[str, list[dict[str, Any]]] = {flow_id: [] for flow_id in flow_ids}
        # A few hundred at a time: SQLite limits how many values one statement binds.
        ids = list(flow_ids)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = await self.store.fetch_all(
                "SELECT flow_id, upload_id, name, path, size, sha256, complete FROM uploads"
                f" WHERE client_id = ? AND flow_id IN ({', '.join('?' * len(part))})"
                " ORDER BY flow_id, upload_id",
                (client_id, *part),
            )
            for row in rows:
                upload = dict(row)
                found[upload.pop("flow_id")].append(upload)
        return found
