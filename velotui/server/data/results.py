"""What operators read: a hunt's clients, results and log, in pages.

Every read here runs on the operators' pool and returns whole pages, so an operator reading
slowly (results piped into ``less``) holds no connection while it reads, and the agents' path
never waits behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from velotui.server.data.flows import unpack_rows
from velotui.server.data.store import Store

CLIENTS_PER_PAGE = 500
BATCHES_PER_READ = 16
"""How many stored row batches one read of ``hunt_batches`` takes: a scan of a hunt holds at
most this many in memory."""


@dataclass(frozen=True)
class HuntMember:
    """A client a hunt has run its collection on."""

    client_id: str
    flow_id: str


@dataclass(frozen=True)
class StoredBatch:
    """One batch of rows as an agent sent it and the server stored it; ``seq`` is its place in
    its flow."""

    member: HuntMember
    seq: int
    rows: list[dict[str, Any]]


class ResultReader:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hunt_clients(self, hunt_id: str, queue: str | None, offset: int, limit: int
                           ) -> list[dict[str, Any]]:
        """A page of a hunt's clients with their queue and their collection's figures."""
        where, params = "hc.hunt_id = ?", [hunt_id]
        if queue:
            where += " AND hc.queue = ?"
            params.append(queue)
        rows = await self.store.fetch_all(
            "SELECT hc.client_id, hc.queue, hc.stage, hc.flow_id, hc.attempt, hc.error AS"
            " hunt_error, hc.checked, hc.updated, f.state, f.rows, f.bytes, f.error, f.started,"
            " f.finished FROM hunt_clients hc LEFT JOIN flows f ON f.client_id = hc.client_id"
            f" AND f.flow_id = hc.flow_id WHERE {where} ORDER BY hc.checked, hc.client_id"
            " LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [dict(row) for row in rows]

    async def hunt_client_count(self, hunt_id: str, queue: str | None) -> int:
        """How many clients the hunt has looked at (in ``queue``, when given)."""
        where, params = "hunt_id = ?", [hunt_id]
        if queue:
            where += " AND queue = ?"
            params.append(queue)
        row = await self.store.fetch_one(
            f"SELECT COUNT(*) AS clients FROM hunt_clients WHERE {where}", params)
        return row["clients"] if row is not None else 0

    async def members(self, hunt_id: str) -> AsyncIterator[HuntMember]:
        """Every client the hunt ran its collection on, oldest check first, a page at a
        time."""
        offset = 0
        while True:
            page = await self.store.fetch_all(
                "SELECT client_id, flow_id FROM hunt_clients WHERE hunt_id = ? AND flow_id IS"
                " NOT NULL ORDER BY checked, client_id LIMIT ? OFFSET ?",
                (hunt_id, CLIENTS_PER_PAGE, offset),
            )
            for row in page:
                yield HuntMember(row["client_id"], row["flow_id"])
            if len(page) < CLIENTS_PER_PAGE:
                return
            offset += len(page)

    async def hunt_batches(self, hunt_id: str) -> AsyncIterator[StoredBatch]:
        """Every stored batch of the hunt's rows with its member, in the order ``results_page``
        counts rows: its members ``CLIENTS_PER_PAGE`` a read, each one's batches
        ``BATCHES_PER_READ`` a read. Each read starts after the last key of the one before (not
        at an offset, and on the indexes: no read sorts the hunt's rows), so no connection is
        held while the caller works, and a client checked meanwhile comes last."""
        after_member: tuple[float, str] = (float("-inf"), "")
        while True:
            members = await self.store.fetch_all(
                "SELECT checked, client_id, flow_id FROM hunt_clients WHERE hunt_id = ?"
                " AND flow_id IS NOT NULL AND (checked, client_id) > (?, ?)"
                " ORDER BY checked, client_id LIMIT ?",
                (hunt_id, *after_member, CLIENTS_PER_PAGE),
            )
            for row in members:
                member = HuntMember(row["client_id"], row["flow_id"])
                after_seq = 0
                while True:
                    batches = await self.store.fetch_all(
                        "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ?"
                        " AND seq > ? ORDER BY seq LIMIT ?",
                        (member.client_id, member.flow_id, after_seq, BATCHES_PER_READ),
                    )
                    for batch in batches:
                        yield StoredBatch(member, batch["seq"], unpack_rows(batch["data"]))
                    if len(batches) < BATCHES_PER_READ:
                        break
                    after_seq = batches[-1]["seq"]
            if len(members) < CLIENTS_PER_PAGE:
                return
            after_member = (members[-1]["checked"], members[-1]["client_id"])

    async def batch_rows(self, member: HuntMember, seq: int) -> list[dict[str, Any]]:
        """The rows of one stored batch ([] when there is none)."""
        stored = await self.store.fetch_one(
            "SELECT data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq = ?",
            (member.client_id, member.flow_id, seq),
        )
        return unpack_rows(stored["data"]) if stored is not None else []

    async def rows_version(self, hunt_id: str) -> tuple[int, int, float]:
        """What changes whenever the hunt's stored rows do: how many batches and rows its
        current collections hold, and the last change of any of its clients (a relaunch
        changes which collection is current). Stored batches themselves never change."""
        row = await self.store.fetch_one(
            "SELECT COUNT(r.seq) AS batches, COALESCE(SUM(r.row_count), 0) AS rows,"
            " (SELECT COALESCE(MAX(updated), 0) FROM hunt_clients WHERE hunt_id = ?) AS updated"
            " FROM hunt_clients hc JOIN flow_rows r ON r.client_id = hc.client_id"
            " AND r.flow_id = hc.flow_id WHERE hc.hunt_id = ?",
            (hunt_id, hunt_id),
        )
        assert row is not None
        return row["batches"], row["rows"], row["updated"]

    async def results_page(self, hunt_id: str, offset: int, limit: int
                           ) -> tuple[list[tuple[HuntMember, dict[str, Any]]], int]:
        """Rows ``offset`` to ``offset + limit`` of every client's results in order, each with
        its member, and the total number of rows."""
        batches = await self.store.fetch_all(
            "SELECT r.client_id, r.flow_id, r.seq, r.row_count FROM hunt_clients hc"
            " JOIN flow_rows r ON r.client_id = hc.client_id AND r.flow_id = hc.flow_id"
            " WHERE hc.hunt_id = ? ORDER BY hc.checked, hc.client_id, r.seq",
            (hunt_id,),
        )
        total = sum(b["row_count"] for b in batches)
        rows: list[tuple[HuntMember, dict[str, Any]]] = []
        position = 0
        for batch in batches:
            end = position + batch["row_count"]
            if end > offset and position < offset + limit:
                stored = await self.store.fetch_one(
                    "SELECT data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq = ?",
                    (batch["client_id"], batch["flow_id"], batch["seq"]),
                )
                member = HuntMember(batch["client_id"], batch["flow_id"])
                first = max(offset - position, 0)
                wanted = offset + limit - position
                rows += [(member, row) for row in unpack_rows(stored["data"])[first:wanted]]
            position = end
            if position >= offset + limit:
                break
        return rows, total

    async def error_reasons(self, hunt_id: str, limit: int) -> list[dict[str, Any]]:
        """Why the hunt's clients in errors are there: each reason with how many clients,
        most frequent first."""
        rows = await self.store.fetch_all(
            "SELECT error AS reason, COUNT(*) AS clients FROM hunt_clients WHERE hunt_id = ?"
            " AND queue = 'errors' GROUP BY error ORDER BY COUNT(*) DESC, error LIMIT ?",
            (hunt_id, limit),
        )
        return [{"reason": row["reason"] or "(no reason recorded)", "clients": row["clients"]}
                for row in rows]

    async def hunt_log(self, hunt_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` log lines and errors of the hunt, oldest first: its agents'
        log lines, every flow's error, and each server-side judgement that failed."""
        rows = await self.store.fetch_all(
            "SELECT * FROM (SELECT l.client_id, l.flow_id, l.time, l.level, l.message"
            " FROM flow_logs l JOIN flows f ON f.client_id = l.client_id AND f.flow_id = l.flow_id"
            " WHERE f.hunt_id = ?"
            " UNION ALL SELECT client_id, flow_id, COALESCE(finished, created), 'error', error"
            " FROM flows WHERE hunt_id = ? AND error IS NOT NULL"
            " UNION ALL SELECT hc.client_id, hc.condition_flow_id, hc.updated, 'error',"
            " hc.error FROM hunt_clients hc JOIN flows f ON f.client_id = hc.client_id"
            " AND f.flow_id = hc.condition_flow_id WHERE hc.hunt_id = ? AND hc.queue = 'errors'"
            " AND hc.stage = 'condition' AND f.state = 'finished' AND hc.error IS NOT NULL)"
            " ORDER BY time DESC LIMIT ?",
            (hunt_id, hunt_id, hunt_id, limit),
        )
        return [dict(row) for row in reversed(rows)]
