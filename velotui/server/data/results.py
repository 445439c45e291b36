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
BATCHES_PER_READ = 256
BYTES_PER_READ = 4 * 1024 * 1024
"""How many stored row batches, and bytes of them, one read of a scan takes at most (one batch
bigger than that alone): a scan holds no more than that of a hunt in memory at once."""


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

    async def _member_pages(self, hunt_id: str) -> AsyncIterator[list[tuple[HuntMember, int]]]:
        """The hunt's members in order (oldest check first), each with how many rows it has
        stored (its flow's counter, which moves in the same transaction as the rows),
        ``CLIENTS_PER_PAGE`` a read; each read starts after the last key of the one before, so
        a client checked meanwhile comes last."""
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            page = await self.store.fetch_all(
                "SELECT hc.checked, hc.client_id, hc.flow_id, COALESCE(f.rows, 0) AS rows"
                " FROM hunt_clients hc LEFT JOIN flows f ON f.client_id = hc.client_id"
                " AND f.flow_id = hc.flow_id WHERE hc.hunt_id = ? AND hc.flow_id IS NOT NULL"
                " AND (hc.checked, hc.client_id) > (?, ?) ORDER BY hc.checked, hc.client_id"
                " LIMIT ?",
                (hunt_id, *after, CLIENTS_PER_PAGE),
            )
            yield [(HuntMember(row["client_id"], row["flow_id"]), row["rows"]) for row in page]
            if len(page) < CLIENTS_PER_PAGE:
                return
            after = (page[-1]["checked"], page[-1]["client_id"])

    async def member_batches(self, member: HuntMember, after_seq: int = 0,
                             until_seq: int | None = None) -> AsyncIterator[StoredBatch]:
        """The member's stored batches after ``after_seq`` (up to ``until_seq``), in order,
        read in groups of at most ``BATCHES_PER_READ`` batches and ``BYTES_PER_READ`` bytes
        (one batch alone may be bigger): their sizes first, then their data."""
        last = until_seq if until_seq is not None else -1
        while True:
            sizes = await self.store.fetch_all(
                "SELECT seq, length(data) AS size FROM flow_rows WHERE client_id = ?"
                " AND flow_id = ? AND seq > ? AND (? < 0 OR seq <= ?) ORDER BY seq LIMIT ?",
                (member.client_id, member.flow_id, after_seq, last, last, BATCHES_PER_READ),
            )
            if not sizes:
                return
            taken, held = 0, 0
            for row in sizes:
                if taken and held + row["size"] > BYTES_PER_READ:
                    break
                taken += 1
                held += row["size"]
            group = await self.store.fetch_all(
                "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ?"
                " AND seq >= ? AND seq <= ? ORDER BY seq",
                (member.client_id, member.flow_id, sizes[0]["seq"], sizes[taken - 1]["seq"]),
            )
            for batch in group:
                yield StoredBatch(member, batch["seq"], unpack_rows(batch["data"]))
            after_seq = sizes[taken - 1]["seq"]
            if taken == len(sizes) and len(sizes) < BATCHES_PER_READ:
                return

    async def hunt_batches(self, hunt_id: str) -> AsyncIterator[StoredBatch]:
        """Every stored batch of the hunt's rows with its member, in the order ``results_page``
        counts rows, read a member and a group of batches at a time (``member_batches``): no
        read connection is held while the caller works, and no read sorts the hunt's rows."""
        async for members in self._member_pages(hunt_id):
            for member, _rows in members:
                async for batch in self.member_batches(member):
                    yield batch

    async def batches_rows(self, member: HuntMember, seqs: list[int]
                           ) -> dict[int, list[dict[str, Any]]]:
        """The rows of the member's batches numbered ``seqs`` (each that exists)."""
        if not seqs:
            return {}
        found = await self.store.fetch_all(
            "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq IN"
            f" ({', '.join('?' * len(seqs))})",
            (member.client_id, member.flow_id, *seqs),
        )
        return {row["seq"]: unpack_rows(row["data"]) for row in found}

    async def rows_version(self, hunt_id: str) -> tuple[int, int, float]:
        """What changes whenever the hunt's stored rows do: how many members it has, how many
        rows their collections hold, and the last change of any of its clients (a relaunch
        changes which collection is current). Stored batches themselves never change."""
        row = await self.store.fetch_one(
            "SELECT COUNT(*) AS members, COALESCE(SUM(f.rows), 0) AS rows,"
            " COALESCE(MAX(hc.updated), 0) AS updated FROM hunt_clients hc"
            " LEFT JOIN flows f ON f.client_id = hc.client_id AND f.flow_id = hc.flow_id"
            " WHERE hc.hunt_id = ?",
            (hunt_id,),
        )
        assert row is not None
        return row["members"], row["rows"], row["updated"]

    async def results_page(self, hunt_id: str, offset: int, limit: int
                           ) -> tuple[list[tuple[HuntMember, dict[str, Any]]], int]:
        """Rows ``offset`` to ``offset + limit`` of every client's results in order, each with
        its member, and the total number of rows. Reads each member's count of rows, and the
        batches of only the members the page falls in."""
        rows: list[tuple[HuntMember, dict[str, Any]]] = []
        position = 0  # rows of the members before this one
        async for members in self._member_pages(hunt_id):
            for member, count in members:
                end = position + count
                if end > offset and position < offset + limit:
                    rows += await self._member_slice(member, offset - position,
                                                     offset + limit - position)
                position = end
        return rows, position

    async def _member_slice(self, member: HuntMember, first: int, stop: int
                            ) -> list[tuple[HuntMember, dict[str, Any]]]:
        """The member's rows ``first`` (may be negative: from its first) to ``stop``."""
        counts = await self.store.fetch_all(
            "SELECT seq, row_count FROM flow_rows WHERE client_id = ? AND flow_id = ?"
            " ORDER BY seq",
            (member.client_id, member.flow_id),
        )
        wanted: list[tuple[int, int, int]] = []  # (seq, first row, stop) in each batch
        position = 0
        for batch in counts:
            end = position + batch["row_count"]
            if end > first and position < stop:
                wanted.append((batch["seq"], max(first - position, 0), stop - position))
            position = end
        stored = await self.batches_rows(member, [seq for seq, _first, _stop in wanted])
        return [(member, row) for seq, start, end in wanted
                for row in stored.get(seq, [])[start:end]]

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
            " AS lines"
            " ORDER BY time DESC LIMIT ?",
            (hunt_id, hunt_id, hunt_id, limit),
        )
        return [dict(row) for row in reversed(rows)]
