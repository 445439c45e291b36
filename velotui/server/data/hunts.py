"""Hunt statements: a hunt's life and its clients' queues, every change guarded.

A client is recruited only if its hunt is still running, checked in the same transaction that
inserts its collection; a stop is one transaction holding the hunt's new state, the cancel of
every flow of the hunt still in flight and the queue moves that go with them. Moves between
queues name the queue (and flow) a client must still be in, so a stale caller moves nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from velotui.server.data.approvals import AWAITING_APPROVAL, ApprovalRefused, approval_refusal
from velotui.server.data.audit import AuditEntry, append_audit
from velotui.server.data.flows import (
    Ending,
    end_flows,
    insert_flows,
    move_after_end,
    unpack_rows,
)
from velotui.server.data.records import (
    CHECKING,
    RECRUITED,
    FlowChange,
    FlowRecord,
    HuntChange,
    HuntRecord,
    QueueMove,
)
from velotui.server.data.store import Row, Store, Transaction
from velotui.server.data.topics import announce_moves, hunt_topic
from velotui.server.token_bucket import TokenBucket, recruitment_bucket

_RECRUITED = "(" + ", ".join(f"'{queue}'" for queue in RECRUITED) + ")"


@dataclass(frozen=True)
class Candidate:
    """A pending client the recruiter may take, as read (its attempt guards the move)."""

    client_id: str
    attempt: int


@dataclass(frozen=True)
class Judged:
    """Where the server-side condition sends a client checked by ``condition_flow_id``."""

    hunt_id: str
    client_id: str
    condition_flow_id: str
    queue: str
    error: str | None = None


@dataclass
class JudgedOutcome:
    """What storing judgements did: the queue moves, the hunt flows that ended at their
    condition, and for each held hunt flow what its agent is told (``Go``)."""

    moves: list[QueueMove] = field(default_factory=list)
    ended: list[FlowChange] = field(default_factory=list)
    go: list[GoAhead] = field(default_factory=list)


@dataclass(frozen=True)
class GoAhead:
    """Run a held hunt flow's query (``query``), or end it (``run`` false); ``seq``: what of
    the flow is stored."""

    client_id: str
    flow_id: str
    seq: int
    run: bool
    query: str = ""


# The settings an operator may change while a hunt runs (columns of ``hunts``).
SETTINGS = ("rate", "client_limit", "expires", "max_errors", "max_errors_percent",
            "description")


@dataclass(frozen=True)
class SettingsChange:
    """A settings change as committed: the hunt after it (None: no such hunt), how many clients
    it had recruited, and whether the change was refused (a limit below those)."""

    hunt: HuntRecord | None
    recruited: int
    refused: bool = False


@dataclass
class Deleted:
    """What deleting a hunt removed: its result rows, its clients, its flows, every database
    record in all, and the uploads (client, flow, upload) whose files are to go."""

    rows: int = 0
    clients: int = 0
    flows: int = 0
    records: int = 0
    uploads: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Reconciled:
    """What a reconciliation pass repaired, and the condition checks left to judge."""

    moves: list[QueueMove] = field(default_factory=list)
    ended: list[FlowChange] = field(default_factory=list)
    to_judge: list[FlowRecord] = field(default_factory=list)


class HuntTable:
    """Every statement about hunts and their clients."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # Reading ------------------------------------------------------------------------------------

    async def load(self) -> list[HuntRecord]:
        """Every hunt with its exact counts."""
        hunts = {row["hunt_id"]: HuntRecord.from_row(row)
                 for row in await self.store.fetch_all("SELECT * FROM hunts", pool="agents")}
        for hunt_id, counts in (await self.counts()).items():
            if hunt_id in hunts:
                hunts[hunt_id].counts.update(counts)
        return list(hunts.values())

    async def counts(self) -> dict[str, dict[str, int]]:
        """Each hunt's count of clients per queue, from the table itself."""
        found: dict[str, dict[str, int]] = {}
        for row in await self.store.fetch_all(
            "SELECT hunt_id, queue, COUNT(*) AS n FROM hunt_clients GROUP BY hunt_id, queue",
            pool="agents",
        ):
            found.setdefault(row["hunt_id"], {})[row["queue"]] = row["n"]
        return found

    async def get(self, hunt_id: str) -> HuntRecord | None:
        """One hunt with its exact counts (None: there is none), read for a frontend that
        heard it changed elsewhere."""
        row = await self.store.fetch_one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,),
                                         pool="agents")
        if row is None:
            return None
        hunt = HuntRecord.from_row(row)
        hunt.counts.update((await self.counts_of([hunt_id])).get(hunt_id, {}))
        return hunt

    async def counts_of(self, hunt_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """These hunts' counts of clients per queue, from the table (a queue with nobody in it
        is absent)."""
        if not hunt_ids:
            return {}
        found: dict[str, dict[str, int]] = {}
        marks = ", ".join("?" for _ in hunt_ids)
        for row in await self.store.fetch_all(
            "SELECT hunt_id, queue, COUNT(*) AS n FROM hunt_clients"
            f" WHERE hunt_id IN ({marks}) GROUP BY hunt_id, queue",
            tuple(hunt_ids), pool="agents",
        ):
            found.setdefault(row["hunt_id"], {})[row["queue"]] = row["n"]
        return found

    async def checked_clients(self) -> dict[str, set[str]]:
        """For each hunt, every client it has ever looked at."""
        found: dict[str, set[str]] = {}
        for row in await self.store.fetch_all("SELECT hunt_id, client_id FROM hunt_clients",
                                              pool="agents"):
            found.setdefault(row["hunt_id"], set()).add(row["client_id"])
        return found

    async def checked_among(self, hunt_id: str, client_ids: Sequence[str]) -> set[str]:
        """Which of these clients the hunt has looked at already (on any frontend)."""
        found: set[str] = set()
        for start in range(0, len(client_ids), 500):
            chunk = list(client_ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = await self.store.fetch_all(
                f"SELECT client_id FROM hunt_clients WHERE hunt_id = ? AND client_id IN ({marks})",
                (hunt_id, *chunk), pool="agents")
            found.update(row["client_id"] for row in rows)
        return found

    async def pending(self, hunt_id: str, limit: int) -> list[Candidate]:
        """The oldest pending clients of a hunt, at most ``limit``."""
        rows = await self.store.fetch_all(
            "SELECT client_id, attempt FROM hunt_clients WHERE hunt_id = ? AND queue = 'pending'"
            " ORDER BY checked, client_id LIMIT ?",
            (hunt_id, limit), pool="agents",
        )
        return [Candidate(row["client_id"], row["attempt"]) for row in rows]

    async def in_errors(self, hunt_id: str) -> list[Row]:
        """The clients of a hunt in errors: client_id, stage, attempt, condition_attempt."""
        return await self.store.fetch_all(
            "SELECT client_id, stage, attempt, condition_attempt FROM hunt_clients"
            " WHERE hunt_id = ? AND queue = 'errors' ORDER BY checked, client_id",
            (hunt_id,), pool="agents",
        )

    # A hunt's life ------------------------------------------------------------------------------

    async def create(self, hunt: HuntRecord, audit: AuditEntry | None = None) -> None:
        def op(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO hunts (hunt_id, description, query, client_condition,"
                " server_condition, rate, client_limit, expires, timeout, max_rows,"
                " max_upload_bytes, max_logs, max_log_bytes, max_uploads, state, created,"
                " creator, artifacts, start_at, max_errors, max_errors_percent, copied_from)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (hunt.hunt_id, hunt.description, hunt.query, hunt.client_condition,
                 hunt.server_condition, hunt.rate, hunt.client_limit, hunt.expires,
                 hunt.timeout, hunt.max_rows, hunt.max_upload_bytes, hunt.max_logs,
                 hunt.max_log_bytes, hunt.max_uploads, hunt.state, hunt.created, hunt.creator,
                 hunt.artifacts, hunt.start_at, hunt.max_errors, hunt.max_errors_percent,
                 hunt.copied_from),
            )
            tx.announce(hunt_topic(hunt.hunt_id))
            _audit(tx, audit)

        await self.store.write(op)

    async def start(self, hunt_id: str, started: float, timestamp: int,
                    audit: AuditEntry | None = None) -> HuntRecord | None:
        """Run the hunt (again) from ``timestamp``; None if it is running already. Raises
        ApprovalRefused when approvals are required and it has no valid one (judged in the
        transaction that starts it)."""

        def op(tx: Transaction) -> Row | None:
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ? AND state <> 'running'",
                          (hunt_id,))
            if hunt is None:
                return None
            refusal = approval_refusal(tx, hunt, started)
            if refusal is not None:
                raise ApprovalRefused(refusal)
            tx.announce(hunt_topic(hunt_id))
            return _audited(tx, audit, tx.one(
                "UPDATE hunts SET state = 'running', stop_reason = NULL, stopped = NULL,"
                " draining = 0, start_at = NULL, started = COALESCE(started, ?),"
                " start_timestamp = ?, rate_tokens = NULL, rate_refilled = NULL"
                " WHERE hunt_id = ? AND state <> 'running' RETURNING *",
                (started, timestamp, hunt_id),
            ))

        row = await self.store.write(op)
        return HuntRecord.from_row(row) if row is not None else None

    async def start_scheduled(self, hunt_id: str, now: float, timestamp: int
                              ) -> HuntRecord | None:
        """Start a scheduled hunt whose time has come; None unless it is still scheduled and
        due (read in the transaction), so an old schedule never revives a hunt stopped or
        paused since. Without the approval it needs, it is paused instead ("awaiting
        approval"): the record returned says which."""

        def op(tx: Transaction) -> Row | None:
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ? AND state = 'scheduled'"
                          " AND start_at <= ?", (hunt_id, now))
            if hunt is None:
                return None
            tx.announce(hunt_topic(hunt_id))
            if approval_refusal(tx, hunt, now) is not None:
                # Its time came without a valid approval: it waits, paused, for one.
                return tx.one(
                    "UPDATE hunts SET state = 'paused', stop_reason = ?, start_at = NULL,"
                    " stopped = ? WHERE hunt_id = ? AND state = 'scheduled' RETURNING *",
                    (AWAITING_APPROVAL, now, hunt_id),
                )
            return tx.one(
                "UPDATE hunts SET state = 'running', stop_reason = NULL, stopped = NULL,"
                " draining = 0, start_at = NULL, started = COALESCE(started, ?),"
                " start_timestamp = ?, rate_tokens = NULL, rate_refilled = NULL"
                " WHERE hunt_id = ? AND state = 'scheduled'"
                " AND start_at <= ? RETURNING *",
                (now, timestamp, hunt_id, now),
            )

        row = await self.store.write(op)
        return HuntRecord.from_row(row) if row is not None else None

    async def pause(self, hunt_id: str, reason: str, now: float,
                    audit: AuditEntry | None = None) -> HuntRecord | None:
        """A running hunt stops recruiting and checking (its collections in flight go on to
        their end), or a scheduled one drops its schedule. None when neither."""

        def op(tx: Transaction) -> Row | None:
            tx.announce(hunt_topic(hunt_id))
            return _audited(tx, audit, tx.one(
                "UPDATE hunts SET state = 'paused', stop_reason = ?, start_at = NULL,"
                " stopped = ? WHERE hunt_id = ? AND state IN ('running', 'scheduled')"
                " RETURNING *",
                (reason, now, hunt_id),
            ))

        row = await self.store.write(op)
        return HuntRecord.from_row(row) if row is not None else None

    async def update_settings(self, hunt_id: str, values: dict[str, Any],
                              audit: AuditEntry | None = None) -> SettingsChange:
        """Change a hunt's settings (``SETTINGS`` columns) in one guarded transaction: a client
        limit below the clients already recruited (counted in the transaction) is refused, and
        nothing changes."""
        unknown = set(values) - set(SETTINGS)
        if unknown:
            raise ValueError(f"not a hunt setting: {sorted(unknown)}")

        def op(tx: Transaction) -> SettingsChange:
            recruited = tx.one(
                "SELECT COUNT(*) AS n FROM hunt_clients WHERE hunt_id = ?"
                f" AND queue IN {_RECRUITED}", (hunt_id,))["n"]
            limit = values.get("client_limit")
            if limit and limit < recruited:
                return SettingsChange(None, recruited, refused=True)
            if not values:
                row = tx.one("SELECT * FROM hunts WHERE hunt_id = ?", (hunt_id,))
            else:
                tx.announce(hunt_topic(hunt_id))
                assignments = ", ".join(f"{column} = ?" for column in values)
                if "rate" in values:  # a new rate: a new, full budget
                    assignments += ", rate_tokens = NULL, rate_refilled = NULL"
                row = tx.one(f"UPDATE hunts SET {assignments} WHERE hunt_id = ? RETURNING *",
                             (*values.values(), hunt_id))
            if row is not None:
                _audit(tx, audit)
            return SettingsChange(HuntRecord.from_row(row) if row else None, recruited)

        return await self.store.write(op)

    async def archive(self, hunt_id: str, now: float, audit: AuditEntry | None = None
                      ) -> HuntRecord | None:
        """Archive a stopped or paused hunt with nothing in flight; None otherwise."""

        def op(tx: Transaction) -> Row | None:
            if _has_flows_in_flight(tx, hunt_id):
                return None
            tx.announce(hunt_topic(hunt_id))
            return _audited(tx, audit, tx.one(
                "UPDATE hunts SET archived = ? WHERE hunt_id = ? AND archived IS NULL"
                " AND state IN ('stopped', 'paused') RETURNING *",
                (now, hunt_id),
            ))

        row = await self.store.write(op)
        return HuntRecord.from_row(row) if row is not None else None

    async def delete(self, hunt_id: str, audit: AuditEntry | None = None) -> Deleted | None:
        """Delete every row of a hunt that is neither running nor scheduled and has nothing in
        flight: its clients, flows, results, logs and upload records, and the hunt. Returns
        what went (with the uploads whose files the caller removes), or None when refused."""

        def op(tx: Transaction) -> Deleted | None:
            hunt = tx.one("SELECT state FROM hunts WHERE hunt_id = ?", (hunt_id,))
            if hunt is None or hunt["state"] in ("running", "scheduled"):
                return None
            if _has_flows_in_flight(tx, hunt_id):
                return None
            tx.announce(hunt_topic(hunt_id))
            of_hunt = "(client_id, flow_id) IN (SELECT client_id, flow_id FROM flows" \
                      " WHERE hunt_id = ?)"
            deleted = Deleted(
                rows=tx.one(f"SELECT COALESCE(SUM(row_count), 0) AS n FROM flow_rows"
                            f" WHERE {of_hunt}", (hunt_id,))["n"],
                uploads=[(r["client_id"], r["flow_id"], r["upload_id"]) for r in tx.all(
                    f"SELECT client_id, flow_id, upload_id FROM uploads WHERE {of_hunt}",
                    (hunt_id,))],
            )
            tx.execute("INSERT INTO upload_removals (client_id, flow_id, upload_id)"
                       f" SELECT client_id, flow_id, upload_id FROM uploads WHERE {of_hunt}",
                       (hunt_id,))
            for table in ("flow_rows", "flow_logs", "uploads"):
                deleted.records += tx.changed(f"DELETE FROM {table} WHERE {of_hunt}",
                                              (hunt_id,))
            deleted.flows = tx.changed("DELETE FROM flows WHERE hunt_id = ?", (hunt_id,))
            deleted.clients = tx.changed("DELETE FROM hunt_clients WHERE hunt_id = ?",
                                         (hunt_id,))
            deleted.records += deleted.flows + deleted.clients
            deleted.records += tx.changed("DELETE FROM hunts WHERE hunt_id = ?", (hunt_id,))
            if audit is not None:
                _audit(tx, replace(audit, details={**audit.details, "rows": deleted.rows,
                                                   "clients": deleted.clients,
                                                   "files": len(deleted.uploads)}))
            return deleted

        return await self.store.write(op)

    async def stop(self, hunt_id: str, reason: str, now: float, *, cancel: bool = True,
                   audit: AuditEntry | None = None) -> HuntChange | None:
        """Stop the hunt in one transaction: it recruits nobody from this commit on, and (with
        ``cancel``) every flow of it still in flight is cancelled and its client moved to
        errors. Works on a running, paused or scheduled hunt, and on one that stopped
        recruiting on its own but still has collections in flight. None when there is nothing
        to stop."""

        def op(tx: Transaction) -> HuntChange | None:
            row = tx.one("SELECT state, draining FROM hunts WHERE hunt_id = ?", (hunt_id,))
            if row is None:
                return None
            if row["state"] in ("running", "paused", "scheduled"):
                hunt = tx.one(
                    "UPDATE hunts SET state = 'stopped', stop_reason = ?, stopped = ?,"
                    " draining = ?, start_at = NULL WHERE hunt_id = ?"
                    " AND state IN ('running', 'paused', 'scheduled') RETURNING *",
                    (reason, now, 0 if cancel else 1, hunt_id),
                )
            elif cancel and _has_flows_in_flight(tx, hunt_id):
                hunt = tx.one(
                    "UPDATE hunts SET state = 'stopped', stop_reason = ?,"
                    " stopped = COALESCE(stopped, ?), draining = 0 WHERE hunt_id = ?"
                    " RETURNING *",
                    (reason, now, hunt_id),
                )
            else:
                return None
            if hunt is None:  # stopped by another frontend since it was read
                return None
            tx.announce(hunt_topic(hunt_id))
            change = HuntChange(HuntRecord.from_row(hunt))
            if cancel:
                change.ended = end_flows(
                    tx, "hunt_id = ?", (hunt_id,),
                    Ending("cancelled", f"the hunt was stopped: {reason}"), now)
            _audit(tx, audit)
            return change

        return await self.store.write(op)

    async def finish_draining(self, hunt_id: str) -> None:
        """A hunt that stopped on its own has nothing left in flight."""
        def op(tx: Transaction) -> None:
            if tx.changed("UPDATE hunts SET draining = 0 WHERE hunt_id = ? AND draining = 1",
                          (hunt_id,)):
                tx.announce(hunt_topic(hunt_id))

        await self.store.write(op)

    async def upload_removals(self) -> list[tuple[str, str, int]]:
        """Uploads of deleted hunts whose files may still be on disk (client, flow, upload)."""
        rows = await self.store.fetch_all(
            "SELECT client_id, flow_id, upload_id FROM upload_removals", pool="agents")
        return [(r["client_id"], r["flow_id"], r["upload_id"]) for r in rows]

    async def uploads_removed(self, uploads: Sequence[tuple[str, str, int]]) -> None:
        """These uploads' files are gone from disk."""
        await self.store.write(lambda tx: tx.executemany(
            "DELETE FROM upload_removals WHERE client_id = ? AND flow_id = ? AND upload_id = ?",
            list(uploads)))

    # Clients ------------------------------------------------------------------------------------

    async def add_checking(self, hunt_id: str, condition_flows: Sequence[FlowRecord], now: float
                           ) -> tuple[list[FlowRecord], list[QueueMove]]:
        """Record that these clients are being checked for the hunt (once per client, ever) and
        store their condition flows (or hunt flows: the check and the collection in one), in
        one transaction, if the hunt is still running. Returns the flows added and the moves
        (into checking)."""

        def op(tx: Transaction) -> tuple[list[FlowRecord], list[QueueMove]]:
            if not _running(tx, hunt_id):
                return [], []
            added: list[FlowRecord] = []
            for record in condition_flows:
                # A hunt flow is also the client's first collection attempt.
                hunt_flow = record.kind == "hunt"
                if tx.changed(
                    "INSERT INTO hunt_clients (hunt_id, client_id, queue, stage, flow_id,"
                    " attempt, condition_flow_id, checked, updated)"
                    " VALUES (?, ?, ?, 'condition', ?, ?, ?, ?, ?)"
                    " ON CONFLICT (hunt_id, client_id) DO NOTHING",
                    (hunt_id, record.client_id, CHECKING,
                     record.flow_id if hunt_flow else None, 1 if hunt_flow else 0,
                     record.flow_id, now, now),
                ):
                    added.append(record)
            insert_flows(tx, added)
            moves = [QueueMove(hunt_id, r.client_id, "", CHECKING) for r in added]
            announce_moves(tx, moves)
            return added, moves

        return await self.store.write(op)

    async def recheck(self, hunt_id: str, condition_flows: Sequence[tuple[FlowRecord, int]],
                      now: float) -> tuple[list[FlowRecord], list[QueueMove]]:
        """Check again clients whose condition check failed: (new condition flow, its attempt)
        for each; only clients still in errors at the condition stage move back to checking."""

        def op(tx: Transaction) -> tuple[list[FlowRecord], list[QueueMove]]:
            added: list[FlowRecord] = []
            for record, attempt in condition_flows:
                if tx.changed(
                    "UPDATE hunt_clients SET queue = ?, condition_flow_id = ?,"
                    " condition_attempt = ?, error = NULL, updated = ? WHERE hunt_id = ?"
                    " AND client_id = ? AND queue = 'errors' AND stage = 'condition'",
                    (CHECKING, record.flow_id, attempt, now, hunt_id, record.client_id),
                ):
                    added.append(record)
            insert_flows(tx, added)
            moves = [QueueMove(hunt_id, r.client_id, "errors", CHECKING) for r in added]
            announce_moves(tx, moves)
            return added, moves

        return await self.store.write(op)

    async def judged(self, judgements: Sequence[Judged], now: float) -> JudgedOutcome:
        """Store server-side judgements in one transaction: each client leaves checking for
        its queue if it is still being checked by that flow. A held hunt flow that matched goes
        on to its collection at once (its client to running, while its hunt runs); one that did
        not ends here. ``go`` says what to tell each hunt flow's agent."""

        def op(tx: Transaction) -> JudgedOutcome:
            outcome = JudgedOutcome()
            for judged in judgements:
                flow = tx.one("SELECT * FROM flows WHERE client_id = ? AND flow_id = ?",
                              (judged.client_id, judged.condition_flow_id))
                if not tx.changed(
                    "UPDATE hunt_clients SET queue = ?, error = ?, stage = 'condition',"
                    " updated = ? WHERE hunt_id = ? AND client_id = ? AND queue = ?"
                    " AND condition_flow_id = ?",
                    (judged.queue, judged.error, now, judged.hunt_id, judged.client_id,
                     CHECKING, judged.condition_flow_id),
                ):
                    continue
                if flow is None or flow["kind"] != "hunt":
                    outcome.moves.append(QueueMove(judged.hunt_id, judged.client_id, CHECKING,
                                                   judged.queue))
                    continue
                _held_flow_judged(tx, judged, flow, now, outcome)
            announce_moves(tx, outcome.moves)
            return outcome

        return await self.store.write(op)

    async def condition_rows(self, hunt_id: str, client_id: str) -> list[dict[str, Any]] | None:
        """What a client's condition returned for the hunt (a hunt flow's), if it has."""
        row = await self.store.fetch_one(
            "SELECT condition_rows FROM hunt_clients WHERE hunt_id = ? AND client_id = ?",
            (hunt_id, client_id), pool="agents",
        )
        if row is None or row["condition_rows"] is None:
            return None
        return unpack_rows(row["condition_rows"])

    async def requeue_errors(self, hunt_id: str, client_ids: Sequence[str], now: float,
                             audit: AuditEntry | None = None) -> list[QueueMove]:
        """Put clients whose collection failed back in pending (relaunch)."""

        def op(tx: Transaction) -> list[QueueMove]:
            moves = []
            for client_id in client_ids:
                if tx.changed(
                    "UPDATE hunt_clients SET queue = 'pending', error = NULL, updated = ?"
                    " WHERE hunt_id = ? AND client_id = ? AND queue = 'errors'"
                    " AND stage = 'collection'",
                    (now, hunt_id, client_id),
                ):
                    moves.append(QueueMove(hunt_id, client_id, "errors", "pending"))
            announce_moves(tx, moves)
            _audit(tx, audit)
            return moves

        return await self.store.write(op)

    async def recruit(self, hunt_id: str, wanted: int,
                      make_flow: Callable[[Candidate], FlowRecord], now: float,
                      candidates: Sequence[Candidate] | None = None) -> HuntChange | None:
        """Move up to ``wanted`` pending clients (oldest first, within the hunt's one
        recruitment budget; or only ``candidates``, as their caller paced them) to running with
        their collection flows (``make_flow`` makes each, in the writer), in one transaction,
        only while the hunt is running and within its client limit (both read in the
        transaction; each client only if it is still pending at the attempt read). Several
        frontends recruit one hunt one after the other (its row is locked for the transaction
        on PostgreSQL; SQLite's writer is alone), each pending client claimed once. None when
        the hunt no longer runs."""

        def op(tx: Transaction) -> HuntChange | None:
            locked = " FOR UPDATE" if tx.dialect == "postgresql" else ""
            hunt = tx.one("SELECT * FROM hunts WHERE hunt_id = ? AND state = 'running'"
                          + locked, (hunt_id,))
            if hunt is None:
                return None
            change = HuntChange(HuntRecord.from_row(hunt))
            room = max(wanted, 0)
            if hunt["client_limit"]:
                recruited = tx.one(
                    "SELECT COUNT(*) AS n FROM hunt_clients WHERE hunt_id = ?"
                    f" AND queue IN {_RECRUITED}",
                    (hunt_id,),
                )
                room = min(room, max(hunt["client_limit"] - recruited["n"], 0))
            # Named candidates are recruited as their caller paced them (a test's data
            # builder); claimed ones within the hunt's budget.
            budget = recruitment_bucket(hunt["rate"]) if candidates is None else None
            if budget is not None:
                budget.restore(hunt["rate_tokens"], hunt["rate_refilled"])
                room = budget.take(room, now)  # given back below for whom was not recruited
            if room <= 0:
                if budget is not None:
                    _store_budget(tx, hunt_id, budget)
                return change
            claimed = candidates
            if claimed is None:
                skip = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgresql" else ""
                claimed = [Candidate(row["client_id"], row["attempt"]) for row in tx.all(
                    "SELECT client_id, attempt FROM hunt_clients WHERE hunt_id = ?"
                    " AND queue = 'pending' ORDER BY checked, client_id LIMIT ?" + skip,
                    (hunt_id, room))]
            for candidate in claimed:
                if len(change.recruited) >= room:
                    break
                record = make_flow(candidate)
                if tx.changed(
                    "UPDATE hunt_clients SET queue = 'running', flow_id = ?, attempt = ?,"
                    " stage = 'collection', error = NULL, updated = ? WHERE hunt_id = ?"
                    " AND client_id = ? AND queue = 'pending' AND attempt = ?",
                    (record.flow_id, candidate.attempt + 1, now, hunt_id, candidate.client_id,
                     candidate.attempt),
                ):
                    change.recruited.append(record)
                    change.moves.append(
                        QueueMove(hunt_id, candidate.client_id, "pending", "running"))
            if budget is not None:
                tokens, refilled = budget.state
                budget.restore(tokens + room - len(change.recruited), refilled)
                _store_budget(tx, hunt_id, budget)
            insert_flows(tx, change.recruited)
            announce_moves(tx, change.moves)
            return change

        return await self.store.write(op)

    # Repair -------------------------------------------------------------------------------------

    async def cancel_flows_of_stopped_hunts(self, now: float) -> list[FlowChange]:
        """Cancel every flow still active whose hunt was stopped (and is not letting its
        collections finish), with their queue moves: what a crash between a stop and its
        aftermath, or an older velotui, left behind. A paused hunt's collections go on."""

        def op(tx: Transaction) -> list[FlowChange]:
            return end_flows(
                tx,
                "hunt_id IN (SELECT hunt_id FROM hunts WHERE state = 'stopped'"
                " AND draining = 0)",
                (), Ending("cancelled", "the hunt was stopped"), now,
            )

        return await self.store.write(op)

    async def reconcile(self, now: float) -> Reconciled:
        """Repair every client whose queue disagrees with its flow, in one transaction: running
        with its collection ended (moved to the outcome) or missing (back to pending); a
        finished queue with its collection still active (the flow is ended); checking with its
        condition check ended (returned in ``to_judge`` when it finished, moved to errors when
        it did not)."""

        def op(tx: Transaction) -> Reconciled:
            result = Reconciled()
            for row in tx.all(
                "SELECT hc.hunt_id, hc.client_id, f.* FROM hunt_clients hc"
                " JOIN flows f ON f.client_id = hc.client_id AND f.flow_id = hc.flow_id"
                " WHERE hc.queue = 'running' AND f.state NOT IN ('queued', 'running')"
            ):
                result.moves += move_after_end(tx, row, now)
            for row in tx.all(
                "SELECT hc.hunt_id, hc.client_id FROM hunt_clients hc WHERE hc.queue = 'running'"
                " AND NOT EXISTS (SELECT 1 FROM flows f WHERE f.client_id = hc.client_id"
                " AND f.flow_id = hc.flow_id)"
            ):
                if tx.changed(
                    "UPDATE hunt_clients SET queue = 'pending', flow_id = NULL, updated = ?"
                    " WHERE hunt_id = ? AND client_id = ? AND queue = 'running'",
                    (now, row["hunt_id"], row["client_id"]),
                ):
                    result.moves.append(
                        QueueMove(row["hunt_id"], row["client_id"], "running", "pending"))
            result.ended = end_flows(
                tx,
                "kind IN ('collection', 'hunt') AND stage <> 'check' AND hunt_id IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM"
                " hunt_clients hc WHERE hc.hunt_id = flows.hunt_id AND hc.client_id ="
                " flows.client_id AND hc.flow_id = flows.flow_id AND hc.queue <> 'running')",
                (), Ending("cancelled", "its client had already left the hunt's running queue"),
                now,
            )
            for row in tx.all(
                "SELECT f.* FROM hunt_clients hc JOIN flows f ON f.client_id = hc.client_id"
                " AND f.flow_id = hc.condition_flow_id WHERE hc.queue = ?"
                " AND f.state NOT IN ('queued', 'running')",
                (CHECKING,),
            ):
                if row["kind"] == "condition" and row["state"] == "finished":
                    result.to_judge.append(FlowRecord.from_row(row))
                else:
                    result.moves += move_after_end(tx, row, now)
            # Held hunt flows whose condition rows came but were never judged.
            for row in tx.all(
                "SELECT f.*, hc.condition_rows FROM hunt_clients hc JOIN flows f"
                " ON f.client_id = hc.client_id AND f.flow_id = hc.condition_flow_id"
                " WHERE hc.queue = ? AND f.kind = 'hunt' AND f.hold = 1 AND f.stage = 'check'"
                " AND f.state IN ('queued', 'running') AND hc.condition_rows IS NOT NULL",
                (CHECKING,),
            ):
                record = FlowRecord.from_row(row)
                record.kept_rows = unpack_rows(row["condition_rows"])
                result.to_judge.append(record)
            announce_moves(tx, result.moves)
            return result

        return await self.store.write(op)


