"""The foreman: which clients a running hunt looks at, and whether each one matches.

Every agent presents the timestamp of the newest hunt it was checked for, on connect and at each
poll. For every running hunt started after that, and never checked for this client (the server
records every check, so an agent whose state was wiped never runs a hunt twice), the foreman
launches a CheckHuntCondition flow: the agent runs the client-side condition; when its rows are
back, the server-side condition is judged here over them, within a time budget and off the event
loop. A match puts the client in the hunt's pending queue, no match in not matched, a failed
check or judgement in errors with the reason.

When a hunt starts, the foreman does not wait for the next poll: it checks the connected agents
itself, in batches, within a global budget of launches per second, so that starting a hunt on
thousands of agents does not storm the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from velotui.server import failpoints
from velotui.server.clients import ClientDirectory
from velotui.server.conditions import MAX_CONDITION_ROWS, ServerCondition, client_variable
from velotui.server.data import FlowChange, FlowRecord, HuntRecord
from velotui.server.data.hunts import Judged
from velotui.server.flows import FlowManager
from velotui.server.hunt_manager import HuntManager
from velotui.server.ids import condition_flow_id, hunt_flow_id
from velotui.wire import protocol

if TYPE_CHECKING:
    from velotui.server.sessions import AgentSession
    from velotui.server.settings import ServerSettings

log = logging.getLogger(__name__)
NOTIFY_BATCH = 500
NOTIFY_PER_SECOND = 20_000.0
# Judgements stored in one write: a hunt's checks end in bursts.
JUDGE_BATCH = 500


class Foreman:
    """Decides which clients take part in running hunts."""

    def __init__(self, hunts: HuntManager, flows: FlowManager, directory: ClientDirectory,
                 settings: ServerSettings | None = None) -> None:
        self.hunts = hunts
        self.flows = flows
        self.directory = directory
        self.settings = settings  # None: no labels are excluded
        self.checked: dict[str, set[str]] = {}  # hunt -> clients ever checked for it
        self._conditions: dict[str, ServerCondition] = {}
        self._started: asyncio.Queue[HuntRecord] = asyncio.Queue()
        self._to_judge: asyncio.Queue[FlowRecord] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        hunts.foreman = self
        flows.on_changes(self._flows_changed)

    async def load(self) -> None:
        self.checked = await self.hunts.db.hunts.checked_clients()
        self._tasks = [
            asyncio.create_task(self._notify_forever(), name="foreman-notifier"),
            asyncio.create_task(self._judge_forever(), name="foreman-judge"),
        ]
        for hunt in self.hunts.running():
            self.hunt_started(hunt)  # agents that connected while the server was down

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Check-ins ----------------------------------------------------------------------------------

    async def check_in(self, session: AgentSession, last_hunt_timestamp: int) -> None:
        """An agent connected or polled: check it for every running hunt newer than what it
        reports, then tell it the newest hunt it has now been checked for."""
        client_id = session.client_id
        for hunt in self.hunts.running():
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

    def _check_flow(self, hunt: HuntRecord, client_id: str, now: float) -> FlowRecord:
        """How a client is first checked for ``hunt``. With no rate and no client limit, nothing
        stands between a match and the collection: one hunt flow does both (the collection runs
        as soon as the condition matches, or, with a hidden condition, as soon as the server
        says so; a rate or limit set meanwhile sends a held one to pending instead). Otherwise
        a condition flow, and the collection later at the hunt's pace."""
        if hunt.rate or hunt.client_limit:
            return self._condition_flow(hunt, client_id, 1, now)
        limits = hunt.limits
        return self.flows.prepare(
            client_id, hunt.query, timeout=limits.timeout, max_rows=limits.max_rows,
            max_upload_bytes=limits.max_upload_bytes, max_logs=limits.max_logs,
            max_log_bytes=limits.max_log_bytes, max_uploads=limits.max_uploads,
            hunt_id=hunt.hunt_id, kind="hunt", flow_id=hunt_flow_id(hunt.hunt_id, 1), now=now,
            condition=hunt.client_condition, hold=bool(hunt.server_condition.strip()),
        )

    def _condition_flow(self, hunt: HuntRecord, client_id: str, attempt: int, now: float
                        ) -> FlowRecord:
        # A check returns facts, not evidence: its rows are capped (beyond the cap the check
        # ends in error) and it uploads nothing.
        return self.flows.prepare(
            client_id, hunt.client_condition, timeout=hunt.timeout,
            max_rows=MAX_CONDITION_ROWS, max_upload_bytes=0, max_uploads=0,
            hunt_id=hunt.hunt_id, kind="condition",
            flow_id=condition_flow_id(hunt.hunt_id, attempt), now=now,
        )

    async def check(self, hunt: HuntRecord, client_ids: list[str]) -> int:
        """Launch the condition check of ``hunt`` on clients never checked for it; how many."""
        seen = self.checked.setdefault(hunt.hunt_id, set())
        fresh = [c for c in client_ids if c not in seen]
        if not fresh or hunt.state != "running":
            return 0
        seen.update(fresh)  # before awaiting, so a concurrent check-in cannot launch it twice
        # A client with an excluded label is passed over for good by a hunt that does not name
        # the label: never checked, never recruited.
        fresh = [c for c in fresh if not self._excluded(hunt, c)]
        if not fresh:
            return 0
        now = time.time()
        records = [self._check_flow(hunt, client_id, now) for client_id in fresh]
        try:
            await failpoints.reach("check.before_write")
            added = await self.hunts.add_checking(hunt, records)
        except BaseException:
            seen.difference_update(fresh)
            raise
        if len(added) < len(records):
            # The hunt stopped meanwhile (those not added may be checked if it runs again), or
            # the clients were checked already (by another frontend: they stay checked here).
            missing = {r.client_id for r in records} - {r.client_id for r in added}
            already = await self.hunts.db.hunts.checked_among(hunt.hunt_id, sorted(missing))
            seen.difference_update(missing - already)
        await self.flows.adopt(added)
        return len(added)

    def _excluded(self, hunt: HuntRecord, client_id: str) -> bool:
        if self.settings is None or not self.settings.excluded_labels:
            return False
        record = self.directory.get(client_id)
        return record is not None and self.settings.excluded_by(
            record.labels, hunt.client_condition, hunt.server_condition) is not None

    async def recheck(self, hunt: HuntRecord, clients: list[tuple[str, int]]) -> int:
        """Run the condition again for clients whose check failed: (client, attempt) each."""
        now = time.time()
        records = [(self._condition_flow(hunt, client_id, attempt, now), attempt)
                   for client_id, attempt in clients]
        added, moves = await self.hunts.db.hunts.recheck(hunt.hunt_id, records, now)
        self.hunts.apply_moves(moves)
        await self.flows.adopt(added)
        return len(added)

    # Judging ------------------------------------------------------------------------------------

    def _condition(self, hunt: HuntRecord) -> ServerCondition:
        condition = self._conditions.get(hunt.hunt_id)
        if condition is None:
            condition = self._conditions[hunt.hunt_id] = ServerCondition(hunt.server_condition)
        return condition

    def _flows_changed(self, changes: list[FlowChange]) -> None:
        self.judge_later([
            change.record for change in changes
            if (change.ended and change.record.kind == "condition"
                and change.record.state == "finished")
            or change.checked_rows is not None  # a held hunt flow's condition rows
        ])

    def judge_later(self, records: list[FlowRecord]) -> None:
        """Judge these finished condition checks soon, one at a time, off the agents' path."""
        for record in records:
            self._to_judge.put_nowait(record)

    async def _judge_forever(self) -> None:
        while True:
            batch = [await self._to_judge.get()]
            while not self._to_judge.empty() and len(batch) < JUDGE_BATCH:
                batch.append(self._to_judge.get_nowait())
            try:
                await self.judge(batch)
            except Exception:  # reconciliation finds the clients still checking and retries
                log.exception("judging %d condition checks failed", len(batch))

    async def judge(self, records: list[FlowRecord]) -> None:
        """Judge finished condition checks and store where their clients go, in one write."""
        judged = [(self.hunts.hunts[r.hunt_id], r) for r in records
                  if r.hunt_id in self.hunts.hunts]
        # All at once: the condition worker takes them in turn, with no round trip between.
        outcomes = await asyncio.gather(*(self._judgement(hunt, record)
                                          for hunt, record in judged))
        judgements = [Judged(hunt.hunt_id, record.client_id, record.flow_id, queue, error)
                      for (hunt, record), (queue, error) in zip(judged, outcomes, strict=True)]
        if not judgements:
            return
        await failpoints.reach("condition.after_judge")
        outcome = await self.hunts.db.hunts.judged(judgements, time.time())
        self.hunts.apply_moves(outcome.moves)
        self.flows.apply(outcome.ended)
        for go in outcome.go:
            record = self.flows.collecting((go.client_id, go.flow_id)) if go.run else None
            session = self.directory.sessions.get(go.client_id)
            if session is None:
                continue  # told when it returns
            if record is not None:
                await self.flows.send_go(session, record, run=True)
            elif not go.run:
                with contextlib.suppress(Exception):  # gone: its flow has ended here anyway
                    await session.send(protocol.Go(flow_id=go.flow_id, seq=go.seq, run=False))

    async def _judgement(self, hunt: HuntRecord, record: FlowRecord) -> tuple[str, str | None]:
        rows = record.kept_rows
        if rows is None and record.kind == "hunt":
            rows = await self.hunts.db.hunts.condition_rows(hunt.hunt_id, record.client_id) or []
        if rows is None:
            rows = []
            async for _seq, batch in self.flows.db.flows.row_batches(
                record.client_id, record.flow_id, pool="agents"
            ):
                rows += batch
                if len(rows) > MAX_CONDITION_ROWS:
                    break
        client = client_variable(self.directory.get(record.client_id), record.client_id)
        judgement = await self._condition(hunt).judge(rows, client)
        if judgement.error is not None:
            return "errors", f"server condition: {judgement.error}"
        return ("pending" if judgement.matched else "not_matched"), None

    # Starting hunts -----------------------------------------------------------------------------

    def hunt_deleted(self, hunt_id: str) -> None:
        """Forget a deleted hunt: whom it checked and its compiled condition."""
        self.checked.pop(hunt_id, None)
        self._conditions.pop(hunt_id, None)

    def hunt_started(self, hunt: HuntRecord) -> None:
        """Check the connected agents for ``hunt`` soon, within the global budget."""
        self._started.put_nowait(hunt)

    async def _notify_forever(self) -> None:
        while True:
            hunt = await self._started.get()
            try:
                await self._check_connected(hunt)
            except Exception:
                log.exception("checking connected agents for %s failed", hunt.hunt_id)

    async def _check_connected(self, hunt: HuntRecord) -> None:
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
