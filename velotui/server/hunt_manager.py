"""The hunt manager: hunts' lives, their queues, and recruitment at each hunt's rate.

Every state change is a guarded statement of the data layer: a client is recruited only while
its hunt runs (checked in the transaction that inserts its collection), a stop is one
transaction (the hunt's state, the cancel of its flows in flight, their clients' moves), and a
collection's end moves its client in the transaction that ends it. The counts kept here follow
only the moves the writer reports; they are rebuilt from the table at start and checked against
it periodically, so they are exact after a crash and never drift. Recruitment moves clients
from pending to running at the hunt's rate (a token bucket on the monotonic clock) and within
its client limit, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from velotui.server import failpoints
from velotui.server.data import (
    AuditEntry,
    Database,
    FlowChange,
    FlowRecord,
    HuntRecord,
    QueueMove,
)
from velotui.server.data.approvals import ApprovalRefused
from velotui.server.data.hunts import Candidate
from velotui.server.data.store import EVERYTHING
from velotui.server.data.topics import COUNTS, HUNT
from velotui.server.errors import ServiceError
from velotui.server.flows import FlowManager
from velotui.server.ids import hunt_flow_id, new_hunt_id
from velotui.server.token_bucket import recruitment_bucket
from velotui.server.upload_store import upload_key

if TYPE_CHECKING:
    from velotui.server.foreman import Foreman

log = logging.getLogger(__name__)
RECRUIT_INTERVAL = 0.25
RECRUIT_BATCH = 500
PUBLISH_INTERVAL = 0.1
RECONCILE_INTERVAL = 60.0
ERROR_LIMIT_REASON = "error limit reached"


class HuntError(ServiceError):
    """A hunt operation that cannot be done; the message says why in one line."""


class RecruitmentBudget:
    """A hunt's rate as a token bucket: ``rate`` clients a minute, with at most one second's
    worth saved up, so 60 a minute lets about one client through each second and an idle spell
    never turns into a burst. A rate of 0 means no limit. ``now`` is on the monotonic clock."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._bucket = recruitment_bucket(rate)

    def take(self, now: float, wanted: int) -> int:
        """How many of ``wanted`` clients may be recruited at ``now``; those are spent."""
        if self._bucket is None:
            return max(wanted, 0)
        return self._bucket.take(wanted, now)


