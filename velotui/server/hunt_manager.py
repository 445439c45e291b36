"""The hunt manager: hunts' lives, their queues, and recruitment at each hunt's rate.

Every move of a client between queues is one UPDATE of its ``hunt_clients`` row, committed with
whatever goes with it (the flow that recruits it), and only then applied to the counts kept in
memory, which are rebuilt from that table at start. So the counts are exact after a crash and
never drift. Recruitment moves clients from pending to running at the hunt's rate and within its
client limit, oldest first; a finished collection moves its client to completed (no rows),
results (rows) or errors (failed, timed out, cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from velotui.server.errors import ServiceError
from velotui.server.flows import FlowManager, FlowRecord
from velotui.server.hunts import CHECKING, Hunt
from velotui.server.ids import hunt_flow_id, new_hunt_id
from velotui.server.store import Store

if TYPE_CHECKING:
    from velotui.server.foreman import Foreman

log = logging.getLogger(__name__)
RECRUIT_INTERVAL = 0.25
RECRUIT_BATCH = 500
PUBLISH_INTERVAL = 0.1


class HuntError(ServiceError):
    """A hunt operation that cannot be done; the message says why in one line."""


class RecruitmentBudget:
    """A hunt's rate as a token bucket: ``rate`` clients a minute, with at most one second's
    worth saved up, so 60 a minute lets about one client through each second and an idle spell
    never turns into a burst. A rate of 0 means no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 60.0)
        self.tokens = self.capacity
        self.last: float | None = None

    def take(self, now: float, wanted: int) -> int:
        """How many of ``wanted`` clients may be recruited at ``now``; those are spent."""
        if self.rate <= 0:
            return max(wanted, 0)
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate / 60.0)
        self.last = now
        allowed = max(min(wanted, int(self.tokens)), 0)
        self.tokens -= allowed
        return allowed


@dataclass
class Move:
    """One client's move to ``queue``, applied only if it is still where it was expected."""

    client_id: str
    queue: str
    expect_queues: tuple[str, ...] = ()
    expect_flow: str | None = None  # the collection (or condition) flow it must still be on
    expect_flow_column: str = "flow_id"
    changes: dict[str, Any] = field(default_factory=dict)


