"""Flow statements: storing flows, applying what agents send, and ending flows, each guarded.

A flow leaves ``queued``/``running`` only by a statement that says ``WHERE state IN ('queued',
'running')``, so whatever ends it first (its status, a limit, a cancel, its deadline, a stop) is
the only end it gets: data in flight never writes a flow back to running. Counters move with
``rows = rows + ?``. A collection of a hunt that ends moves its client out of the hunt's running
queue in the same transaction, so a flow's end and its client's place never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from velotui.server.data.audit import AuditEntry, append_audit
from velotui.server.data.records import (
    ACTIVE_STATES,
    CHECKING,
    FlowChange,
    FlowRecord,
    QueueMove,
)
from velotui.server.data.store import Pool, Row, Store, Transaction
from velotui.server.data.topics import announce_moves, client_topic, counts_topic

ACTIVE = "('queued', 'running')"
# A page of stored row batches: a batch can be megabytes, so a few at a time.
BATCHES_PER_PAGE = 4


def pack_rows(rows: list[Any]) -> bytes:
    return msgpack.packb(rows, use_bin_type=True)


def unpack_rows(data: bytes) -> list[dict[str, Any]]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass
class Ingested:
    """What applying one agent message did. ``verdict`` is ``applied`` (``change`` says how),
    ``duplicate`` (already applied: acknowledge again), ``inactive`` (the flow has ended:
    acknowledge and drop), ``unknown`` (never scheduled on this client) or ``gap`` (a sequence
    number skipped; ``last_seq`` is the last one applied), ``bad_upload`` (a chunk at the
    wrong offset, or for a finished upload; ``detail`` says which), or ``misplaced`` (a
    message out of place in a hunt flow: its query's data before it may run, condition rows
    twice; ``detail`` says which)."""

    verdict: str
    change: FlowChange | None = None
    last_seq: int = 0
    detail: str = ""
    # Rows stored by this message (for condition checks, whose rows are judged from memory).
    stored_rows: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Ending:
    """How a flow ends: its final state and error."""

    state: str
    error: str | None = None


@dataclass(frozen=True)
class UploadChunk:
    upload_id: int
    name: str
    offset: int
    size: int
    eof: bool
    path: str
    sha256: str | None


@dataclass(frozen=True)
class UploadProgress:
    size: int
    complete: bool


_INSERT = (
    "INSERT INTO flows (client_id, flow_id, hunt_id, kind, query, env, condition, hold, stage,"
    " timeout, max_rows, max_upload_bytes, max_logs, max_log_bytes, max_uploads, state, created,"
    " started, artifacts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def insert_flows(tx: Transaction, records: Sequence[FlowRecord]) -> None:
    """Store new flows inside a caller's transaction (a flow and what it is for commit as
    one); whoever holds each client's connection hands it over."""
    for client_id in {r.client_id for r in records}:
        tx.announce(client_topic(client_id))
    tx.executemany(_INSERT, [
        (r.client_id, r.flow_id, r.hunt_id, r.kind, r.query, json.dumps(r.env), r.condition,
         int(r.hold), r.stage, r.timeout, r.max_rows, r.max_upload_bytes, r.max_logs,
         r.max_log_bytes, r.max_uploads, r.state, r.created, r.started, r.artifacts)
        for r in records
    ])


def collection_outcome(state: str, rows: int) -> str:
    """The queue a hunt's client goes to when its collection ends this way."""
    if state == "finished":
        return "results" if rows > 0 else "completed"
    return "errors"


def move_after_end(tx: Transaction, flow: Row, now: float) -> list[QueueMove]:
    """See ``_move_after_end``; the hunt's counts are announced when a client moved."""
    moves = _move_after_end(tx, flow, now)
    announce_moves(tx, moves)
    return moves


