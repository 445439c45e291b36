"""The foreman: which clients a running hunt looks at, and whether each one matches.

Every agent presents the timestamp of the newest hunt it was checked for, on connect and at each
poll. For every running hunt started after that, and never checked for this client (the server
records every check, so an agent whose state was wiped never runs a hunt twice), the foreman
launches a CheckHuntCondition flow: the agent runs the client-side condition; when its rows are
back, the server-side condition runs here over them. A match puts the client in the hunt's
pending queue, no match in not matched, a failed check in errors.

When a hunt starts, the foreman does not wait for the next poll: it checks the connected agents
itself, in batches, within a global budget of launches per second, so that starting a hunt on
thousands of agents does not storm the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from velotui.server.clients import ClientDirectory
from velotui.server.conditions import ServerCondition, client_variable
from velotui.server.flows import FlowManager, FlowRecord
from velotui.server.hunt_manager import HuntManager, Move
from velotui.server.hunts import CHECKING, Hunt
from velotui.server.ids import condition_flow_id
from velotui.wire import protocol

if TYPE_CHECKING:
    from velotui.server.sessions import AgentSession

log = logging.getLogger(__name__)
NOTIFY_BATCH = 500
NOTIFY_PER_SECOND = 20_000.0


class Foreman:
    """Decides which clients take part in running hunts."""

    def __init__(self, hunts: HuntManager, flows: FlowManager, directory: ClientDirectory
                 ) -> None:
        self.hunts = hunts
        self.flows = flows
        self.directory = directory
        self.checked: dict[str, set[str]] = {}  # hunt -> clients ever checked for it
        self._conditions: dict[str, ServerCondition] = {}
        self._started: asyncio.Queue[Hunt] = asyncio.Queue()
        self._notifier: asyncio.Task[None] | None = None
        hunts.foreman = self

    async def load(self) -> None:
        for row in await self.hunts.store.fetch_all("SELECT hunt_id, client_id FROM hunt_clients"):
            self.checked.setdefault(row["hunt_id"], set()).add(row["client_id"])
        self._notifier = asyncio.create_task(self._notify_forever(), name="foreman-notifier")
        await self._resume_checks()
        for hunt in self.hunts.running():
            self.hunt_started(hunt)  # agents that connected while the server was down

    async def close(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
            try:
                await self._notifier
            except asyncio.CancelledError:
                pass

    # Check-ins ----------------------------------------------------------------------------------

    async def check_in(self, session: AgentSession, last_hunt_timestamp: int) -> None:
        """An agent connected or polled: check it for every running hunt newer than what it
        reports, then tell it the newest hunt it has now been checked for."""
        client_id = session.client_id
        running = self.hunts.running()
        for hunt in running:
            if hunt.start_timestamp > last_hunt_timestamp and client_id not in self.checked.get(
                hunt.hunt_id, ()
            ):
                await self.check(hunt, [client_id])
        checkpoint = self.checkpoint_for(client_id)
        if checkpoint > last_hunt_timestamp:
            await session.send(protocol.HuntCheckpoint(last_hunt_timestamp=checkpoint))

    def checkpoint_for(self, client_id: str) -> int:
        """The newest start timestamp up to which every running hunt has checked the client:
        what the agent may remember. Never past a hunt still waiting to check it."""
        checkpoint = 0
        for hunt in self.hunts.running():
            if client_id not in self.checked.get(hunt.hunt_id, ()):
                break
            checkpoint = hunt.start_timestamp
        return checkpoint

    async def check(self, hunt: Hunt, client_ids: list[str]) -> int:
        """Launch the condition check of ``hunt`` on clients never checked for it; how many."""
        seen = self.checked.setdefault(hunt.hunt_id, set())
        fresh = [c for c in client_ids if c not in seen]
        if not fresh or hunt.state != "running":
            return 0
        seen.update(fresh)  # before awaiting, so a concurrent check-in cannot launch it twice
        now = time.time()
        records = [
            self.flows.prepare(
                client_id, hunt.client_condition, timeout=hunt.timeout,
                hunt_id=hunt.hunt_id, kind="condition",
                flow_id=condition_flow_id(hunt.hunt_id), now=now,
            )
            for client_id in fresh
        ]
        try:
            added = await self.hunts.add_checking(hunt, records)
        except BaseException:
            seen.difference_update(fresh)
            raise
        await self.flows.adopt(added)
        return len(added)

    async def recheck(self, hunt: Hunt, client_ids: list[str]) -> int:
        """Run the condition again for clients whose check failed (relaunch)."""
        rows = await self.hunts.store.fetch_all(
            "SELECT client_id, condition_attempt FROM hunt_clients WHERE hunt_id = ?"
            " AND queue = 'errors' AND stage = 'condition'",
            (hunt.hunt_id,),
        )
        wanted = set(client_ids)
        now = time.time()
        attempts = {row["client_id"]: row["condition_attempt"] + 1
                    for row in rows if row["client_id"] in wanted}
        records = {
            client_id: self.flows.prepare(
                client_id, hunt.client_condition, timeout=hunt.timeout,
                hunt_id=hunt.hunt_id, kind="condition",
                flow_id=condition_flow_id(hunt.hunt_id, attempt), now=now,
            )
            for client_id, attempt in attempts.items()
        }
        moves = [
            Move(client_id, CHECKING, ("errors",), changes={
                "condition_flow_id": record.flow_id,
                "condition_attempt": attempts[client_id],
                "error": None,
            })
            for client_id, record in records.items()
        ]
        moved: set[str] = set()

        def store_flows(connection: Any, clients: set[str]) -> None:
            moved.update(clients)
            FlowManager.insert(connection, [records[c] for c in clients])

        count = await self.hunts.move(hunt.hunt_id, moves, also=store_flows)
        await self.flows.adopt([records[c] for c in moved])
        return count

    # Conditions ---------------------------------------------------------------------------------

    def _condition(self, hunt: Hunt) -> ServerCondition:
        condition = self._conditions.get(hunt.hunt_id)
        if condition is None:
            condition = self._conditions[hunt.hunt_id] = ServerCondition(hunt.server_condition)
        return condition

    async def conditions_finished(self, records: list[FlowRecord]) -> None:
        """Condition flows have ended: judge each client and move it on."""
        by_hunt: dict[str, list[Move]] = {}
        for record in records:
            hunt = self.hunts.hunts.get(record.hunt_id or "")
            if hunt is None:
                continue
            by_hunt.setdefault(hunt.hunt_id, []).append(await self._judge(hunt, record))
        for hunt_id, moves in by_hunt.items():
            await self.hunts.move(hunt_id, moves)

    async def _judge(self, hunt: Hunt, record: FlowRecord) -> Move:
        expected = {"expect_queues": (CHECKING,), "expect_flow": record.flow_id,
                    "expect_flow_column": "condition_flow_id"}
        if record.state != "finished":
            return Move(record.client_id, "errors", **expected, changes={
                "stage": "condition", "error": record.error or record.state})
        if record.kept_rows is not None:
            rows = record.kept_rows
        else:
            rows = [row async for _seq, batch in self.flows.row_batches(
                record.client_id, record.flow_id) for row in batch]
        client = client_variable(self.directory.get(record.client_id), record.client_id)
        try:
            matched = await self._condition(hunt).matches(rows, client)
        except Exception as error:
            log.exception("server condition of %s failed on %s", hunt.hunt_id, record.client_id)
            return Move(record.client_id, "errors", **expected, changes={
                "stage": "condition", "error": f"server condition failed: {error}"})
        return Move(record.client_id, "pending" if matched else "not_matched", **expected)

    async def _resume_checks(self) -> None:
        """Condition flows that ended while the server was down (or just before it died) are
        judged now."""
        rows = await self.hunts.store.fetch_all(
            "SELECT f.* FROM hunt_clients hc JOIN flows f ON f.client_id = hc.client_id"
            " AND f.flow_id = hc.condition_flow_id WHERE hc.queue = ?"
            " AND f.state NOT IN ('queued', 'running')",
            (CHECKING,),
        )
        if rows:
            await self.conditions_finished([FlowRecord.from_row(row) for row in rows])

    # Starting hunts -----------------------------------------------------------------------------

    def hunt_started(self, hunt: Hunt) -> None:
        """Check the connected agents for ``hunt`` soon, within the global budget."""
        self._started.put_nowait(hunt)

    async def _notify_forever(self) -> None:
        while True:
            hunt = await self._started.get()
            try:
                await self._check_connected(hunt)
            except Exception:
                log.exception("checking connected agents for %s failed", hunt.hunt_id)

    async def _check_connected(self, hunt: Hunt) -> None:
        online = list(self.directory.sessions)
        for start in range(0, len(online), NOTIFY_BATCH):
            if hunt.state != "running":
                return
            batch = online[start:start + NOTIFY_BATCH]
            began = time.monotonic()
            # No checkpoint is sent here: the agent learns it at its next check-in, and a
            # message to every agent of the fleet at once is what this budget is meant to avoid.
            await self.check(hunt, batch)
            # The budget: at most NOTIFY_PER_SECOND launches a second, whatever the fleet's size.
            spare = len(batch) / NOTIFY_PER_SECOND - (time.monotonic() - began)
            if spare > 0:
                await asyncio.sleep(spare)