class HuntManager:
    """Every hunt, its counts, and the recruiter."""

    def __init__(self, store: Store, flows: FlowManager) -> None:
        self.store = store
        self.flows = flows
        self.hunts: dict[str, Hunt] = {}
        self._budgets: dict[str, RecruitmentBudget] = {}
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._published = asyncio.Event()
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_start_timestamp = 0
        self.foreman: Foreman | None = None  # set by the server once both exist
        flows.on_finished(self._flows_finished)

    # Start and stop -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Hunts and their exact counts from the database; then start recruiting."""
        for row in await self.store.fetch_all("SELECT * FROM hunts"):
            hunt = Hunt.from_row(row)
            self.hunts[hunt.hunt_id] = hunt
            self._last_start_timestamp = max(self._last_start_timestamp, hunt.start_timestamp)
        for row in await self.store.fetch_all(
            "SELECT hunt_id, queue, COUNT(*) AS n FROM hunt_clients GROUP BY hunt_id, queue"
        ):
            hunt = self.hunts.get(row["hunt_id"])
            if hunt is not None:
                hunt.counts[row["queue"]] = row["n"]
        await self._reconcile()
        self._tasks = [
            asyncio.create_task(self._recruit_forever(), name="hunt-recruiter"),
            asyncio.create_task(self._publish_forever(), name="hunt-publisher"),
        ]

    async def _reconcile(self) -> None:
        """Finish moves a crash cut short: collections that ended while their client was still
        recorded as running, and recruited clients whose flow was never stored."""
        rows = await self.store.fetch_all(
            "SELECT hc.hunt_id, hc.client_id, hc.flow_id, f.state, f.rows, f.error"
            " FROM hunt_clients hc LEFT JOIN flows f"
            " ON f.client_id = hc.client_id AND f.flow_id = hc.flow_id"
            " WHERE hc.queue = 'running'"
        )
        by_hunt: dict[str, list[Move]] = {}
        for row in rows:
            if row["state"] is None:
                move = Move(row["client_id"], "pending", ("running",),
                            changes={"flow_id": None})
            elif row["state"] in ("queued", "running"):
                continue
            else:
                move = self._outcome_move(row["client_id"], row["flow_id"], row["state"],
                                          row["rows"], row["error"])
            by_hunt.setdefault(row["hunt_id"], []).append(move)
        for hunt_id, moves in by_hunt.items():
            await self.move(hunt_id, moves)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Queries ------------------------------------------------------------------------------------

    def get(self, hunt_id: str) -> Hunt:
        """The hunt; raises HuntError when there is none by that ID."""
        hunt = self.hunts.get(hunt_id)
        if hunt is None:
            raise HuntError(f"no hunt {hunt_id!r} (see: velotui hunt list)")
        return hunt

    def running(self) -> list[Hunt]:
        """Running hunts, oldest start first."""
        hunts = [h for h in self.hunts.values() if h.state == "running"]
        return sorted(hunts, key=lambda h: h.start_timestamp)

    # Lifecycle ----------------------------------------------------------------------------------

    async def create(self, hunt: Hunt) -> Hunt:
        """Store a new hunt (paused); ``hunt.hunt_id`` is assigned here."""
        hunt.hunt_id = new_hunt_id()
        hunt.state = "paused"
        hunt.created = time.time()

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO hunts (hunt_id, description, query, client_condition,"
                " server_condition, rate, client_limit, expires, timeout, max_rows,"
                " max_upload_bytes, state, created, creator)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (hunt.hunt_id, hunt.description, hunt.query, hunt.client_condition,
                 hunt.server_condition, hunt.rate, hunt.client_limit, hunt.expires, hunt.timeout,
                 hunt.max_rows, hunt.max_upload_bytes, hunt.state, hunt.created, hunt.creator),
            )

        await self.store.write(op)
        self.hunts[hunt.hunt_id] = hunt
        self._changed(hunt.hunt_id)
        return hunt

    async def start(self, hunt_id: str) -> Hunt:
        """Start (or start again) a hunt. Raises HuntError if it runs already or has expired."""
        hunt = self.get(hunt_id)
        if hunt.state == "running":
            raise HuntError(f"{hunt_id} is already running")
        now = time.time()
        if now >= hunt.expires:
            raise HuntError(f"{hunt_id} expired at {time.ctime(hunt.expires)}")
        # A new timestamp at every start, so agents checked since the last run are looked at
        # again; the server's own record keeps anyone from running the hunt twice.
        timestamp = max(int(now * 1_000_000), self._last_start_timestamp + 1)
        started = hunt.started or now

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE hunts SET state = 'running', stop_reason = NULL, stopped = NULL,"
                " started = ?, start_timestamp = ? WHERE hunt_id = ?",
                (started, timestamp, hunt_id),
            )

        await self.store.write(op)
        self._last_start_timestamp = timestamp
        hunt.state, hunt.stop_reason, hunt.stopped = "running", None, None
        hunt.started, hunt.start_timestamp = started, timestamp
        self._budgets.pop(hunt_id, None)
        self._changed(hunt_id)
        if self.foreman is not None:
            self.foreman.hunt_started(hunt)
        self._wake.set()
        return hunt

    async def stop(self, hunt_id: str, reason: str = "stopped by the operator",
                   cancel_in_flight: bool = True) -> Hunt:
        """Stop recruiting and (unless the client limit ended it) cancel every flow of the hunt
        still in flight. Raises HuntError if the hunt is not running."""
        hunt = self.get(hunt_id)
        if hunt.state != "running":
            raise HuntError(f"{hunt_id} is not running ({hunt.state})")
        now = time.time()

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE hunts SET state = 'stopped', stop_reason = ?, stopped = ?"
                " WHERE hunt_id = ?",
                (reason, now, hunt_id),
            )

        await self.store.write(op)
        hunt.state, hunt.stop_reason, hunt.stopped = "stopped", reason, now
        self._changed(hunt_id)
        if cancel_in_flight:
            in_flight = [r for r in self.flows.active.values() if r.hunt_id == hunt_id]
            await self.flows.end_many(in_flight, "cancelled", f"the hunt was stopped: {reason}")
        return hunt

    async def relaunch(self, hunt_id: str) -> int:
        """Run again the collections of the clients in errors, and only those; starts the hunt
        if it is not running. Returns how many clients were put back."""
        hunt = self.get(hunt_id)
        rows = await self.store.fetch_all(
            "SELECT client_id, stage FROM hunt_clients WHERE hunt_id = ? AND queue = 'errors'",
            (hunt_id,),
        )
        if not rows:
            raise HuntError(f"{hunt_id} has no clients in errors")
        if hunt.state != "running" and time.time() >= hunt.expires:
            raise HuntError(f"{hunt_id} expired at {time.ctime(hunt.expires)}")
        collection = [r["client_id"] for r in rows if r["stage"] == "collection"]
        condition = [r["client_id"] for r in rows if r["stage"] != "collection"]
        moved = await self.move(hunt_id, [
            Move(client_id, "pending", ("errors",), changes={"error": None})
            for client_id in collection
        ])
        if condition and self.foreman is not None:
            moved += await self.foreman.recheck(hunt, condition)
        if hunt.state != "running":
            await self.start(hunt_id)
        self._wake.set()
        return moved

    # Moving clients -----------------------------------------------------------------------------

    async def move(
        self,
        hunt_id: str,
        moves: list[Move],
        also: Callable[[sqlite3.Connection, set[str]], None] | None = None,
    ) -> int:
        """Apply ``moves`` (each only if the client is still where it was expected) and ``also``
        (given the clients that moved) in one transaction; then the counts. Returns how many
        moved."""
        now = time.time()

        def op(connection: sqlite3.Connection) -> list[tuple[str, str, str]]:
            applied: list[tuple[str, str, str]] = []
            for move in moves:
                row = connection.execute(
                    f"SELECT queue, {move.expect_flow_column} AS flow FROM hunt_clients"
                    " WHERE hunt_id = ? AND client_id = ?",
                    (hunt_id, move.client_id),
                ).fetchone()
                if row is None:
                    continue
                if move.expect_queues and row["queue"] not in move.expect_queues:
                    continue
                if move.expect_flow is not None and row["flow"] != move.expect_flow:
                    continue
                assignments = ["queue = ?", "updated = ?"]
                values: list[Any] = [move.queue, now]
                for column, value in move.changes.items():
                    assignments.append(f"{column} = ?")
                    values.append(value)
                connection.execute(
                    f"UPDATE hunt_clients SET {', '.join(assignments)}"
                    " WHERE hunt_id = ? AND client_id = ?",
                    (*values, hunt_id, move.client_id),
                )
                applied.append((move.client_id, row["queue"], move.queue))
            if also is not None:
                also(connection, {client_id for client_id, _old, _new in applied})
            return applied

        applied = await self.store.write(op)
        hunt = self.hunts.get(hunt_id)
        if hunt is not None and applied:
            for _client, old, new in applied:
                hunt.counts[old] -= 1
                hunt.counts[new] += 1
            self._changed(hunt_id)
            self._wake.set()
        return len(applied)

    async def add_checking(self, hunt: Hunt, condition_flows: list[FlowRecord]) -> list[FlowRecord]:
        """Record that these clients are being checked for ``hunt`` (once per client, ever) and
        store their condition flows, in one transaction. Returns the flows actually added."""
        now = time.time()

        def op(connection: sqlite3.Connection) -> set[str]:
            added: set[str] = set()
            for record in condition_flows:
                cursor = connection.execute(
                    "INSERT OR IGNORE INTO hunt_clients (hunt_id, client_id, queue, stage,"
                    " condition_flow_id, checked, updated) VALUES (?, ?, ?, 'condition', ?, ?, ?)",
                    (hunt.hunt_id, record.client_id, CHECKING, record.flow_id, now, now),
                )
                if cursor.rowcount:
                    added.add(record.client_id)
            FlowManager.insert(connection, [r for r in condition_flows if r.client_id in added])
            return added

        added = await self.store.write(op)
        if added:
            hunt.counts[CHECKING] += len(added)
            self._changed(hunt.hunt_id)
        return [r for r in condition_flows if r.client_id in added]

    @staticmethod
    def _outcome_move(client_id: str, flow_id: str, state: str, rows: int,
                      error: str | None) -> Move:
        if state == "finished":
            queue = "results" if rows > 0 else "completed"
            changes: dict[str, Any] = {"error": None}
        else:
            queue = "errors"
            changes = {"error": error or state, "stage": "collection"}
        return Move(client_id, queue, ("running",), expect_flow=flow_id, changes=changes)

    async def _flows_finished(self, records: list[FlowRecord]) -> None:
        by_hunt: dict[str, list[Move]] = {}
        conditions: list[FlowRecord] = []
        for record in records:
            if record.hunt_id is None:
                continue
            if record.kind == "condition":
                conditions.append(record)
                continue
            by_hunt.setdefault(record.hunt_id, []).append(self._outcome_move(
                record.client_id, record.flow_id, record.state, record.rows, record.error))
        for hunt_id, moves in by_hunt.items():
            await self.move(hunt_id, moves)
        if conditions and self.foreman is not None:
            await self.foreman.conditions_finished(conditions)

    # Recruitment --------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _recruit_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECRUIT_INTERVAL)
            self._wake.clear()
            for hunt in self.running():
                try:
                    await self._tend(hunt, time.time())
                except Exception:
                    log.exception("recruiting for %s failed", hunt.hunt_id)

    async def _tend(self, hunt: Hunt, now: float) -> None:
        if now >= hunt.expires:
            await self.stop(hunt.hunt_id, "expired")
            return
        wanted = min(hunt.counts["pending"], RECRUIT_BATCH)
        if hunt.client_limit:
            wanted = min(wanted, hunt.client_limit - hunt.recruited)
        allowed = 0
        if wanted > 0:
            budget = self._budgets.get(hunt.hunt_id)
            if budget is None:
                budget = self._budgets[hunt.hunt_id] = RecruitmentBudget(hunt.rate)
            allowed = budget.take(now, wanted)
        if allowed > 0:
            await self._recruit(hunt, allowed)
        if hunt.client_limit and hunt.recruited >= hunt.client_limit and hunt.state == "running":
            await self.stop(hunt.hunt_id, "client limit reached", cancel_in_flight=False)

    async def _recruit(self, hunt: Hunt, count: int) -> None:
        rows = await self.store.fetch_all(
            "SELECT client_id, attempt FROM hunt_clients WHERE hunt_id = ? AND queue = 'pending'"
            " ORDER BY checked, client_id LIMIT ?",
            (hunt.hunt_id, count),
        )
        now = time.time()
        flows = {
            row["client_id"]: self.flows.prepare(
                row["client_id"], hunt.query, timeout=hunt.timeout, max_rows=hunt.max_rows,
                max_upload_bytes=hunt.max_upload_bytes, hunt_id=hunt.hunt_id, kind="collection",
                flow_id=hunt_flow_id(hunt.hunt_id, row["attempt"] + 1), now=now,
            )
            for row in rows
        }
        moves = [
            Move(row["client_id"], "running", ("pending",), changes={
                "flow_id": flows[row["client_id"]].flow_id, "attempt": row["attempt"] + 1,
                "stage": "collection", "error": None,
            })
            for row in rows
        ]
        moved: set[str] = set()

        def store_flows(connection: sqlite3.Connection, clients: set[str]) -> None:
            moved.update(clients)
            FlowManager.insert(connection, [flows[c] for c in clients])

        await self.move(hunt.hunt_id, moves, also=store_flows)
        await self.flows.adopt([flows[c] for c in moved])

    # Telling the console ------------------------------------------------------------------------

    def _changed(self, hunt_id: str) -> None:
        self._dirty.add(hunt_id)
        self._published.set()

    async def _publish_forever(self) -> None:
        """Push changed hunts to subscribers, coalesced to a few times a second."""
        while True:
            await self._published.wait()
            self._published.clear()
            dirty, self._dirty = self._dirty, set()
            for hunt_id in dirty:
                hunt = self.hunts.get(hunt_id)
                if hunt is None:
                    continue
                event = {"event": "hunt", "hunt": hunt.describe()}
                for queue in self._subscribers:
                    queue.put_nowait(event)
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Every hunt now, then each hunt again whenever it changes."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            for hunt in sorted(self.hunts.values(), key=lambda h: h.created):
                yield {"event": "hunt", "hunt": hunt.describe()}
            while True:
                event = await queue.get()
                # Collapse a backlog to the latest state of each hunt.
                latest = {event["hunt"]["hunt_id"]: event}
                while not queue.empty():
                    more = queue.get_nowait()
                    latest[more["hunt"]["hunt_id"]] = more
                for item in latest.values():
                    yield item
        finally:
            self._subscribers.remove(queue)