def _move_after_end(tx: Transaction, flow: Row, now: float) -> list[QueueMove]:
    """The hunt queue move that goes with ``flow`` ending (a row of ``flows`` after the change):
    a collection's client leaves running for its outcome; a condition check that did not
    finish puts its client in errors (a finished one waits for the server-side judgement). A
    hunt flow ended while it was still being checked leaves its client not matched (finished:
    its condition returned no row) or in errors; one that was collecting, as a collection."""
    hunt_id = flow["hunt_id"]
    if hunt_id is None:
        return []
    client_id, flow_id, state = flow["client_id"], flow["flow_id"], flow["state"]
    if flow["kind"] == "hunt" and flow["stage"] == "check":
        queue = "not_matched" if state == "finished" else "errors"
        changed = tx.changed(
            "UPDATE hunt_clients SET queue = ?, stage = 'condition', error = ?, updated = ?"
            " WHERE hunt_id = ? AND client_id = ? AND queue = ? AND condition_flow_id = ?",
            (queue, None if queue == "not_matched" else (flow["error"] or state), now,
             hunt_id, client_id, CHECKING, flow_id),
        )
        return [QueueMove(hunt_id, client_id, CHECKING, queue)] if changed else []
    if flow["kind"] == "condition":
        if state == "finished":
            return []
        changed = tx.changed(
            "UPDATE hunt_clients SET queue = 'errors', stage = 'condition', error = ?,"
            " updated = ? WHERE hunt_id = ? AND client_id = ? AND queue = ?"
            " AND condition_flow_id = ?",
            (flow["error"] or state, now, hunt_id, client_id, CHECKING, flow_id),
        )
        return [QueueMove(hunt_id, client_id, CHECKING, "errors")] if changed else []
    queue = collection_outcome(state, flow["rows"])
    error = None if queue != "errors" else (flow["error"] or state)
    changed = tx.changed(
        "UPDATE hunt_clients SET queue = ?, error = ?, stage = 'collection', updated = ?"
        " WHERE hunt_id = ? AND client_id = ? AND queue = 'running' AND flow_id = ?",
        (queue, error, now, hunt_id, client_id, flow_id),
    )
    return [QueueMove(hunt_id, client_id, "running", queue)] if changed else []


def end_flows(tx: Transaction, where: str, params: Sequence[Any], ending: Ending, now: float
              ) -> list[FlowChange]:
    """End every active flow matching ``where`` (a condition on ``flows``) in ``ending``, with
    the queue moves that go with each. The guard is in the statement."""
    ended = tx.all(
        "UPDATE flows SET state = ?, error = ?, finished = ?, started = COALESCE(started, ?)"
        f" WHERE ({where}) AND state IN {ACTIVE} RETURNING *",
        (ending.state, ending.error if ending.state != "finished" else None, now, now, *params),
    )
    for client_id in {row["client_id"] for row in ended}:
        tx.announce(client_topic(client_id))  # its frontend tells the agent
    return [FlowChange(FlowRecord.from_row(row), ended=True, moves=move_after_end(tx, row, now))
            for row in ended]


