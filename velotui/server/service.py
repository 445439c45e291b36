"""The operator's view of the server: what the console, the command line and the operator API
call. Methods take and return plain values (JSON-safe), so the same calls work in process and
over the operator websocket. A method marked ``@streaming`` is an async generator of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from velotui import __version__
from velotui.vql import check
from velotui.vql.values import to_json_value

if TYPE_CHECKING:
    from velotui.server.server import Server

F = TypeVar("F", bound=Callable[..., Any])


class ServiceError(Exception):
    """A request the server refuses; the message is one line for the operator."""


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
        return record.describe()
