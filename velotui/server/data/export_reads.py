"""What an export reads: the hunt, its members, their rows up to a snapshot, logs and uploads.

All on the operators' pool and in pages, so a big export never holds a read connection while it
writes the zip, and agents never wait behind it.
"""

from __future__ import annotations

from typing import Any

from velotui.server.data.records import HuntRecord
from velotui.server.data.store import Row, Store

MEMBERS_PER_PAGE = 1000
LOG_LINES_PER_PAGE = 1000


class ExportReader:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hunt(self, hunt_id: str) -> HuntRecord | None:
        """The hunt with its counts, or None."""
        row = await self.store.fetch_one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,))
        if row is None:
            return None
        hunt = HuntRecord.from_row(row)
        for count in await self.store.fetch_all(
            "SELECT queue, COUNT(*) AS n FROM hunt_clients WHERE hunt_id = ? GROUP BY queue",
            (hunt_id,),
        ):
            hunt.counts[count["queue"]] = count["n"]
        return hunt

    async def row_cutoff(self) -> int:
        """A bound every later read can share: rows are only ever added, so every stored batch
        up to this rowid is the export's snapshot."""
        row = await self.store.fetch_one("SELECT COALESCE(MAX(rowid), 0) AS cutoff FROM flow_rows")
        return int(row["cutoff"]) if row is not None else 0

    async def members(self, hunt_id: str) -> list[Row]:
        """client_id, flow_id and facts of every client whose collection ran in the hunt (a
        hunt flow's only once its condition let it)."""
        members: list[Row] = []
        while True:
            page = await self.store.fetch_all(
                "SELECT hc.client_id, hc.flow_id, c.facts FROM hunt_clients hc"
                " JOIN flows f ON f.client_id = hc.client_id AND f.flow_id = hc.flow_id"
                " LEFT JOIN clients c ON c.client_id = hc.client_id"
                " WHERE hc.hunt_id = ? AND hc.flow_id IS NOT NULL"
                " AND (f.kind = 'collection' OR f.stage = 'collect')"
                " ORDER BY hc.client_id LIMIT ? OFFSET ?",
                (hunt_id, MEMBERS_PER_PAGE, len(members)),
            )
            members += page
            if len(page) < MEMBERS_PER_PAGE:
                return members

    async def row_batches(self, client_id: str, flow_id: str, after_seq: int, cutoff: int,
                          limit: int) -> list[Row]:
        """seq and packed data of the next ``limit`` stored batches within the snapshot."""
        return await self.store.fetch_all(
            "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq > ?"
            " AND rowid <= ? ORDER BY seq LIMIT ?",
            (client_id, flow_id, after_seq, cutoff, limit),
        )

    async def log_lines(self, client_id: str, flow_id: str, after_seq: int) -> list[Row]:
        """The next page of a flow's log lines: seq, time, level, message."""
        return await self.store.fetch_all(
            "SELECT seq, time, level, message FROM flow_logs WHERE client_id = ? AND flow_id = ?"
            " AND seq > ? ORDER BY seq LIMIT ?",
            (client_id, flow_id, after_seq, LOG_LINES_PER_PAGE),
        )

    async def uploads(self, client_id: str, flow_id: str) -> list[Row]:
        return await self.store.fetch_all(
            "SELECT upload_id, name, path, size, sha256, complete FROM uploads"
            " WHERE client_id = ? AND flow_id = ? ORDER BY upload_id",
            (client_id, flow_id),
        )

    async def exported_rows(self, client_id: str, flow_id: str, cutoff: int) -> int:
        row = await self.store.fetch_one(
            "SELECT COALESCE(SUM(row_count), 0) AS n FROM flow_rows"
            " WHERE client_id = ? AND flow_id = ? AND rowid <= ?",
            (client_id, flow_id, cutoff),
        )
        return int(row["n"]) if row is not None else 0

    async def member_details(self, hunt_id: str, client_id: str, flow_id: str
                             ) -> dict[str, Any]:
        """The client, its place in the hunt and its flow, as one mapping."""
        row = await self.store.fetch_one(
            "SELECT hc.queue, hc.stage, hc.attempt, hc.checked, hc.updated,"
            " hc.error AS hunt_error, c.first_seen, c.last_seen, c.facts, c.agent_labels,"
            " c.operator_labels, f.state, f.created, f.started, f.finished, f.rows, f.bytes,"
            " f.error FROM hunt_clients hc"
            " LEFT JOIN clients c ON c.client_id = hc.client_id"
            " LEFT JOIN flows f ON f.client_id = hc.client_id AND f.flow_id = ?"
            " WHERE hc.hunt_id = ? AND hc.client_id = ?",
            (flow_id, hunt_id, client_id),
        )
        return dict(row) if row is not None else {}

    async def finished_span(self, hunt_id: str) -> tuple[float | None, float | None]:
        """When the hunt's first and last collections finished."""
        row = await self.store.fetch_one(
            "SELECT MIN(finished) AS first, MAX(finished) AS last FROM flows"
            " WHERE hunt_id = ? AND kind IN ('collection', 'hunt')",
            (hunt_id,),
        )
        return (row["first"], row["last"]) if row is not None else (None, None)