class FlowTable:
    """Every statement about flows and what they produced."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # Scheduling and delivery --------------------------------------------------------------------

    async def insert(self, records: Sequence[FlowRecord], audit: AuditEntry | None = None
                     ) -> None:
        """Store new flows (a collection not part of a hunt), with the operator's record."""

        def op(tx: Transaction) -> None:
            insert_flows(tx, records)
            if audit is not None:
                append_audit(tx, audit)

        await self.store.write(op)

    async def mark_running(self, client_id: str, flow_id: str, now: float) -> FlowRecord | None:
        """The flow as it is handed to its agent: ``running`` (started now if it was queued);
        None when it has ended meanwhile and must not be sent."""

        def op(tx: Transaction) -> Row | None:
            return tx.one(
                "UPDATE flows SET state = 'running', started = COALESCE(started, ?)"
                f" WHERE client_id = ? AND flow_id = ? AND state IN {ACTIVE} RETURNING *",
                (now, client_id, flow_id),
            )

        row = await self.store.write(op)
        return FlowRecord.from_row(row) if row is not None else None

    async def end(self, keys: Sequence[tuple[str, str]], ending: Ending, now: float,
                  audit: AuditEntry | None = None) -> list[FlowChange]:
        """End these flows (those still active) in one transaction; what ended. ``audit``
        (an operator's cancel) is recorded only when something ended."""

        def op(tx: Transaction) -> list[FlowChange]:
            changes: list[FlowChange] = []
            for client_id, flow_id in keys:
                changes += end_flows(tx, "client_id = ? AND flow_id = ?", (client_id, flow_id),
                                     ending, now)
            if changes and audit is not None:
                append_audit(tx, audit)
            return changes

        return await self.store.write(op)

    # What agents send ---------------------------------------------------------------------------

    async def ingest_rows(self, client_id: str, flow_id: str, seq: int,
                          rows: list[dict[str, Any]], ending: Ending | None, now: float,
                          checked: list[dict[str, Any]] | None = None) -> Ingested:
        """Apply a batch of rows (and the flow's end, for a Status): rows beyond the flow's
        ``max_rows`` are not stored and end it in error. ``checked``: a hunt flow's condition
        rows, come with its Status (see ``ingest_checked``)."""

        def apply(tx: Transaction, flow: Row) -> Ingested:
            if checked is not None:
                misplaced = _check_stage(flow, "checked", held=False)
                if misplaced is not None:
                    return misplaced
                moves = _store_checked(tx, flow, checked, now)
                flow = tx.one("SELECT * FROM flows WHERE client_id = ? AND flow_id = ?",
                              (client_id, flow_id))
            else:
                misplaced = _check_stage(flow, "status" if ending is not None else "rows",
                                         ending=ending)
                if misplaced is not None:
                    return misplaced
                moves = []
            kept = rows
            end = ending
            cancel_reason = None
            if flow["max_rows"] and flow["rows"] + len(rows) > flow["max_rows"]:
                kept = rows[: max(flow["max_rows"] - flow["rows"], 0)]
                cancel_reason = f"row limit of {flow['max_rows']} reached"
                end = Ending("error", cancel_reason)
            if kept:
                tx.execute(
                    "INSERT INTO flow_rows (client_id, flow_id, seq, row_count, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (client_id, flow_id, seq, len(kept), pack_rows(kept)),
                )
            result = _advance(tx, flow, seq, now, end, rows=len(kept))
            if result.change is not None:
                result.change.moves[:0] = moves
                if ending is None:
                    result.change.cancel_reason = cancel_reason
            result.stored_rows = kept
            return result

        return await self.store.write(lambda tx: _ingest(tx, client_id, flow_id, seq, apply))

    async def ingest_checked(self, client_id: str, flow_id: str, seq: int,
                             rows: list[dict[str, Any]], now: float) -> Ingested:
        """Apply a hunt flow's condition rows. Stored with the client's place in the hunt; a
        held flow then waits for the server-side judgement (``change.checked_rows``); any other
        goes on to its query when a row came back (its client moves to running), and ends, its
        client not matched, when none did."""

        def apply(tx: Transaction, flow: Row) -> Ingested:
            misplaced = _check_stage(flow, "checked", held=None)
            if misplaced is not None:
                return misplaced
            moves = _store_checked(tx, flow, rows, now)
            ending = None if flow["hold"] or rows else Ending("finished")
            result = _advance(tx, flow, seq, now, ending)
            if result.change is not None:
                result.change.moves[:0] = moves
                if flow["hold"]:
                    result.change.checked_rows = rows
            return result

        return await self.store.write(lambda tx: _ingest(tx, client_id, flow_id, seq, apply))

    async def ingest_log(self, client_id: str, flow_id: str, seq: int, time: float, level: str,
                         message: str, now: float) -> Ingested:
        """Apply one log line. Lines past the flow's log limits (count or bytes) are dropped
        and counted; the first one dropped leaves a line saying so."""

        def apply(tx: Transaction, flow: Row) -> Ingested:
            size = len(message.encode("utf-8", "surrogatepass"))
            over = (flow["max_logs"] and flow["logs"] >= flow["max_logs"]) or (
                flow["max_log_bytes"] and flow["log_bytes"] + size > flow["max_log_bytes"])
            if not over:
                tx.execute(
                    "INSERT INTO flow_logs (client_id, flow_id, seq, time, level, message)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (client_id, flow_id, seq, time, level, message),
                )
                return _advance(tx, flow, seq, now, logs=1, log_bytes=size)
            if flow["logs_dropped"] == 0:
                tx.execute(
                    "INSERT INTO flow_logs (client_id, flow_id, seq, time, level, message)"
                    " VALUES (?, ?, ?, ?, 'warning', ?)",
                    (client_id, flow_id, seq, now,
                     f"log limit reached ({flow['max_logs']} lines, {flow['max_log_bytes']}"
                     " bytes): the agent's further log lines are dropped"),
                )
            return _advance(tx, flow, seq, now, logs_dropped=1)

        return await self.store.write(lambda tx: _ingest(tx, client_id, flow_id, seq, apply))

    async def ingest_upload(self, client_id: str, flow_id: str, seq: int,
                            chunk: UploadChunk | None, now: float) -> Ingested:
        """Record an upload chunk already written to disk. A chunk past the flow's upload
        limits (bytes, or number of files) ends the flow in error instead. Without ``chunk``
        (nothing written: the flow is not in flight for the caller), only what the flow is."""

        def apply(tx: Transaction, flow: Row) -> Ingested:
            if chunk is None:
                return Ingested("inactive", last_seq=flow["last_seq"])
            misplaced = _check_stage(flow, "upload")
            if misplaced is not None:
                return misplaced
            upload = tx.one(
                "SELECT size, complete FROM uploads WHERE client_id = ? AND flow_id = ?"
                " AND upload_id = ?",
                (client_id, flow_id, chunk.upload_id),
            )
            new_file = upload is None
            stored = 0 if upload is None else upload["size"]
            if (upload is not None and upload["complete"]) or chunk.offset != stored:
                return Ingested("bad_upload", detail=(
                    f"upload {chunk.upload_id}: chunk at {chunk.offset}, expected {stored}"))
            limit = _upload_limit(flow, chunk.size, new_file)
            if limit is not None:
                result = _advance(tx, flow, seq, now, Ending("error", limit))
                if result.change is not None:
                    result.change.cancel_reason = limit
                return result
            tx.execute(
                "INSERT INTO uploads (client_id, flow_id, upload_id, name, path, size, sha256,"
                " complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, flow_id,"
                " upload_id) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,"
                " complete = excluded.complete",
                (client_id, flow_id, chunk.upload_id, chunk.name, chunk.path,
                 chunk.offset + chunk.size, chunk.sha256, 1 if chunk.eof else 0),
            )
            return _advance(tx, flow, seq, now, bytes=chunk.size, uploads=int(new_file))

        return await self.store.write(lambda tx: _ingest(tx, client_id, flow_id, seq, apply))

    # Reading ------------------------------------------------------------------------------------

    async def active(self) -> list[FlowRecord]:
        """Every flow not yet ended."""
        rows = await self.store.fetch_all(f"SELECT * FROM flows WHERE state IN {ACTIVE}",
                                          pool="agents")
        return [FlowRecord.from_row(row) for row in rows]

    async def active_of(self, client_ids: Sequence[str]) -> dict[str, list[FlowRecord]]:
        """The flows not yet ended of these clients, by client."""
        found: dict[str, list[FlowRecord]] = {}
        for start in range(0, len(client_ids), 500):
            chunk = list(client_ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            for row in await self.store.fetch_all(
                f"SELECT * FROM flows WHERE client_id IN ({marks}) AND state IN {ACTIVE}",
                tuple(chunk), pool="agents",
            ):
                found.setdefault(row["client_id"], []).append(FlowRecord.from_row(row))
        return found

    async def get(self, client_id: str, flow_id: str, *, pool: Pool = "operators"
                  ) -> FlowRecord | None:
        row = await self.store.fetch_one(
            "SELECT * FROM flows WHERE client_id = ? AND flow_id = ?", (client_id, flow_id),
            pool=pool,
        )
        return FlowRecord.from_row(row) if row is not None else None

    async def upload_progress(self, client_id: str, flow_id: str, upload_id: int
                              ) -> UploadProgress | None:
        """How much of an upload is stored, for the agents' path."""
        row = await self.store.fetch_one(
            "SELECT size, complete FROM uploads WHERE client_id = ? AND flow_id = ?"
            " AND upload_id = ?",
            (client_id, flow_id, upload_id), pool="agents",
        )
        return UploadProgress(row["size"], bool(row["complete"])) if row is not None else None

    async def row_batches(self, client_id: str, flow_id: str, after_seq: int = 0, *,
                          pool: Pool = "operators"):
        """(seq, rows) of every stored batch after ``after_seq``, in order, read a page at a
        time (no read connection is held while the caller works on a page)."""
        while True:
            page = await self.store.fetch_all(
                "SELECT seq, data FROM flow_rows WHERE client_id = ? AND flow_id = ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (client_id, flow_id, after_seq, BATCHES_PER_PAGE), pool=pool,
            )
            for row in page:
                after_seq = row["seq"]
                yield row["seq"], unpack_rows(row["data"])
            if len(page) < BATCHES_PER_PAGE:
                return

    async def logs(self, client_id: str, flow_id: str, after_seq: int = 0, limit: int = 10_000
                   ) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT seq, time, level, message FROM flow_logs WHERE client_id = ? AND flow_id = ?"
            " AND seq > ? ORDER BY seq LIMIT ?",
            (client_id, flow_id, after_seq, limit),
        )
        return [dict(row) for row in rows]

    async def uploads(self, client_id: str, flow_id: str) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT upload_id, name, path, size, sha256, complete FROM uploads"
            " WHERE client_id = ? AND flow_id = ? ORDER BY upload_id",
            (client_id, flow_id),
        )
        return [dict(row) for row in rows]