class HuntManager:
    """Every hunt, its counts, and the recruiter."""

    def __init__(self, db: Database, flows: FlowManager,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.flows = flows
        self.clock = clock
        # Schedules and expiry are on the wall clock (an operator writes them as times).
        self.wall_clock = wall_clock
        self.hunts: dict[str, HuntRecord] = {}
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._published = asyncio.Event()
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self._deleted: set[str] = set()  # hunts deleted since the publisher last ran
        self._tasks: list[asyncio.Task[None]] = []
        self._last_start_timestamp = 0
        self._suspected_drift: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        # What other frontends changed (heard through the store), read again soon, coalesced.
        self._heard_hunts: set[str] = set()
        self._heard_counts: set[str] = set()
        self._heard_everything = False
        self._heard = asyncio.Event()
        self._moves_applied: dict[str, int] = {}  # per hunt: to tell a read raced a move
        self.foreman: Foreman | None = None  # set by the server once both exist
        flows.on_changes(self._flows_changed)

    # Start and stop -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Hunts and their exact counts from the database; flows of stopped hunts cancelled,
        disagreements repaired; then recruiting starts."""
        approvals = await self.db.approvals.latest()
        for hunt in await self.db.hunts.load():
            hunt.approval = approvals.get(hunt.hunt_id)
            self.hunts[hunt.hunt_id] = hunt
            self._last_start_timestamp = max(self._last_start_timestamp, hunt.start_timestamp)
        # A crash after a stop's commit must not leave any of its flows to be delivered.
        changes = await self.db.hunts.cancel_flows_of_stopped_hunts(time.time())
        if changes:
            log.warning("cancelled %d flows of stopped hunts left in flight", len(changes))
            self.flows.apply(changes)
        # A schedule that came due while the server was down starts now (or, expired, ends).
        await self.start_due()
        # Files of a hunt deleted just before a crash go now.
        leftovers = await self.db.hunts.upload_removals()
        if leftovers:
            files, size = await self._remove_uploads(leftovers)
            log.warning("removed %d files (%d bytes) of hunts deleted before a restart", files,
                        size)
        self.db.store.listen(self._heard_from_others)
        self._tasks = [
            asyncio.create_task(self._recruit_forever(), name="hunt-recruiter"),
            asyncio.create_task(self._publish_forever(), name="hunt-publisher"),
            asyncio.create_task(self._follow_forever(), name="hunt-follower"),
        ]

    def start_reconciling(self) -> None:
        """Repair disagreements now and every so often (once the foreman is there to judge)."""
        self._tasks.append(asyncio.create_task(self._reconcile_forever(), name="hunt-reconciler"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Queries ------------------------------------------------------------------------------------

    def get(self, hunt_id: str) -> HuntRecord:
        """The hunt; raises HuntError when there is none by that ID."""
        hunt = self.hunts.get(hunt_id)
        if hunt is None:
            raise HuntError(f"no hunt {hunt_id!r} (see: velotui hunt list)")
        return hunt

    def running(self) -> list[HuntRecord]:
        """Running hunts, oldest start first."""
        hunts = [h for h in self.hunts.values() if h.state == "running"]
        return sorted(hunts, key=lambda h: h.start_timestamp)

    # Lifecycle ----------------------------------------------------------------------------------

    async def create(self, hunt: HuntRecord, audit: AuditEntry | None = None) -> HuntRecord:
        """Store a new hunt, paused, or scheduled when it has a ``start_at``; ``hunt.hunt_id``
        is assigned here (and is the target of ``audit``, recorded with it)."""
        hunt.hunt_id = new_hunt_id()
        hunt.state = "scheduled" if hunt.start_at is not None else "paused"
        hunt.created = self.wall_clock()
        if audit is not None:
            audit = replace(audit, target=hunt.hunt_id)
        await self.db.hunts.create(hunt, audit)
        self.hunts[hunt.hunt_id] = hunt
        self._changed(hunt.hunt_id)
        return hunt

    async def start(self, hunt_id: str, audit: AuditEntry | None = None) -> HuntRecord:
        """Start (or start again, or start a scheduled hunt early) a hunt. Raises HuntError if
        it runs already, has expired, or is still at its error limit; ApprovalRefused if it
        needs an approval it does not have (judged in the transaction that starts it)."""
        hunt = self.get(hunt_id)
        if hunt.state == "running":
            raise HuntError(f"{hunt_id} is already running")
        now = self.wall_clock()
        if now >= hunt.expires:
            raise HuntError(f"{hunt_id} expired at {time.ctime(hunt.expires)}")
        if hunt.error_limit_reached:
            raise HuntError(
                f"{hunt_id} is at its error limit ({hunt.counts['errors']} clients in errors):"
                f" raise it (velotui hunt set {hunt_id} --max-errors N) or relaunch the clients"
                " in errors (velotui hunt relaunch)")
        stored = await self.db.hunts.start(hunt_id, now, self._next_timestamp(now), audit)
        if stored is None:
            raise HuntError(f"{hunt_id} is already running")
        self._started(hunt, stored)
        return hunt

    def _next_timestamp(self, now: float) -> int:
        # A new timestamp at every start, so agents checked since the last run are looked at
        # again; the server's own record keeps anyone from running the hunt twice.
        return max(int(now * 1_000_000), self._last_start_timestamp + 1)

    def _started(self, hunt: HuntRecord, stored: HuntRecord) -> None:
        self._last_start_timestamp = max(self._last_start_timestamp, stored.start_timestamp)
        self._copy_stored(hunt, stored)
        self._changed(hunt.hunt_id)
        if self.foreman is not None:
            self.foreman.hunt_started(hunt)
        self._wake.set()

    async def start_due(self) -> list[str]:
        """Start every scheduled hunt whose time has come (one expired meanwhile is stopped
        instead); the IDs started."""
        now = self.wall_clock()
        started = []
        for hunt in list(self.hunts.values()):
            if hunt.state != "scheduled" or hunt.start_at is None or hunt.start_at > now:
                continue
            if now >= hunt.expires:
                with contextlib.suppress(HuntError):
                    await self.stop(hunt.hunt_id, "expired")
                continue
            stored = await self.db.hunts.start_scheduled(hunt.hunt_id, now,
                                                         self._next_timestamp(now))
            if stored is None:  # stopped, paused or started since it was read
                continue
            if stored.state != "running":  # paused: awaiting approval
                log.warning("%s reached its start time without approval: paused",
                            hunt.hunt_id)
                self._copy_stored(hunt, stored)
                self._changed(hunt.hunt_id)
                continue
            self._started(hunt, stored)
            started.append(hunt.hunt_id)
        return started

    async def pause(self, hunt_id: str, reason: str, audit: AuditEntry | None = None
                    ) -> HuntRecord:
        """Stop recruiting and checking; collections in flight go on to their end. A scheduled
        hunt drops its schedule. Raises HuntError on a hunt neither running nor scheduled."""
        hunt = self.get(hunt_id)
        stored = await self.db.hunts.pause(hunt_id, reason, self.wall_clock(), audit)
        if stored is None:
            raise HuntError(f"{hunt_id} is {hunt.state}: only a running or scheduled hunt"
                            " can be paused")
        self._copy_stored(hunt, stored)
        self._changed(hunt_id)
        return hunt

    async def update_settings(self, hunt_id: str, values: dict[str, Any],
                              audit: AuditEntry | None = None) -> HuntRecord:
        """Change a hunt's settings (rate, client_limit, expires, max_errors,
        max_errors_percent, description) at once: a new rate is used from the recruiter's next
        tick. Raises HuntError for a limit below the clients already recruited."""
        hunt = self.get(hunt_id)
        change = await self.db.hunts.update_settings(hunt_id, values, audit)
        if change.hunt is None and not change.refused:
            raise HuntError(f"no hunt {hunt_id!r} (see: velotui hunt list)")
        if change.hunt is None:
            raise HuntError(f"a limit of {values.get('client_limit')} is below the"
                            f" {change.recruited} clients {hunt_id} has already recruited")
        self._copy_stored(hunt, change.hunt)
        self._changed(hunt_id)
        self._wake.set()
        return hunt

    async def copy(self, hunt_id: str, creator: str, audit: AuditEntry | None = None
                   ) -> HuntRecord:
        """A new paused hunt with the same specification and the same lifetime from now."""
        source = self.get(hunt_id)
        lifetime = source.expires - source.created  # as long as it was given
        copied = HuntRecord(
            hunt_id="", query=source.query, client_condition=source.client_condition,
            server_condition=source.server_condition, description=source.description,
            rate=source.rate, client_limit=source.client_limit,
            expires=self.wall_clock() + max(lifetime, 60.0), state="paused", created=0.0,
            creator=creator, artifacts=source.artifacts, max_errors=source.max_errors,
            max_errors_percent=source.max_errors_percent, copied_from=source.hunt_id,
            **asdict(source.limits),
        )
        if audit is not None:  # the copy's own specification (its expiry is its own)
            audit = replace(audit, details={**audit.details, "spec_hash": copied.spec_hash})
        return await self.create(copied, audit)

    async def archive(self, hunt_id: str, audit: AuditEntry | None = None) -> HuntRecord:
        """Hide a finished hunt from the default list. Raises HuntError unless it is stopped or
        paused with nothing in flight."""
        hunt = self.get(hunt_id)
        stored = await self.db.hunts.archive(hunt_id, self.wall_clock(), audit)
        if stored is None:
            if hunt.archived is not None:
                raise HuntError(f"{hunt_id} is archived already")
            raise HuntError(f"{hunt_id} is {hunt.state} with {hunt.in_flight} clients in"
                            " flight: only a stopped or paused hunt with nothing in flight can"
                            " be archived")
        self._copy_stored(hunt, stored)
        self._changed(hunt_id)
        return hunt

    async def delete(self, hunt_id: str, audit: AuditEntry | None = None) -> dict[str, Any]:
        """Remove the hunt: its rows, logs, flows, clients and uploaded files, and give the
        space back. Raises HuntError on a running or scheduled hunt, or one with collections
        in flight. Returns what went: rows, clients, files, bytes_freed (the datastore's drop)."""
        hunt = self.get(hunt_id)
        if hunt.state in ("running", "scheduled"):
            raise HuntError(f"{hunt_id} is {hunt.state}: stop it before deleting it")
        before = await self.db.store.size()
        deleted = await self.db.hunts.delete(hunt_id, audit)
        if deleted is None and hunt.state in ("running", "scheduled"):  # started meanwhile
            raise HuntError(f"{hunt_id} is {hunt.state}: stop it before deleting it")
        if deleted is None:
            raise HuntError(f"{hunt_id} has collections in flight: stop it (velotui hunt stop"
                            f" {hunt_id}) before deleting it")
        self.hunts.pop(hunt_id, None)
        self._suspected_drift.pop(hunt_id, None)
        if self.foreman is not None:
            self.foreman.hunt_deleted(hunt_id)
        self._deleted.add(hunt_id)
        self._published.set()
        await failpoints.reach("delete.after_commit")
        files, file_bytes = await self._remove_uploads(deleted.uploads)
        await self.db.store.reclaim()
        freed = max(before - await self.db.store.size(), 0) + file_bytes
        return {"hunt_id": hunt_id, "bytes_freed": freed, "rows": deleted.rows,
                "files": files, "clients": deleted.clients}

    async def _remove_uploads(self, uploads: Sequence[tuple[str, str, int]]) -> tuple[int, int]:
        """Remove these uploads' files, then strike them from the durable list of files to
        remove; how many files and bytes went."""
        keys = [upload_key(client_id, flow_id, upload_id)
                for client_id, flow_id, upload_id in uploads]
        removed = await asyncio.to_thread(self.flows.upload_store.remove, keys)
        await self.db.hunts.uploads_removed(uploads)
        return removed

    async def stop(self, hunt_id: str, reason: str = "stopped by the operator",
                   cancel_in_flight: bool = True, audit: AuditEntry | None = None
                   ) -> HuntRecord:
        """Stop recruiting and (unless the hunt stops itself at its client limit) cancel every
        flow of the hunt still in flight, all in one transaction. Works on a running hunt, and
        on one that stopped recruiting on its own but has collections in flight. Raises
        HuntError when there is nothing to stop."""
        hunt = self.get(hunt_id)
        # Only a stop that cancels holds the hunt's flows back: one that lets them finish (its
        # client limit) must not drop a hand-over made meanwhile (another frontend's recruit).
        holding = self.flows.holding_hunt(hunt_id) if cancel_in_flight \
            else contextlib.nullcontext()
        async with holding:
            if cancel_in_flight:
                await failpoints.reach("cancel.before_commit")
            change = await self.db.hunts.stop(hunt_id, reason, self.wall_clock(),
                                              cancel=cancel_in_flight, audit=audit)
            if change is None:
                raise HuntError(f"{hunt_id} is not running ({hunt.state}) and has nothing"
                                " in flight")
            await failpoints.reach("stop.after_commit")
            self._copy_stored(hunt, change.hunt)
            self._changed(hunt_id)
            self.flows.apply(change.ended)
        await self.flows.tell_agents(change.ended)
        return hunt

    async def relaunch(self, hunt_id: str, audit: AuditEntry | None = None) -> int:
        """Run again the collections of the clients in errors, and only those; starts the hunt
        if it is not running. Returns how many clients were put back."""
        hunt = self.get(hunt_id)
        rows = await self.db.hunts.in_errors(hunt_id)
        if not rows:
            raise HuntError(f"{hunt_id} has no clients in errors")
        if hunt.state != "running" and self.wall_clock() >= hunt.expires:
            raise HuntError(f"{hunt_id} expired at {time.ctime(hunt.expires)}")
        if hunt.state != "running":
            # It will start: refuse before anything is put back, not after.
            refusal = await self.db.approvals.start_refusal(hunt_id, self.wall_clock())
            if refusal is not None:
                raise ApprovalRefused(refusal)
        collection = [r["client_id"] for r in rows if r["stage"] == "collection"]
        condition = [r for r in rows if r["stage"] != "collection"]
        moves = await self.db.hunts.requeue_errors(hunt_id, collection, time.time(), audit)
        self.apply_moves(moves)
        moved = len(moves)
        if condition and self.foreman is not None:
            moved += await self.foreman.recheck(
                hunt, [(r["client_id"], r["condition_attempt"] + 1) for r in condition])
        if hunt.state != "running":
            await self.start(hunt_id)
        self._wake.set()
        return moved

    # Moving clients -----------------------------------------------------------------------------

    def apply_moves(self, moves: Sequence[QueueMove]) -> None:
        """Counts follow committed moves (a move from "" is a client new to the hunt)."""
        for move in moves:
            hunt = self.hunts.get(move.hunt_id)
            if hunt is None:
                continue
            self._moves_applied[move.hunt_id] = self._moves_applied.get(move.hunt_id, 0) + 1
            if move.old:
                hunt.counts[move.old] -= 1
            hunt.counts[move.new] += 1
            self._changed(move.hunt_id)
        if moves:
            self._wake.set()

    def _flows_changed(self, changes: list[FlowChange]) -> None:
        self.apply_moves([move for change in changes for move in change.moves])

    @staticmethod
    def _copy_stored(hunt: HuntRecord, stored: HuntRecord) -> None:
        counts, approval = hunt.counts, hunt.approval
        hunt.__dict__.update(stored.__dict__)
        hunt.counts, hunt.approval = counts, approval

    # Other frontends ---------------------------------------------------------------------------

    def _heard_from_others(self, topics: set[str]) -> None:
        """Another frontend committed changes to these hunts or their counts: read them again
        (soon, coalesced; the tables are the truth)."""
        for topic in topics:
            if topic == EVERYTHING:
                self._heard_everything = True
            elif topic.startswith(HUNT):
                self._heard_hunts.add(topic[len(HUNT):])
            elif topic.startswith(COUNTS):
                self._heard_counts.add(topic[len(COUNTS):])
        self._heard.set()

    async def _follow_forever(self) -> None:
        while True:
            await self._heard.wait()
            self._heard.clear()
            try:
                await self.follow_others()
            except Exception:  # heard again at the next change; reconciliation repairs counts
                log.exception("following other frontends' hunt changes failed")

    async def follow_others(self) -> None:
        """Read again what other frontends changed: hunts (a new one, a start, pause, stop,
        edit or delete) and counts."""
        everything, self._heard_everything = self._heard_everything, False
        hunt_ids, self._heard_hunts = self._heard_hunts, set()
        count_ids, self._heard_counts = self._heard_counts, set()
        if everything:
            stored = {hunt.hunt_id: hunt for hunt in await self.db.hunts.load()}
            hunt_ids = set(stored) | set(self.hunts)
            for hunt_id in hunt_ids:
                await self._follow_hunt(hunt_id, stored.get(hunt_id))
        else:
            for hunt_id in hunt_ids:
                await self._follow_hunt(hunt_id, await self.db.hunts.get(hunt_id))
        await self.read_counts(sorted((count_ids | hunt_ids) & set(self.hunts)))

    async def _follow_hunt(self, hunt_id: str, stored: HuntRecord | None) -> None:
        hunt = self.hunts.get(hunt_id)
        if stored is None:  # deleted elsewhere
            if hunt is not None and hunt_id not in self._deleted:
                self.hunts.pop(hunt_id, None)
                self._suspected_drift.pop(hunt_id, None)
                if self.foreman is not None:
                    self.foreman.hunt_deleted(hunt_id)
                self._deleted.add(hunt_id)
                self._published.set()
            return
        approval = (await self.db.approvals.latest()).get(hunt_id)
        if hunt is None:
            hunt = self.hunts[hunt_id] = stored
            was_running, started_at = False, 0
        else:
            was_running, started_at = hunt.state == "running", hunt.start_timestamp
            self._copy_stored(hunt, stored)
        hunt.approval = approval
        if hunt.state == "running" and (not was_running or hunt.start_timestamp != started_at):
            # Started elsewhere: this frontend's connected clients are checked here.
            self._last_start_timestamp = max(self._last_start_timestamp, hunt.start_timestamp)
            if self.foreman is not None:
                self.foreman.hunt_started(hunt)
            self._wake.set()
        self._changed(hunt_id)

    async def read_counts(self, hunt_ids: Sequence[str]) -> None:
        """These hunts' counts, exactly as the table has them now. A read that a move
        committed here raced is read again (memory follows this frontend's moves as they
        commit; the table holds everyone's)."""
        pending = [hunt_id for hunt_id in hunt_ids if hunt_id in self.hunts]
        for _attempt in range(3):
            if not pending:
                return
            before = {hunt_id: self._moves_applied.get(hunt_id, 0) for hunt_id in pending}
            stored = await self.db.hunts.counts_of(pending)
            raced = []
            for hunt_id in pending:
                hunt = self.hunts.get(hunt_id)
                if hunt is None:
                    continue
                if self._moves_applied.get(hunt_id, 0) != before[hunt_id]:
                    raced.append(hunt_id)
                    continue
                table = {queue: stored.get(hunt_id, {}).get(queue, 0) for queue in hunt.counts}
                if table != hunt.counts:
                    hunt.counts.update(table)
                    self._changed(hunt_id)
            pending = raced
        if pending:  # busy here: try again after the next round of changes
            self._heard_counts.update(pending)
            self._heard.set()

    async def exact(self, hunt_ids: Sequence[str] | None = None) -> None:
        """Before the API answers with counts: on a database several frontends share, read
        these hunts (None: every hunt, new ones included) and their counts from the tables,
        so every frontend answers the same. Nothing to do on SQLite (one process)."""
        if self.db.store.dialect == "sqlite":
            return
        if hunt_ids is None:
            stored = {hunt.hunt_id: hunt for hunt in await self.db.hunts.load()}
            for hunt_id in set(stored) - set(self.hunts):
                await self._follow_hunt(hunt_id, stored[hunt_id])
            hunt_ids = list(self.hunts)
        else:
            for hunt_id in hunt_ids:
                await self._follow_hunt(hunt_id, await self.db.hunts.get(hunt_id))
        await self.read_counts(hunt_ids)

    # Approvals ----------------------------------------------------------------------------------

    async def request_approval(self, hunt_id: str, requester: str, reason: str,
                               audit: AuditEntry | None = None) -> HuntRecord:
        """Ask for the hunt's current specification to be approved. Raises ApprovalRefused
        when a request is pending already."""
        hunt = self.get(hunt_id)
        hunt.approval = await self.db.approvals.request(hunt_id, requester, reason,
                                                        self.wall_clock(), audit)
        self._changed(hunt_id)
        return hunt

    async def decide_approval(self, hunt_id: str, decider: str, approve: bool, reason: str,
                              lifetime: float, audit: AuditEntry | None = None) -> HuntRecord:
        """Approve (for ``lifetime`` seconds) or reject the hunt's pending request. Raises
        ApprovalRefused when nothing valid is pending or the decider is the hunt's creator or
        the requester."""
        hunt = self.get(hunt_id)
        hunt.approval = await self.db.approvals.decide(hunt_id, decider, approve, reason,
                                                       self.wall_clock(), lifetime, audit)
        self._changed(hunt_id)
        return hunt

    # Recruitment --------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _recruit_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECRUIT_INTERVAL)
            self._wake.clear()
            try:
                await self.start_due()
            except Exception:
                log.exception("starting scheduled hunts failed")
            for hunt in self.running():
                try:
                    await self._tend(hunt)
                except Exception:
                    log.exception("recruiting for %s failed", hunt.hunt_id)

    async def _tend(self, hunt: HuntRecord) -> None:
        if self.wall_clock() >= hunt.expires:
            with contextlib.suppress(HuntError):  # another frontend stopped it first
                await self.stop(hunt.hunt_id, "expired")
            return
        if hunt.error_limit_reached:
            # Its collections in flight finish; the operator relaunches, raises the limit, or
            # stops it.
            log.warning("%s paused itself: %d clients in errors", hunt.hunt_id,
                        hunt.counts["errors"])
            with contextlib.suppress(HuntError):
                await self.pause(hunt.hunt_id, ERROR_LIMIT_REASON)
            return
        wanted = min(hunt.counts["pending"], RECRUIT_BATCH)
        if hunt.client_limit:
            wanted = min(wanted, hunt.client_limit - hunt.recruited)
        if wanted > 0:
            await self._recruit(hunt, wanted)
        if hunt.client_limit and hunt.recruited >= hunt.client_limit and hunt.state == "running":
            with contextlib.suppress(HuntError):  # another frontend stopped it first
                await self.stop(hunt.hunt_id, "client limit reached", cancel_in_flight=False)

    async def _recruit(self, hunt: HuntRecord, wanted: int) -> None:
        """Recruit up to ``wanted`` pending clients: the data layer claims them within the
        hunt's limit and its one rate budget (shared by every frontend), in one transaction."""
        now = time.time()
        limits = hunt.limits

        def make_flow(candidate: Candidate) -> FlowRecord:
            return self.flows.prepare(
                candidate.client_id, hunt.query, timeout=limits.timeout,
                max_rows=limits.max_rows, max_upload_bytes=limits.max_upload_bytes,
                max_logs=limits.max_logs, max_log_bytes=limits.max_log_bytes,
                max_uploads=limits.max_uploads, hunt_id=hunt.hunt_id, kind="collection",
                flow_id=hunt_flow_id(hunt.hunt_id, candidate.attempt + 1), now=now,
            )

        await failpoints.reach("recruit.before_write")
        change = await self.db.hunts.recruit(hunt.hunt_id, wanted, make_flow, now)
        if change is None:
            return  # the hunt stopped meanwhile: nobody was recruited
        self.apply_moves(change.moves)
        await self.flows.adopt(change.recruited)

    # Checks (the foreman's) ---------------------------------------------------------------------

    async def add_checking(self, hunt: HuntRecord, condition_flows: list[FlowRecord]
                           ) -> list[FlowRecord]:
        """Record that these clients are being checked for ``hunt`` and store their condition
        flows (if the hunt still runs). Returns the flows actually added."""
        added, moves = await self.db.hunts.add_checking(hunt.hunt_id, condition_flows,
                                                        time.time())
        self.apply_moves(moves)
        return added

    # Repair -------------------------------------------------------------------------------------

    async def reconcile(self) -> list[FlowRecord]:
        """Repair clients whose queue disagrees with their flow; returns the condition checks
        that finished but were never judged (for the foreman)."""
        result = await self.db.hunts.reconcile(time.time())
        if result.moves or result.ended:
            log.warning("reconciled %d queue moves and %d flows", len(result.moves),
                        len(result.ended))
        self.apply_moves(result.moves)
        self.flows.apply(result.ended)
        await self.flows.tell_agents(result.ended)
        await self._check_counts()
        return result.to_judge

    async def _check_counts(self) -> None:
        """Compare the counts kept here with the table; a disagreement seen twice in a row,
        the same both times, is repaired from the table (and logged: it is a bug)."""
        stored = await self.db.hunts.counts()
        for hunt_id, hunt in self.hunts.items():
            table = {queue: stored.get(hunt_id, {}).get(queue, 0) for queue in hunt.counts}
            if table == hunt.counts:
                self._suspected_drift.pop(hunt_id, None)
                continue
            seen = (dict(hunt.counts), table)
            if self._suspected_drift.get(hunt_id) == seen:
                log.error("counts of %s drifted from the table (%s, stored %s): repaired",
                          hunt_id, hunt.counts, table)
                hunt.counts.update(table)
                self._changed(hunt_id)
                self._suspected_drift.pop(hunt_id, None)
            else:
                self._suspected_drift[hunt_id] = seen

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                to_judge = await self.reconcile()
                if to_judge and self.foreman is not None:
                    self.foreman.judge_later(to_judge)
            except Exception:
                log.exception("reconciling hunts failed")
            await asyncio.sleep(RECONCILE_INTERVAL)

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
            deleted, self._deleted = self._deleted, set()
            for hunt_id in deleted:
                for queue in self._subscribers:
                    queue.put_nowait({"event": "hunt_deleted", "hunt_id": hunt_id})
            for hunt_id in dirty - deleted:
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
                # Collapse a backlog to the latest state of each hunt (a deletion is its last).
                latest = {_event_hunt(event): event}
                while not queue.empty():
                    more = queue.get_nowait()
                    latest.pop(_event_hunt(more), None)  # keep the order things happened in
                    latest[_event_hunt(more)] = more
                for item in latest.values():
                    yield item
        finally:
            self._subscribers.remove(queue)


def _event_hunt(event: dict[str, Any]) -> str:
    return event["hunt_id"] if event["event"] == "hunt_deleted" else event["hunt"]["hunt_id"]
