"""The operator's view of the server: what the console, the command line and the operator API
call. Methods take and return plain values (JSON-safe), so the same calls work in process and
over the operator websocket. A method marked ``@streaming`` is an async generator of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from velotui import __version__
from velotui.server.conditions import estimate
from velotui.server.errors import ServiceError
from velotui.server.exports import FORMATS, ExportError, ExportProgress, export_hunt
from velotui.server.flows import unpack_rows
from velotui.server.hunts import (
    DEFAULT_CLIENT_CONDITION,
    DEFAULT_EXPIRY,
    DEFAULT_TIMEOUT,
    Hunt,
    parse_duration,
)
from velotui.vql import check
from velotui.vql.values import to_json_value

if TYPE_CHECKING:
    from velotui.server.server import Server

F = TypeVar("F", bound=Callable[..., Any])


def streaming(method: F) -> F:
    """Marks a service method that yields events rather than returning one result."""
    method.streaming = True  # type: ignore[attr-defined]
    return method


def check_query(query: str, what: str = "query") -> None:
    """Raise ServiceError naming line and column when ``query`` is not VQL."""
    if not query.strip():
        raise ServiceError(f"the {what} is empty")
    error = check(query)
    if error is not None:
        raise ServiceError(f"the {what} does not parse: {error}")


def _limits(timeout: Any, max_rows: Any, max_upload_bytes: Any) -> tuple[float, int, int]:
    try:
        values = float(timeout), int(max_rows), int(max_upload_bytes)
    except (TypeError, ValueError):
        raise ServiceError("timeout, max_rows and max_upload_bytes must be numbers") from None
    if min(values) < 0:
        raise ServiceError("timeout, max_rows and max_upload_bytes cannot be negative")
    return values


class Service:
    """Operator operations, performed as ``actor``."""

    def __init__(self, server: Server, actor: str) -> None:
        self.server = server
        self.actor = actor

    async def server_info(self) -> dict[str, Any]:
        directory = self.server.directory
        return {
            "version": __version__,
            "url": self.server.url,
            "agent_url": self.server.agent_url,
            "datastore": str(self.server.datastore.root),
            "clients": len(directory.all()),
            "online": len(directory.sessions),
            "time": time.time(),
        }

    # Clients ------------------------------------------------------------------------------------

    async def list_clients(self) -> list[dict[str, Any]]:
        """Every known client, most recently seen first."""
        directory = self.server.directory
        described = [to_json_value(directory.describe(r)) for r in directory.all()]
        return sorted(described, key=lambda c: (-c["last_seen"], c["client_id"]))

    def _known_client(self, client_id: str) -> None:
        if self.server.directory.get(client_id) is None:
            raise ServiceError(f"no client {client_id!r} (see: velotui clients)")

    # Collections --------------------------------------------------------------------------------

    async def schedule_collection(
        self, client_id: str, query: str, timeout: float = 600.0, max_rows: int = 0,
        max_upload_bytes: int = 0,
    ) -> dict[str, Any]:
        """Queue one collection on one client; returns the flow without waiting for it."""
        self._known_client(client_id)
        check_query(query)
        timeout, max_rows, max_upload_bytes = _limits(timeout, max_rows, max_upload_bytes)
        record = await self.server.flows.schedule(
            client_id, query, timeout=timeout, max_rows=max_rows,
            max_upload_bytes=max_upload_bytes,
        )
        await self.server.audit.record(self.actor, "collect", f"{client_id}/{record.flow_id}",
                                       query=query)
        return record.describe()

    @streaming
    async def collect(
        self, client_id: str, query: str, timeout: float = 600.0, max_rows: int = 0,
        max_upload_bytes: int = 0,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one collection and follow it: a ``scheduled`` event, ``rows`` and ``log`` events
        as they become durable, and a final ``status`` event."""
        flow = await self.schedule_collection(client_id, query, timeout, max_rows,
                                              max_upload_bytes)
        yield {"event": "scheduled", "client_id": client_id, "flow_id": flow["flow_id"],
               "online": self.server.directory.is_online(client_id)}
        async with contextlib.aclosing(self.follow(client_id, flow["flow_id"])) as events:
            async for event in events:
                yield event

    @streaming
    async def follow(self, client_id: str, flow_id: str) -> AsyncIterator[dict[str, Any]]:
        """The rows and logs of a flow as they arrive, then its final ``status`` event."""
        flows = self.server.flows
        rows_seq = log_seq = 0
        while True:
            changed = flows.watch(client_id, flow_id)
            async for seq, rows in flows.row_batches(client_id, flow_id, rows_seq):
                rows_seq = seq
                yield {"event": "rows", "rows": rows}
            for entry in await flows.logs(client_id, flow_id, log_seq):
                log_seq = entry["seq"]
                yield {"event": "log", **entry}
            record = await flows.get(client_id, flow_id)
            if record is None:
                raise ServiceError(f"no flow {flow_id} on {client_id}")
            if not record.active:
                # Anything stored between the reads above and the end is read once more.
                async for seq, rows in flows.row_batches(client_id, flow_id, rows_seq):
                    rows_seq = seq
                    yield {"event": "rows", "rows": rows}
                yield {"event": "status", **await self.flow(client_id, flow_id)}
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)

    async def flow(self, client_id: str, flow_id: str) -> dict[str, Any]:
        """A flow's state, counts, error and uploads."""
        record = await self.server.flows.get(client_id, flow_id)
        if record is None:
            raise ServiceError(f"no flow {flow_id} on {client_id}")
        described = record.describe()
        described["uploads"] = await self.server.flows.uploads(client_id, flow_id)
        return described

    @streaming
    async def flow_results(self, client_id: str, flow_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every stored row of a flow, in batches: ``rows`` events."""
        if await self.server.flows.get(client_id, flow_id) is None:
            raise ServiceError(f"no flow {flow_id} on {client_id}")
        async for _seq, rows in self.server.flows.row_batches(client_id, flow_id):
            yield {"event": "rows", "rows": rows}

    async def cancel_flow(self, client_id: str, flow_id: str) -> dict[str, Any]:
        record = await self.server.flows.cancel(client_id, flow_id)
        if record is None:
            raise ServiceError(f"flow {flow_id} on {client_id} is not running")
        await self.server.audit.record(self.actor, "cancel", f"{client_id}/{flow_id}")
        return record.describe()

    # Hunts --------------------------------------------------------------------------------------

    async def create_hunt(
        self,
        query: str,
        client_condition: str = DEFAULT_CLIENT_CONDITION,
        server_condition: str = "",
        rate: float = 0,
        limit: int = 0,
        expires: float | str = DEFAULT_EXPIRY,
        timeout: float = DEFAULT_TIMEOUT,
        max_rows: int = 0,
        max_upload_bytes: int = 0,
        description: str = "",
        start: bool = False,
    ) -> dict[str, Any]:
        """Create a hunt (paused unless ``start``); ``expires`` is seconds from now or a
        duration like ``7d``. Refuses VQL that does not parse, naming line and column."""
        check_query(query, "collection query")
        check_query(client_condition, "client-side condition")
        if server_condition.strip():
            check_query(server_condition, "server-side condition")
        try:
            lifetime = parse_duration(expires) if isinstance(expires, str) else float(expires)
            rate, limit = float(rate), int(limit)
        except (TypeError, ValueError) as error:
            raise ServiceError(str(error)) from None
        if lifetime <= 0 or rate < 0 or limit < 0:
            raise ServiceError("expiry must be positive; rate and limit cannot be negative")
        timeout, max_rows, max_upload_bytes = _limits(timeout, max_rows, max_upload_bytes)
        hunt = Hunt(
            hunt_id="", query=query, client_condition=client_condition,
            server_condition=server_condition, description=str(description), rate=rate,
            client_limit=limit, expires=time.time() + lifetime, timeout=timeout,
            max_rows=max_rows, max_upload_bytes=max_upload_bytes, state="paused", created=0.0,
            creator=self.actor,
        )
        hunt = await self.server.hunts.create(hunt)
        await self.server.audit.record(self.actor, "create", hunt.hunt_id,
                                       description=hunt.description, query=query)
        if start:
            return await self.start_hunt(hunt.hunt_id)
        return hunt.describe()

    async def list_hunts(self) -> list[dict[str, Any]]:
        """Every hunt, newest first."""
        hunts = sorted(self.server.hunts.hunts.values(), key=lambda h: h.created, reverse=True)
        return [h.describe() for h in hunts]

    async def get_hunt(self, hunt_id: str) -> dict[str, Any]:
        """One hunt: its spec, state and counts."""
        return self.server.hunts.get(hunt_id).describe()

    async def start_hunt(self, hunt_id: str) -> dict[str, Any]:
        hunt = await self.server.hunts.start(hunt_id)
        await self.server.audit.record(self.actor, "start", hunt_id)
        return hunt.describe()

    async def stop_hunt(self, hunt_id: str) -> dict[str, Any]:
        hunt = await self.server.hunts.stop(hunt_id, f"stopped by {self.actor}")
        await self.server.audit.record(self.actor, "stop", hunt_id)
        return hunt.describe()

    async def relaunch_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Re-run the clients of the hunt that ended in errors, and only those."""
        count = await self.server.hunts.relaunch(hunt_id)
        await self.server.audit.record(self.actor, "relaunch", hunt_id, clients=count)
        return {**self.server.hunts.get(hunt_id).describe(), "relaunched": count}

    @streaming
    async def watch_hunts(self) -> AsyncIterator[dict[str, Any]]:
        """Every hunt, then each hunt again whenever its state or counts change."""
        async with contextlib.aclosing(self.server.hunts.subscribe()) as events:
            async for event in events:
                yield event

    async def hunt_clients(self, hunt_id: str, queue: str | None = None, offset: int = 0,
                           limit: int = 1000) -> list[dict[str, Any]]:
        """The clients of a hunt with their queue and their collection's state and figures."""
        self.server.hunts.get(hunt_id)
        where, params = "hc.hunt_id = ?", [hunt_id]
        if queue:
            where += " AND hc.queue = ?"
            params.append(queue)
        rows = await self.server.store.fetch_all(
            "SELECT hc.client_id, hc.queue, hc.stage, hc.flow_id, hc.attempt, hc.error AS"
            " hunt_error, hc.checked, hc.updated, f.state, f.rows, f.bytes, f.error, f.started,"
            " f.finished FROM hunt_clients hc LEFT JOIN flows f ON f.client_id = hc.client_id"
            f" AND f.flow_id = hc.flow_id WHERE {where} ORDER BY hc.checked, hc.client_id"
            " LIMIT ? OFFSET ?",
            (*params, int(limit), int(offset)),
        )
        directory = self.server.directory
        described = []
        for row in rows:
            record = directory.get(row["client_id"])
            started, finished = row["started"], row["finished"]
            described.append({
                "client_id": row["client_id"],
                "hostname": record.hostname if record else "",
                "fqdn": record.fqdn if record else "",
                "queue": row["queue"],
                "stage": row["stage"],
                "flow_id": row["flow_id"],
                "attempt": row["attempt"],
                "state": row["state"],
                "rows": row["rows"] or 0,
                "bytes": row["bytes"] or 0,
                "duration": (finished - started) if started and finished else None,
                "error": row["hunt_error"] or row["error"],
                "checked": row["checked"],
                "online": directory.is_online(row["client_id"]),
            })
        return described

    @streaming
    async def hunt_results(self, hunt_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every client's rows, each with ``ClientId``, ``Fqdn`` and ``FlowId`` first."""
        self.server.hunts.get(hunt_id)
        clients = await self.server.store.fetch_all(
            "SELECT client_id, flow_id FROM hunt_clients WHERE hunt_id = ? AND flow_id IS NOT"
            " NULL ORDER BY checked, client_id",
            (hunt_id,),
        )
        for client in clients:
            record = self.server.directory.get(client["client_id"])
            fqdn = record.fqdn if record else ""
            extra = {"ClientId": client["client_id"], "Fqdn": fqdn, "FlowId": client["flow_id"]}
            async for _seq, rows in self.server.flows.row_batches(client["client_id"],
                                                                  client["flow_id"]):
                yield {"event": "rows", "rows": [{**extra, **row} for row in rows]}

    @streaming
    async def export_hunt(self, hunt_id: str, path: str, format: str = "json",
                          summary: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Write the hunt as one zip at ``path`` (an absolute path on the server's machine):
        ``progress`` events while it writes, then ``done`` with what was written."""
        self.server.hunts.get(hunt_id)
        destination = Path(path)
        if not destination.is_absolute():
            raise ServiceError(f"{path!r}: the export path must be absolute")
        if format not in FORMATS:
            raise ServiceError(f"format must be one of {', '.join(FORMATS)}")
        updates: asyncio.Queue[ExportProgress] = asyncio.Queue()
        job = asyncio.create_task(export_hunt(
            self.server.store, self.server.datastore.uploads_dir, hunt_id, destination,
            fmt=format, summary=summary, progress=updates.put_nowait,
        ))
        try:
            while not job.done() or not updates.empty():
                getter = asyncio.ensure_future(updates.get())
                await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield {"event": "progress", **dataclasses.asdict(getter.result())}
                else:
                    getter.cancel()
            try:
                result = job.result()
            except ExportError as error:
                raise ServiceError(str(error)) from None
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job
        await self.server.audit.record(self.actor, "export", hunt_id, path=str(result.path),
                                       format=format, summary=summary)
        yield {"event": "done", "path": str(result.path), "entries": result.entries,
               "rows": result.rows, "bytes": result.bytes, "clients": result.clients}

    async def hunt_results_page(self, hunt_id: str, offset: int = 0, limit: int = 200
                                ) -> dict[str, Any]:
        """One page of every client's rows (as ``hunt_results`` gives them) and the total, for
        paging through a big hunt without reading it all."""
        self.server.hunts.get(hunt_id)
        offset, limit = max(int(offset), 0), min(max(int(limit), 1), 5000)
        batches = await self.server.store.fetch_all(
            "SELECT r.client_id, r.flow_id, r.seq, r.row_count FROM hunt_clients hc"
            " JOIN flow_rows r ON r.client_id = hc.client_id AND r.flow_id = hc.flow_id"
            " WHERE hc.hunt_id = ? ORDER BY hc.checked, hc.client_id, r.seq",
            (hunt_id,),
        )
        total = sum(b["row_count"] for b in batches)
        rows: list[dict[str, Any]] = []
        position = 0
        for batch in batches:
            end = position + batch["row_count"]
            if end > offset and position < offset + limit:
                stored = await self.server.store.fetch_one(
                    "SELECT data FROM flow_rows WHERE client_id = ? AND flow_id = ? AND seq = ?",
                    (batch["client_id"], batch["flow_id"], batch["seq"]),
                )
                record = self.server.directory.get(batch["client_id"])
                extra = {"ClientId": batch["client_id"], "Fqdn": record.fqdn if record else "",
                         "FlowId": batch["flow_id"]}
                first = max(offset - position, 0)
                wanted = offset + limit - position
                for row in unpack_rows(stored["data"])[first:wanted]:
                    rows.append({**extra, **row})
            position = end
            if position >= offset + limit:
                break
        return {"rows": to_json_value(rows), "total": total, "offset": offset}

    async def hunt_log(self, hunt_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Log lines and errors from the hunt's agents, newest last."""
        self.server.hunts.get(hunt_id)
        rows = await self.server.store.fetch_all(
            "SELECT * FROM (SELECT l.client_id, l.flow_id, l.time, l.level, l.message"
            " FROM flow_logs l JOIN flows f ON f.client_id = l.client_id AND f.flow_id = l.flow_id"
            " WHERE f.hunt_id = ? UNION ALL SELECT client_id, flow_id, COALESCE(finished,"
            " created), 'error', error FROM flows WHERE hunt_id = ? AND error IS NOT NULL)"
            " ORDER BY time DESC LIMIT ?",
            (hunt_id, hunt_id, int(limit)),
        )
        return [dict(row) for row in reversed(rows)]

    async def estimate_hunt(self, server_condition: str = "",
                            client_condition: str = DEFAULT_CLIENT_CONDITION) -> dict[str, Any]:
        """How many known clients would match, judged by their last known facts: matched, total,
        undetermined (their conditions need more than those facts), errored (the server-side
        condition gave an error) and errors (the first few distinct reasons, one line each)."""
        check_query(client_condition, "client-side condition")
        if server_condition.strip():
            check_query(server_condition, "server-side condition")
        result = await estimate(self.server.directory.all(), client_condition, server_condition)
        return result.describe()

    # Clients, audit -----------------------------------------------------------------------------

    async def label_client(self, client_id: str, add: list[str] | None = None,
                           remove: list[str] | None = None) -> dict[str, Any]:
        """Add and remove operator-assigned labels; returns the client."""
        record = self.server.directory.get(client_id)
        if record is None:
            raise ServiceError(f"no client {client_id!r} (see: velotui clients)")
        labels = [label for label in record.operator_labels if label not in (remove or [])]
        for label in add or []:
            if not label or len(label) > 128:
                raise ServiceError(f"bad label {label!r}")
            if label not in labels:
                labels.append(label)
        record = await self.server.directory.set_operator_labels(client_id, labels)
        await self.server.audit.record(self.actor, "label", client_id, add=add or [],
                                       remove=remove or [])
        return to_json_value(self.server.directory.describe(record))

    async def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Operator actions, oldest first."""
        return await self.server.audit.entries(limit)