# Inside the writer ------------------------------------------------------------------------------


def _ingest(tx: Transaction, client_id: str, flow_id: str, seq: int, apply: Any) -> Ingested:
    """The checks every agent message passes before ``apply`` runs, against the stored flow."""
    flow = tx.one("SELECT * FROM flows WHERE client_id = ? AND flow_id = ?",
                  (client_id, flow_id))
    if flow is None:
        return Ingested("unknown")
    if seq <= flow["last_seq"]:
        return Ingested("duplicate", last_seq=flow["last_seq"])
    if flow["state"] not in ACTIVE_STATES:
        return Ingested("inactive", last_seq=flow["last_seq"])
    if seq != flow["last_seq"] + 1:
        return Ingested("gap", last_seq=flow["last_seq"])
    return apply(tx, flow)


def _check_stage(flow: Row, message: str, held: bool | None = None,
                 ending: Ending | None = None) -> Ingested | None:
    """Whether a hunt flow may take this message now: its condition rows only while it is
    checked (with its Status only when not held), anything of its query only once it may run
    (an error may end it at any time). None when it may; otherwise why not."""
    if flow["kind"] != "hunt":
        if message == "checked":
            return Ingested("misplaced", detail="condition rows for a flow that is no hunt flow")
        return None
    stage = flow["stage"]
    if message == "checked":
        if stage != "check":
            return Ingested("misplaced", detail="condition rows sent twice")
        if held is False and flow["hold"]:
            return Ingested("misplaced", detail="a held hunt flow ended with its condition rows")
        return None
    if stage == "collect":
        return None
    if message == "status" and ending is not None and ending.state != "finished":
        return None  # it failed before its query ran: the condition, the wait, a cancel
    return Ingested("misplaced", detail="data of a hunt flow's query before it may run")