def _held_flow_judged(tx: Transaction, judged: Judged, flow: Row, now: float,
                      outcome: JudgedOutcome) -> None:
    """A held hunt flow, judged: on to its collection while its hunt runs with no rate and no
    client limit (both read here: an operator may have set one since the flow was sent), or
    ended here; a match then waits in pending to be recruited at the hunt's pace."""
    client_id, flow_id = judged.client_id, judged.condition_flow_id
    unpaced = tx.one("SELECT 1 FROM hunts WHERE hunt_id = ? AND state = 'running'"
                     " AND rate = 0 AND client_limit = 0", (judged.hunt_id,)) is not None
    if judged.queue == "pending" and unpaced:
        tx.execute(
            "UPDATE hunt_clients SET queue = 'running', stage = 'collection', flow_id = ?,"
            " updated = ? WHERE hunt_id = ? AND client_id = ? AND queue = 'pending'",
            (flow_id, now, judged.hunt_id, client_id),
        )
        tx.execute("UPDATE flows SET stage = 'collect' WHERE client_id = ? AND flow_id = ?",
                   (client_id, flow_id))
        outcome.moves.append(QueueMove(judged.hunt_id, client_id, CHECKING, "running"))
        outcome.go.append(GoAhead(client_id, flow_id, flow["last_seq"], True, flow["query"]))
        return
    outcome.moves.append(QueueMove(judged.hunt_id, client_id, CHECKING, judged.queue))
    if judged.queue == "pending" and _running(tx, judged.hunt_id):
        ending = Ending("cancelled", "matched: the collection waits for the hunt's rate or"
                        " limit")
    elif judged.queue == "pending":
        ending = Ending("cancelled", "the hunt stopped before the collection could start")
    elif judged.queue == "errors":
        ending = Ending("error", judged.error)
    else:
        ending = Ending("finished")
    outcome.ended += end_flows(tx, "client_id = ? AND flow_id = ?", (client_id, flow_id),
                               ending, now)
    outcome.go.append(GoAhead(client_id, flow_id, flow["last_seq"], False))


def _store_budget(tx: Transaction, hunt_id: str, budget: TokenBucket) -> None:
    tokens, refilled = budget.state
    tx.execute("UPDATE hunts SET rate_tokens = ?, rate_refilled = ? WHERE hunt_id = ?",
               (tokens, refilled, hunt_id))


def _running(tx: Transaction, hunt_id: str) -> bool:
    return tx.one("SELECT 1 FROM hunts WHERE hunt_id = ? AND state = 'running'",
                  (hunt_id,)) is not None


def _has_flows_in_flight(tx: Transaction, hunt_id: str) -> bool:
    return tx.one(
        "SELECT 1 FROM flows WHERE hunt_id = ? AND state IN ('queued', 'running') LIMIT 1",
        (hunt_id,),
    ) is not None


def _audit(tx: Transaction, audit: AuditEntry | None) -> None:
    """Record the operator's action in the transaction that performs it."""
    if audit is not None:
        append_audit(tx, audit)


def _audited(tx: Transaction, audit: AuditEntry | None, row: Row | None) -> Row | None:
    """``row``, the guarded change's result; the action is recorded only when it happened."""
    if row is not None:
        _audit(tx, audit)
    return row