def _store_checked(tx: Transaction, flow: Row, rows: list[dict[str, Any]], now: float
                   ) -> list[QueueMove]:
    """Keep the condition rows with the client's place in the hunt; a flow that need not wait
    for a judgement and got a row goes on to its query (its client to running)."""
    hunt_id, client_id, flow_id = flow["hunt_id"], flow["client_id"], flow["flow_id"]
    tx.execute(
        "UPDATE hunt_clients SET condition_rows = ?, updated = ? WHERE hunt_id = ?"
        " AND client_id = ? AND queue = ? AND condition_flow_id = ?",
        (pack_rows(rows), now, hunt_id, client_id, CHECKING, flow_id),
    )
    if flow["hold"] or not rows:
        return []
    return enter_collection(tx, hunt_id, client_id, flow_id, now)


def enter_collection(tx: Transaction, hunt_id: str, client_id: str, flow_id: str, now: float
                     ) -> list[QueueMove]:
    """A hunt flow that matched goes on to its query: the flow's stage, the client from checking
    to running. Guarded by both."""
    if not tx.changed(
        "UPDATE hunt_clients SET queue = 'running', stage = 'collection', flow_id = ?,"
        " updated = ? WHERE hunt_id = ? AND client_id = ? AND queue = ?"
        " AND condition_flow_id = ?",
        (flow_id, now, hunt_id, client_id, CHECKING, flow_id),
    ):
        return []
    tx.execute(
        "UPDATE flows SET stage = 'collect' WHERE client_id = ? AND flow_id = ?"
        f" AND state IN {ACTIVE} AND stage = 'check'",
        (client_id, flow_id),
    )
    tx.announce(counts_topic(hunt_id))
    return [QueueMove(hunt_id, client_id, CHECKING, "running")]


def _advance(tx: Transaction, flow: Row, seq: int, now: float, ending: Ending | None = None,
             **counters: int) -> Ingested:
    """Take sequence number ``seq``, add ``counters`` and (with ``ending``) end the flow: one
    guarded UPDATE, which also says the flow was still active at this sequence number."""
    assignments = ["last_seq = ?"]
    values: list[Any] = [seq]
    for name, amount in counters.items():
        assignments.append(f"{name} = {name} + ?")
        values.append(amount)
    if ending is not None:
        assignments += ["state = ?", "error = ?", "finished = ?", "started = COALESCE(started, ?)"]
        values += [ending.state, ending.error if ending.state != "finished" else None, now, now]
    row = tx.one(
        f"UPDATE flows SET {', '.join(assignments)} WHERE client_id = ? AND flow_id = ?"
        f" AND last_seq = ? AND state IN {ACTIVE} RETURNING *",
        (*values, flow["client_id"], flow["flow_id"], seq - 1),
    )
    if row is None:  # cannot happen inside the writer after _ingest's checks; never revive
        return Ingested("inactive", last_seq=flow["last_seq"])
    moves = []
    if ending is not None:
        moves = move_after_end(tx, row, now)
        tx.announce(client_topic(row["client_id"]))  # ended: other frontends forget it
    return Ingested("applied", FlowChange(FlowRecord.from_row(row), ended=ending is not None,
                                          moves=moves))


def _upload_limit(flow: Row, size: int, new_file: bool) -> str | None:
    if flow["max_upload_bytes"] and flow["bytes"] + size > flow["max_upload_bytes"]:
        return f"upload limit of {flow['max_upload_bytes']} bytes reached"
    if new_file and flow["max_uploads"] and flow["uploads"] >= flow["max_uploads"]:
        return f"upload limit of {flow['max_uploads']} files reached"
    return None
