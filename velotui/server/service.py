"""The operator's view of the server: what the console, the command line and the operator API
call. Methods take and return plain values (JSON-safe), so the same calls work in process and
over the operator websocket. A method marked ``@streaming`` is an async generator of events;
an event may carry bytes as ``data`` (an export's chunks), which the operator API sends as a
binary frame rather than as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from velotui import __version__
from velotui.artifacts import (
    ArtifactError,
    ArtifactRequest,
    Collection,
    CompileError,
    Library,
    compile_collection,
)
from velotui.artifacts.parameters import as_text
from velotui.server import arguments
from velotui.server.artifact_library import load_definitions, with_definitions
from velotui.server.conditions import estimate
from velotui.server.data import CHECKING, QUEUES, AuditEntry, HuntRecord
from velotui.server.data.records import DEFAULT_LIMITS, FlowLimits
from velotui.server.data.results import HuntMember
from velotui.server.errors import ServiceError
from velotui.server.exports import (
    FORMATS,
    ExportChunk,
    ExportError,
    ExportProgress,
    export_destination,
    stream_hunt,
)
from velotui.server.hunt_explain import explain_client_in_hunt
from velotui.server.hunt_rows import RowFilter, filtered_page, hunt_rows, tally
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION, DEFAULT_EXPIRY
from velotui.server.operators import Operator
from velotui.server.result_queries import QueryRefused, StoredData, UnknownHunt, run_query
from velotui.server.roles import requires
from velotui.vql import check
from velotui.vql.values import to_json_value

if TYPE_CHECKING:
    from velotui.server.server import Server

F = TypeVar("F", bound=Callable[..., Any])


def _check_start_at(start_at: float, now: float, expires: float) -> None:
    if start_at <= now:
        raise ServiceError("start at: that time is already past (use --start to start now)")
    if start_at >= expires:
        raise ServiceError("start at: that is after the hunt expires (raise --expires)")


def _error_limit_text(hunt: HuntRecord) -> int | str:
    """An error limit as an operator writes it: 5, or "10%"."""
    if hunt.max_errors_percent:
        return f"{hunt.max_errors_percent:g}%"
    return hunt.max_errors


def _settings(hunt: HuntRecord) -> dict[str, Any]:
    """What ``set_hunt`` changes, as its ``changed`` reports them."""
    return {"rate": hunt.rate, "limit": hunt.client_limit, "expires": hunt.expires,
            "max_errors": _error_limit_text(hunt), "description": hunt.description}

CLIENTS_PER_SCAN = 1000  # a filtered page of a hunt's clients reads them this many at a time
MAX_QUERY_ROWS = 100_000  # the most rows query_hunt hands back at once


def streaming(method: F) -> F:
    """Marks a service method that yields events rather than returning one result."""
    method.streaming = True  # type: ignore[attr-defined]
    return method


def check_query(query: Any, what: str = "query") -> str:
    """The query, if it is VQL; raises ServiceError naming line and column otherwise."""
    query = arguments.text(query, f"the {what}", maximum=arguments.MAX_QUERY, empty=False)
    error = check(query)
    if error is not None:
        raise ServiceError(f"the {what} does not parse: {error}")
    return query


def collection_limits(timeout: Any, max_rows: Any, max_upload_bytes: Any, max_logs: Any,
                      max_log_bytes: Any, max_uploads: Any) -> FlowLimits:
    """The limits an operator gave a collection (None: the default; 0: no limit)."""
    default = DEFAULT_LIMITS

    def pick(value: Any, name: str, fallback: int) -> int:
        return fallback if value is None else arguments.whole(value, name)

    return FlowLimits(
        timeout=default.timeout if timeout is None else arguments.number(
            timeout, "timeout", maximum=30 * 86400.0),
        max_rows=pick(max_rows, "max_rows", default.max_rows),
        max_upload_bytes=pick(max_upload_bytes, "max_upload_bytes", default.max_upload_bytes),
        max_logs=pick(max_logs, "max_logs", default.max_logs),
        max_log_bytes=pick(max_log_bytes, "max_log_bytes", default.max_log_bytes),
        max_uploads=pick(max_uploads, "max_uploads", default.max_uploads),
    )


class Service:
    """Operator operations, performed as ``operator`` (``actor`` is its name, which the audit
    log records). Every argument is checked here: a request is done, or refused with one line
    saying why. Every public method states the least role that may call it (``@requires``);
    the operator API checks it before each call."""

    def __init__(self, server: Server, operator: Operator) -> None:
        self.server = server
        self.operator = operator
        self.actor = operator.name

    @requires("reader")
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
            "operator": {"name": self.operator.name, "role": self.operator.role},
        }

    # Clients ------------------------------------------------------------------------------------

    @requires("reader")
    async def list_clients(self) -> list[dict[str, Any]]:
        """Every known client, most recently seen first."""
        directory = self.server.directory
        described = [to_json_value(directory.describe(r)) for r in directory.all()]
        return sorted(described, key=lambda c: (-c["last_seen"], c["client_id"]))

    def _known_client(self, client_id: Any) -> str:
        client_id = arguments.client_id(client_id)
        if self.server.directory.get(client_id) is None:
            raise ServiceError(f"no client {client_id!r} (see: velotui clients)")
        return client_id

    # Collections --------------------------------------------------------------------------------

    @requires("hunter")
    async def schedule_collection(
        self, client_id: str, query: str = "", timeout: float | None = None,
        max_rows: int | None = None, max_upload_bytes: int | None = None,
        max_logs: int | None = None, max_log_bytes: int | None = None,
        max_uploads: int | None = None, artifacts: list[dict[str, Any]] | None = None,
        definitions: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Queue one collection on one client; returns the flow without waiting for it.
        Limits left out take the defaults (finite); 0 means no limit. The collection is VQL
        (``query``) or ``artifacts`` (``[{"name", "parameters"}]``, compiled as a hunt's are;
        the flow keeps them, so it is shown by the artifacts it runs)."""
        client_id = self._known_client(client_id)
        query, chosen_artifacts = self._collection(query, artifacts, definitions)
        limits = collection_limits(timeout, max_rows, max_upload_bytes, max_logs,
                                   max_log_bytes, max_uploads)
        details: dict[str, Any] = {"query": query}
        if chosen_artifacts:
            details["artifacts"] = json.loads(chosen_artifacts)
        record = await self.server.flows.schedule(
            client_id, query, audit=self._entry("collect", client_id, **details),
            artifacts=chosen_artifacts, **asdict(limits))
        return record.describe()

    @requires("hunter")
    @streaming
    async def collect(
        self, client_id: str, query: str = "", timeout: float | None = None,
        max_rows: int | None = None, max_upload_bytes: int | None = None,
        max_logs: int | None = None, max_log_bytes: int | None = None,
        max_uploads: int | None = None, artifacts: list[dict[str, Any]] | None = None,
        definitions: list[dict[str, str]] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one collection and follow it: a ``scheduled`` event, ``rows`` and ``log`` events
        as they become durable, and a final ``status`` event."""
        flow = await self.schedule_collection(client_id, query, timeout, max_rows,
                                              max_upload_bytes, max_logs, max_log_bytes,
                                              max_uploads, artifacts, definitions)
        yield {"event": "scheduled", "client_id": client_id, "flow_id": flow["flow_id"],
               "online": self.server.directory.is_online(client_id)}
        async with contextlib.aclosing(self.follow(client_id, flow["flow_id"])) as events:
            async for event in events:
                yield event

    @requires("reader")
    @streaming
    async def follow(self, client_id: str, flow_id: str) -> AsyncIterator[dict[str, Any]]:
        """The rows and logs of a flow as they arrive, then its final ``status`` event."""
        client_id, flow_id = arguments.client_id(client_id), arguments.flow_id(flow_id)
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
                for entry in await flows.logs(client_id, flow_id, log_seq):
                    log_seq = entry["seq"]
                    yield {"event": "log", **entry}
                yield {"event": "status", **await self.flow(client_id, flow_id)}
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)

    @requires("reader")
    async def flow(self, client_id: str, flow_id: str) -> dict[str, Any]:
        """A flow's state, counts, error and uploads."""
        client_id, flow_id = arguments.client_id(client_id), arguments.flow_id(flow_id)
        record = await self.server.flows.get(client_id, flow_id)
        if record is None:
            raise ServiceError(f"no flow {flow_id} on {client_id}")
        described = record.describe()
        described["uploads"] = await self.server.flows.uploads(client_id, flow_id)
        return described

    @requires("reader")
    @streaming
    async def flow_results(self, client_id: str, flow_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every stored row of a flow, in batches: ``rows`` events."""
        client_id, flow_id = arguments.client_id(client_id), arguments.flow_id(flow_id)
        if await self.server.flows.get(client_id, flow_id) is None:
            raise ServiceError(f"no flow {flow_id} on {client_id}")
        async for _seq, rows in self.server.flows.row_batches(client_id, flow_id):
            yield {"event": "rows", "rows": rows}

    @requires("hunter")
    async def cancel_flow(self, client_id: str, flow_id: str) -> dict[str, Any]:
        """Cancel a flow in flight; its agent is told to stop."""
        client_id, flow_id = arguments.client_id(client_id), arguments.flow_id(flow_id)
        record = await self.server.flows.cancel(
            client_id, flow_id, audit=self._entry("cancel", f"{client_id}/{flow_id}"))
        if record is None:
            raise ServiceError(f"flow {flow_id} on {client_id} is not running")
        return record.describe()

    # Artifacts ----------------------------------------------------------------------------------

    def _library_with(self, definitions: list[dict[str, str]] | None) -> Library:
        library = self.server.artifacts.library()
        if not definitions:
            return library
        try:
            return with_definitions(library, load_definitions(_definition_items(definitions)))
        except (ArtifactError, CompileError) as error:
            raise ServiceError(str(error)) from None

    def _collection(self, query: Any, artifacts: Any, definitions: list[dict[str, str]] | None,
                    what: str = "query") -> tuple[str, str]:
        """The VQL a collection runs, given as ``query`` or as ``artifacts`` (compiled here),
        and the artifacts it was compiled from as JSON text ('' for VQL)."""
        if not artifacts:
            return check_query(query, what), ""
        if str(query or "").strip():
            raise ServiceError("give the collection as a query or as artifacts, not both")
        collection = self._compile_artifacts(artifacts, definitions)
        return (check_query(collection.query, what),
                json.dumps(list(collection.artifacts)))

    def _compile_artifacts(self, artifacts: Any,
                           definitions: list[dict[str, str]] | None) -> Collection:
        if not isinstance(artifacts, list) or not all(isinstance(a, dict) for a in artifacts):
            raise ServiceError("artifacts must be a list of {name, parameters}")
        requests = []
        for item in artifacts:
            name = arguments.text(item.get("name"), "artifact name", maximum=256, empty=False)
            parameters = item.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise ServiceError(f"{name}: parameters must be a mapping of name to value")
            requests.append(ArtifactRequest(name, {
                arguments.text(k, "parameter name", maximum=256, empty=False):
                arguments.text(as_text(v), f"parameter {k}", maximum=arguments.MAX_QUERY)
                for k, v in parameters.items()}))
        try:
            return compile_collection(self._library_with(definitions), requests)
        except CompileError as error:
            raise ServiceError(str(error)) from None

    @requires("reader")
    async def list_artifacts(self, pattern: str = "") -> list[dict[str, Any]]:
        """The library's artifacts (name or description matching ``pattern``, a regular
        expression), each as a summary with its parameters."""
        pattern = arguments.text(pattern, "pattern", maximum=1024)
        try:
            found = self.server.artifacts.library().search(pattern)
        except re.error as error:
            raise ServiceError(f"the pattern is not a regular expression: {error}") from None
        return [a.summary() for a in found]

    @requires("reader")
    async def get_artifact(self, name: str) -> dict[str, Any]:
        """One artifact: its summary and the YAML that defines it."""
        name = arguments.text(name, "artifact name", maximum=256, empty=False)
        try:
            artifact = self.server.artifacts.library().get(name)
        except LookupError as error:
            raise ServiceError(str(error.args[0])) from None
        return {**artifact.summary(), "definition": artifact.text}

    @requires("reader")
    async def compile_artifacts(self, artifacts: list[dict[str, Any]],
                                definitions: list[dict[str, str]] | None = None
                                ) -> dict[str, Any]:
        """The VQL a collection of ``artifacts`` would send, without creating anything."""
        collection = self._compile_artifacts(artifacts, definitions)
        return {"query": collection.query, "artifacts": list(collection.artifacts),
                "sources": list(collection.sources)}

    @requires("hunter")
    async def import_artifacts(self, definitions: list[dict[str, str]]) -> dict[str, Any]:
        """Add definitions (``[{"origin", "text"}]``) to the server's library, all or none:
        each must load and find every artifact it calls. Audited."""
        if not isinstance(definitions, list) or not definitions:
            raise ServiceError("nothing to import")
        try:
            loaded = load_definitions(_definition_items(definitions))
            names = self.server.artifacts.import_definitions(loaded)
        except (ArtifactError, CompileError) as error:
            raise ServiceError(str(error)) from None
        # The definitions are files, not rows: recorded in a transaction of its own
        await self.server.audit.record(self._entry("import_artifacts", ",".join(names),
                                                   artifacts=names))
        return {"imported": names}

    # Hunts --------------------------------------------------------------------------------------

    @requires("hunter")
    async def create_hunt(
        self,
        query: str = "",
        client_condition: str = DEFAULT_CLIENT_CONDITION,
        server_condition: str = "",
        rate: float = 0,
        limit: int = 0,
        expires: float | str = DEFAULT_EXPIRY,
        timeout: float | None = None,
        max_rows: int | None = None,
        max_upload_bytes: int | None = None,
        max_logs: int | None = None,
        max_log_bytes: int | None = None,
        max_uploads: int | None = None,
        description: str = "",
        start: bool = False,
        artifacts: list[dict[str, Any]] | None = None,
        definitions: list[dict[str, str]] | None = None,
        start_at: float | str | None = None,
        max_errors: int | str = 0,
    ) -> dict[str, Any]:
        """Create a hunt (paused unless ``start``, scheduled with ``start_at``: epoch seconds,
        ISO 8601 or ``+2h``); ``expires`` is seconds from now or a duration like ``7d``;
        ``max_errors`` pauses it at that many clients in errors (``5``) or that share of the
        clients recruited (``"10%"``); limits left out take the defaults (finite), 0 means no
        limit.
        The collection is VQL (``query``) or ``artifacts`` (``[{"name", "parameters"}]``,
        compiled with the server's library and any ``definitions`` sent along, as
        ``[{"origin", "text"}]``). Refuses VQL that does not parse, naming line and column."""
        query, chosen_artifacts = self._collection(query, artifacts, definitions,
                                                   "collection query")
        client_condition = check_query(client_condition, "client-side condition")
        server_condition = arguments.text(server_condition, "the server-side condition",
                                          maximum=arguments.MAX_QUERY)
        if server_condition.strip():
            check_query(server_condition, "server-side condition")
        rate = arguments.number(rate, "rate", maximum=1e9)
        limit = arguments.whole(limit, "limit")
        lifetime = arguments.duration(expires, "expires")
        limits = collection_limits(timeout, max_rows, max_upload_bytes, max_logs,
                                   max_log_bytes, max_uploads)
        description = arguments.text(description, "description", maximum=4096)
        start = arguments.flag(start, "start")
        if start and self.server.settings.approvals_required:
            raise ServiceError("approvals are required: create the hunt without starting it,"
                               " then ask for its approval (velotui hunt request-approval ID)")
        error_count, error_share = arguments.error_limit(max_errors)
        now = time.time()
        expiry = now + lifetime
        scheduled = None
        if start_at is not None and start_at != "":
            if start:
                raise ServiceError("start now or at a time (start_at), not both")
            scheduled = arguments.moment(start_at, "start at", now)
            _check_start_at(scheduled, now, expiry)
        hunt = HuntRecord(
            hunt_id="", query=query, client_condition=client_condition,
            server_condition=server_condition, description=description, rate=rate,
            client_limit=limit, expires=expiry, state="paused", created=0.0,
            creator=self.actor, artifacts=chosen_artifacts, start_at=scheduled,
            max_errors=error_count, max_errors_percent=error_share, **asdict(limits),
        )
        details: dict[str, Any] = {"description": hunt.description, "query": query}
        if chosen_artifacts:
            details["artifacts"] = json.loads(chosen_artifacts)
        if scheduled is not None:
            details["start_at"] = scheduled
        if error_count or error_share:
            details["max_errors"] = _error_limit_text(hunt)
        hunt = await self.server.hunts.create(hunt, self._hunt_entry("create", hunt, **details))
        if start:
            return await self.start_hunt(hunt.hunt_id)
        return hunt.describe()

    @requires("reader")
    async def list_hunts(self, all: bool = False) -> list[dict[str, Any]]:
        """Every hunt, newest first; archived ones only with ``all``."""
        everything = arguments.flag(all, "all")
        await self.server.hunts.exact()  # the same whichever frontend is asked
        hunts = sorted(self.server.hunts.hunts.values(), key=lambda h: h.created, reverse=True)
        return [h.describe() for h in hunts if everything or h.archived is None]

    def _hunt(self, hunt_id: Any) -> HuntRecord:
        return self.server.hunts.get(arguments.hunt_id(hunt_id))

    @requires("reader")
    async def get_hunt(self, hunt_id: str) -> dict[str, Any]:
        """One hunt: its spec, state and counts, and why its clients in errors are there
        (``errors``: the most frequent reasons, each with its number of clients)."""
        await self.server.hunts.exact([arguments.hunt_id(hunt_id)])
        hunt = self._hunt(hunt_id)
        reasons = await self.server.db.results.error_reasons(hunt.hunt_id, 5)
        return {**hunt.describe(), "errors": to_json_value(reasons)}

    @requires("hunter")
    async def start_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Start a paused or stopped hunt, or a scheduled one early."""
        hunt = self._hunt(hunt_id)
        hunt = await self.server.hunts.start(hunt.hunt_id, self._hunt_entry("start", hunt))
        return hunt.describe()

    @requires("hunter")
    async def stop_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Stop a hunt (its collections in flight cancelled), or cancel a scheduled one."""
        hunt = self._hunt(hunt_id)
        reason = (f"cancelled before its start by {self.actor}" if hunt.state == "scheduled"
                  else f"stopped by {self.actor}")
        hunt = await self.server.hunts.stop(hunt.hunt_id, reason,
                                            audit=self._hunt_entry("stop", hunt))
        return hunt.describe()

    @requires("hunter")
    async def pause_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Pause a running hunt (its collections in flight finish) or a scheduled one (its
        schedule dropped); ``start_hunt`` resumes it."""
        hunt = self._hunt(hunt_id)
        hunt = await self.server.hunts.pause(hunt.hunt_id, f"paused by {self.actor}",
                                             self._hunt_entry("pause", hunt))
        return hunt.describe()

    @requires("hunter")
    async def set_hunt(self, hunt_id: str, rate: Any = None, limit: Any = None,
                       expires: Any = None, max_errors: Any = None,
                       description: Any = None) -> dict[str, Any]:
        """Change a hunt's rate, client limit, expiry (a duration from now or a time), error
        limit or description at once; ``changed`` holds [old, new] of each setting that
        changed. Audited as "set" with the changes. Refuses a limit below the clients already
        recruited, an expiry in the past, and a call that changes nothing."""
        hunt = self._hunt(hunt_id)
        values: dict[str, Any] = {}
        if rate is not None:
            values["rate"] = arguments.number(rate, "rate", maximum=1e9)
        if limit is not None:
            values["client_limit"] = arguments.whole(limit, "limit")
        if expires is not None:
            now = time.time()
            values["expires"] = arguments.until_moment(expires, "expires", now)
            if values["expires"] <= now:
                raise ServiceError("expires: that time is already past")
        if max_errors is not None:
            values["max_errors"], values["max_errors_percent"] = arguments.error_limit(
                max_errors)
        if description is not None:
            values["description"] = arguments.text(description, "description", maximum=4096)
        if not values:
            raise ServiceError("nothing to change: give a rate, limit, expiry, max errors or"
                               " description")
        before = _settings(hunt)
        # What the change will be, recorded in the transaction that makes it
        planned = dataclasses.replace(hunt, **values)
        expected = _settings(planned)
        planned_changes = {key: [before[key], expected[key]] for key in expected
                           if before[key] != expected[key]}
        hunt = await self.server.hunts.update_settings(
            hunt.hunt_id, values, self._hunt_entry("set", planned, changed=planned_changes))
        after = _settings(hunt)
        changed = {key: [before[key], after[key]] for key in after if before[key] != after[key]}
        return {**hunt.describe(), "changed": changed}

    @requires("hunter")
    async def copy_hunt(self, hunt_id: str) -> dict[str, Any]:
        """A new paused hunt with the same specification (copied_from names this one)."""
        source = self._hunt(hunt_id)
        hunt = await self.server.hunts.copy(
            source.hunt_id, self.actor,
            self._hunt_entry("copy", source, copied_from=source.hunt_id))
        return hunt.describe()

    @requires("hunter")
    async def archive_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Hide a stopped or paused hunt, with nothing in flight, from ``list_hunts``."""
        hunt = self._hunt(hunt_id)
        hunt = await self.server.hunts.archive(hunt.hunt_id, self._hunt_entry("archive", hunt))
        return hunt.describe()

    # Admin, not hunter: deleting destroys collected evidence for good (archiving, a hunter's,
    # only hides it), so it is kept to the role that also administers the server.
    @requires("admin")
    async def delete_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Delete a hunt that is neither running nor scheduled: its rows, logs, flows, clients
        and uploaded files, the disk space given back. ``{"hunt_id", "bytes_freed", "rows",
        "files", "clients"}``."""
        hunt = self._hunt(hunt_id)
        deleted = await self.server.hunts.delete(
            hunt.hunt_id, self._hunt_entry("delete", hunt, description=hunt.description))
        return deleted

    @requires("hunter")
    async def relaunch_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Re-run the clients of the hunt that ended in errors, and only those."""
        hunt = self._hunt(hunt_id)
        count = await self.server.hunts.relaunch(hunt.hunt_id, self._hunt_entry("relaunch", hunt))
        return {**hunt.describe(), "relaunched": count}

    @requires("reader")
    @streaming
    async def watch_hunts(self) -> AsyncIterator[dict[str, Any]]:
        """Every hunt, then each hunt again whenever its state or counts change."""
        async with contextlib.aclosing(self.server.hunts.subscribe()) as events:
            async for event in events:
                yield event

    @requires("reader")
    async def hunt_clients(self, hunt_id: str, queue: str | None = None, offset: int = 0,
                           limit: int = 1000) -> list[dict[str, Any]]:
        """The clients of a hunt with their queue and their collection's state and figures."""
        hunt = self._hunt(hunt_id)
        queue = self._queue(queue)
        offset = arguments.whole(offset, "offset")
        limit = arguments.whole(limit, "limit", minimum=1, maximum=10_000)
        rows = await self.server.db.results.hunt_clients(hunt.hunt_id, queue, offset, limit)
        return self._describe_hunt_clients(rows)

    @requires("reader")
    async def hunt_clients_page(self, hunt_id: str, queue: str | None = None, offset: int = 0,
                                limit: int = 100, filter: str = "") -> dict[str, Any]:
        """One page of a hunt's clients (as ``hunt_clients`` describes them) and ``total``, how
        many there are. ``filter``: only the clients whose client ID, hostname, FQDN, queue,
        collection state or error holds that text (any case); ``total`` counts those."""
        hunt = self._hunt(hunt_id)
        queue = self._queue(queue)
        offset = arguments.whole(offset, "offset")
        limit = arguments.whole(limit, "limit", minimum=1, maximum=10_000)
        folded = arguments.text(filter, "filter", maximum=1024).casefold()
        results = self.server.db.results
        if not folded:
            rows = await results.hunt_clients(hunt.hunt_id, queue, offset, limit)
            total = await results.hunt_client_count(hunt.hunt_id, queue)
            return {"clients": self._describe_hunt_clients(rows), "total": total}
        page: list[dict[str, Any]] = []
        total = read = 0
        while True:  # the hostname and FQDN are the directory's: matched here, a page at a time
            rows = await results.hunt_clients(hunt.hunt_id, queue, read, CLIENTS_PER_SCAN)
            read += len(rows)
            for client in self._describe_hunt_clients(rows):
                fields = (client["client_id"], client["hostname"], client["fqdn"],
                          client["queue"], client["state"], client["error"])
                if any(folded in str(text or "").casefold() for text in fields):
                    if offset <= total < offset + limit:
                        page.append(client)
                    total += 1
            if len(rows) < CLIENTS_PER_SCAN:
                return {"clients": page, "total": total}

    def _queue(self, queue: Any) -> str | None:
        return None if queue is None else arguments.one_of(queue, "queue", (*QUEUES, CHECKING))

    def _describe_hunt_clients(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
        return to_json_value(described)

    def _added_columns(self, client_id: str, flow_id: str) -> dict[str, Any]:
        record = self.server.directory.get(client_id)
        return {"ClientId": client_id, "Fqdn": record.fqdn if record else "", "FlowId": flow_id}

    def _member_columns(self, member: HuntMember) -> dict[str, Any]:
        return self._added_columns(member.client_id, member.flow_id)

    def _stored_rows(self, hunt_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every stored row of the hunt as ``hunt_results`` gives them, one at a time."""
        return hunt_rows(self.server.db.results, hunt_id, self._member_columns)

    @requires("reader")
    @streaming
    async def hunt_results(self, hunt_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every client's rows, each with ``ClientId``, ``Fqdn`` and ``FlowId`` first."""
        hunt = self._hunt(hunt_id)
        async for batch in self.server.db.results.hunt_batches(hunt.hunt_id):
            extra = self._member_columns(batch.member)
            yield {"event": "rows", "rows": [{**extra, **row} for row in batch.rows]}

    @requires("analyst")
    @streaming
    async def export_hunt(self, hunt_id: str, format: str = "json", summary: bool = False,
                          keep_on_server: str | None = None, send: bool = True
                          ) -> AsyncIterator[dict[str, Any]]:
        """Make the hunt's zip and send it while it is made: ``progress`` events
        (``clients_done``, ``clients_total``, ``rows_written``, ``bytes_written``,
        ``entries_written``), ``chunk`` events (``offset``, ``data``: the zip's next bytes, in
        order; the operator API sends them as binary frames), then ``done`` with ``bytes``,
        ``sha256``, ``entries``, ``rows``, ``clients`` and ``kept``.

        The caller decides where the zip lands on its side; the server writes nothing unless
        ``keep_on_server`` names a file (a name, never a path) in the datastore's ``exports``
        folder, where it also keeps a copy (``kept`` is its path). ``send=False`` keeps that copy
        only, with no chunks. Refuses a name that is a path, has ``..``, a leading dot, control
        characters, or names an existing file that is not an earlier export."""
        hunt_id = self._hunt(hunt_id).hunt_id
        format = arguments.one_of(format, "format", FORMATS)
        summary, send = arguments.flag(summary, "summary"), arguments.flag(send, "send")
        if keep_on_server is not None:
            keep_on_server = arguments.text(keep_on_server, "keep_on_server", maximum=255,
                                            empty=False)
        if not send and keep_on_server is None:
            raise ServiceError("an export that is not sent must be kept on the server: give"
                               " keep_on_server")
        keep: Path | None = None
        try:
            if keep_on_server is not None:
                keep = await asyncio.to_thread(export_destination,
                                               self.server.datastore.exports_dir,
                                               keep_on_server)
            async with contextlib.aclosing(stream_hunt(
                self.server.db, self.server.upload_store, hunt_id, fmt=format,
                summary=summary, keep=keep, send=bool(send),
            )) as parts:
                async for part in parts:
                    if isinstance(part, ExportChunk):
                        yield {"event": "chunk", "offset": part.offset, "data": part.data}
                    elif isinstance(part, ExportProgress):
                        yield {"event": "progress", **dataclasses.asdict(part)}
                    else:
                        result = part
        except ExportError as error:
            raise ServiceError(str(error)) from None
        kept = str(result.path) if result.path is not None else None
        # An export writes no rows: its record has a transaction of its own, before the answer
        await self.server.audit.record(self._entry(
            "export", hunt_id, format=format, summary=summary, sent=bool(send), kept=kept,
            bytes=result.bytes, sha256=result.sha256))
        yield {"event": "done", "bytes": result.bytes, "sha256": result.sha256,
               "entries": result.entries, "rows": result.rows, "clients": result.clients,
               "kept": kept}

    @requires("reader")
    async def hunt_results_page(self, hunt_id: str, offset: int = 0, limit: int = 200,
                                filter: str = "", column: str | None = None,
                                value: str | None = None) -> dict[str, Any]:
        """One page of every client's rows (as ``hunt_results`` gives them): ``{"rows",
        "total", "offset"}``, for paging through a big hunt without reading it all.

        ``filter``: only rows where the text of some cell (``ClientId``, ``Fqdn`` and
        ``FlowId`` included, as ``cell_text`` renders it) holds that text, in any case.
        ``column`` and ``value`` (together): only rows whose ``column`` cell's text is exactly
        ``value`` ("" for a row without the column), as a tally counts them. ``total`` counts
        the rows that match. Rows keep their stored order, so pages do not overlap."""
        hunt = self._hunt(hunt_id)
        offset = arguments.whole(offset, "offset")
        limit = arguments.whole(limit, "limit", minimum=1, maximum=5000)
        wanted = _row_filter(filter, column, value)
        if wanted.takes_every_row:
            page, total = await self.server.db.results.results_page(hunt.hunt_id, offset, limit)
            rows = [{**self._member_columns(member), **row} for member, row in page]
        else:
            rows, total = await filtered_page(self.server.db.results, hunt.hunt_id,
                                              self._member_columns, wanted, offset, limit,
                                              self.server.result_matches)
        return {"rows": to_json_value(rows), "total": total, "offset": offset}

    @requires("reader")
    async def tally_hunt_results(self, hunt_id: str, column: str, filter: str = "",
                                 limit: int = 1000) -> dict[str, Any]:
        """Every row of the hunt (those ``filter`` takes, as in ``hunt_results_page``) counted
        by the text of its ``column`` cell; a row without the column counts under value "".
        Returns ``{"column", "values": [{"value", "rows", "clients"}, ...]`` (most rows first,
        ties by value; at most ``limit``), ``"distinct"`` (how many values), ``"rows"`` (rows
        counted) and ``"truncated"`` (more distinct values than ``limit``)}."""
        hunt = self._hunt(hunt_id)
        column = arguments.text(column, "column", maximum=1024, empty=False)
        limit = arguments.whole(limit, "limit", minimum=1, maximum=100_000)
        wanted = _row_filter(filter, None, None)
        return await tally(self._stored_rows(hunt.hunt_id), column, wanted, limit)

    @requires("analyst")
    async def query_hunt(self, hunt_id: str, query: str, limit: int = 1000) -> dict[str, Any]:
        """Run VQL on the server over stored data: ``hunt_results()`` (this hunt's rows, or
        another's with ``hunt_id=``; ``artifact=``/``source=`` pick an artifact hunt's
        sources), ``hunts()`` and ``clients()``, with the pure built-ins and nothing else (see
        ``result_queries``). Returns ``{"rows", "truncated", "limit"}``: at most ``limit``
        rows, ``truncated`` when there were more. Refuses, in one line, VQL that does not parse
        (with line and column), a query that fails or calls anything else, and one that runs
        past ``QUERY_TIME_LIMIT``. Audited, refused or not."""
        hunt = self._hunt(hunt_id)
        query = check_query(query)
        limit = arguments.whole(limit, "limit", minimum=1, maximum=MAX_QUERY_ROWS)
        data = StoredData(hunt.hunt_id, self._hunt_rows_by_id,
                          lambda: self.list_hunts(all=True), self.list_clients)
        try:
            result = await run_query(query, data, limit)
        except QueryRefused as error:  # recorded as refused by the operator API
            raise ServiceError(str(error)) from None
        await self.server.audit.record(self._entry(
            "query_hunt", hunt.hunt_id, query=query, rows=len(result.rows),
            truncated=result.truncated))
        return {"rows": result.rows, "truncated": result.truncated, "limit": limit}

    async def _hunt_rows_by_id(self, hunt_id: str) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(hunt_id, str) or hunt_id not in self.server.hunts.hunts:
            raise UnknownHunt(f"no hunt {hunt_id!r}")
        async with contextlib.aclosing(self._stored_rows(hunt_id)) as rows:
            async for row in rows:
                yield row

    @requires("reader")
    async def hunt_log(self, hunt_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Log lines and errors from the hunt's agents and its server-side judgements,
        newest last."""
        hunt = self._hunt(hunt_id)
        limit = arguments.whole(limit, "limit", maximum=100_000)
        return to_json_value(await self.server.db.results.hunt_log(hunt.hunt_id, limit))

    # Explaining a client ------------------------------------------------------------------------

    @requires("reader")
    async def explain_hunt_client(self, hunt_id: str, client_id: str) -> dict[str, Any]:
        """Where a client stands in a hunt and why: ``{"hunt_id", "client_id", "status",
        "summary", "details"}`` (see ``hunt_explain``). A client the server does not know is
        the status ``unknown_client``; a malformed ID or an unknown hunt is refused."""
        hunt = self._hunt(hunt_id)
        client_id = arguments.client_id(client_id)
        directory = self.server.directory
        return await explain_client_in_hunt(self.server.db, hunt, client_id,
                                            directory.get(client_id),
                                            directory.is_online(client_id))

    @requires("reader")
    async def client_history(self, client_id: str, limit: int = 1000) -> dict[str, Any]:
        """A client and what it took part in: ``{"client"`` (as ``list_clients`` gives it),
        ``"hunts"`` (each hunt that looked at it: hunt_id, description, hunt_state, queue,
        flow_id, state, rows, uploads, error, updated; the most recently changed first) and
        ``"collections"`` (its own collections, of no hunt, as ``flow`` gives them, newest
        first)``}``, at most ``limit`` of each."""
        limit = arguments.whole(limit, "limit", minimum=1, maximum=100_000)
        client_id = self._known_client(client_id)
        directory = self.server.directory
        record = directory.get(client_id)
        assert record is not None
        reads = self.server.db.explain
        hunts = await reads.client_hunts(client_id, limit)
        flows = await reads.client_collections(client_id, limit)
        uploads = await reads.uploads(client_id, [flow.flow_id for flow in flows])
        collections = [{**flow.describe(), "uploads": uploads[flow.flow_id]} for flow in flows]
        return to_json_value({"client": directory.describe(record), "hunts": hunts,
                              "collections": collections})

    # Analyst: it runs the operator's VQL (the server-side condition) over every client's facts.
    @requires("analyst")
    async def estimate_hunt(self, server_condition: str = "",
                            client_condition: str = DEFAULT_CLIENT_CONDITION) -> dict[str, Any]:
        """How many known clients would match, judged by their last known facts: matched, total,
        undetermined (their conditions need more than those facts), errored (the server-side
        condition gave an error), errors (the first few distinct reasons, one line each) and
        excluded (clients with an excluded label neither condition names: never recruited)."""
        client_condition = check_query(client_condition, "client-side condition")
        server_condition = arguments.text(server_condition, "the server-side condition",
                                          maximum=arguments.MAX_QUERY)
        if server_condition.strip():
            check_query(server_condition, "server-side condition")
        settings = self.server.settings
        clients = self.server.directory.all()
        eligible = [c for c in clients
                    if settings.excluded_by(c.labels, client_condition, server_condition) is None]
        result = await estimate(eligible, client_condition, server_condition)
        # The total stays every known client: the excluded ones are counted apart.
        return {**result.describe(), "total": len(clients),
                "excluded": len(clients) - len(eligible)}

    # Clients, audit -----------------------------------------------------------------------------

    @requires("hunter")
    async def label_client(self, client_id: str, add: list[str] | None = None,
                           remove: list[str] | None = None) -> dict[str, Any]:
        """Add and remove operator-assigned labels; returns the client. Refuses to remove a
        label the agent's own configuration sets (it would stay: only that configuration can
        take it away), naming the first such label."""
        client_id = self._known_client(client_id)
        add, remove = arguments.labels(add, "add"), arguments.labels(remove, "remove")
        record = self.server.directory.get(client_id)
        assert record is not None
        for label in remove:
            if label in record.agent_labels:
                raise ServiceError(f"{client_id}: label {label!r} comes from the agent's"
                                   " configuration; change it there (velotui agent-config"
                                   " --label)")
        labels = [label for label in record.operator_labels if label not in remove]
        for label in add:
            if label not in labels:
                labels.append(label)
        record = await self.server.directory.set_operator_labels(
            client_id, labels, self._entry("label", client_id, add=add, remove=remove))
        return to_json_value(self.server.directory.describe(record))

    # Admin: revoking cuts an endpoint off for good; it administers the fleet, not a hunt.
    @requires("admin")
    async def revoke_client(self, client_id: str) -> dict[str, Any]:
        """Refuse the client's key from now on: its connection is closed, its flows in flight
        end in error, and it cannot connect or enrol again with that key."""
        client_id = self._known_client(client_id)
        record = await self.server.directory.revoke(client_id, self._entry("revoke", client_id))
        await self.server.client_revoked(client_id)
        return to_json_value(self.server.directory.describe(record))

    # Settings and approvals ---------------------------------------------------------------------

    @requires("reader")
    async def get_settings(self) -> dict[str, Any]:
        """Every setting in force: approvals ("required"/"off"), approval_hours,
        excluded_labels."""
        return dict(self.server.settings.values)

    @requires("admin")
    async def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        """Change a setting (audited as "setting" with the old and new value); every setting
        in force after it."""
        await self.server.settings.set(key, value, self._entry("setting"))
        return dict(self.server.settings.values)

    @requires("hunter")
    async def request_approval(self, hunt_id: str, reason: str = "") -> dict[str, Any]:
        """Ask another operator to approve the hunt's current specification; the hunt."""
        hunt = self._hunt(hunt_id)
        reason = arguments.text(reason, "reason", maximum=4096)
        hunt = await self.server.hunts.request_approval(
            hunt.hunt_id, self.actor, reason,
            self._entry("request_approval", hunt.hunt_id, reason=reason))
        return hunt.describe()

    @requires("approver")
    async def approve_hunt(self, hunt_id: str) -> dict[str, Any]:
        """Approve the hunt's pending request (valid for approval_hours); the hunt. Refused to
        the hunt's creator and to the requester."""
        hunt = self._hunt(hunt_id)
        hunt = await self.server.hunts.decide_approval(
            hunt.hunt_id, self.actor, True, "", self.server.settings.approval_seconds,
            self._entry("approve", hunt.hunt_id))
        return hunt.describe()

    @requires("approver")
    async def reject_hunt(self, hunt_id: str, reason: str) -> dict[str, Any]:
        """Reject the hunt's pending request, saying why; the hunt."""
        hunt = self._hunt(hunt_id)
        reason = arguments.text(reason, "reason", maximum=4096)
        if not reason.strip():
            raise ServiceError("a rejection needs a reason (for the hunt's author)")
        hunt = await self.server.hunts.decide_approval(
            hunt.hunt_id, self.actor, False, reason, 0.0,
            self._entry("reject", hunt.hunt_id, reason=reason))
        return hunt.describe()

    @requires("reader")
    async def list_approvals(self, pending_only: bool = True) -> list[dict[str, Any]]:
        """Each hunt's newest approval request, newest first (pending ones only unless told),
        each as the hunt dict (its full specification, hidden condition included) with
        ``approval``."""
        pending_only = arguments.flag(pending_only, "pending_only")
        hunts = self.server.hunts.hunts
        found = []
        for request in await self.server.db.approvals.requests(pending_only):
            hunt = hunts.get(request.hunt_id)
            if hunt is not None and (not pending_only or hunt.approval_state() == "pending"):
                found.append(hunt.describe())
        return found

    @requires("reader")
    async def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Operator actions, oldest first."""
        return await self.server.audit.entries(arguments.whole(limit, "limit", maximum=100_000))

    # Operators ----------------------------------------------------------------------------------

    @requires("admin")
    async def add_operator(self, name: str, role: str) -> dict[str, Any]:
        """A new operator: ``{"name", "role", "token"}``. The token is shown this once; the
        server keeps only its hash."""
        token = await self.server.operators.add(name, role, self.actor)
        return {"name": name, "role": role, "token": token}

    @requires("admin")
    async def list_operators(self) -> list[dict[str, Any]]:
        """Every operator: ``{"name", "role", "created", "creator"}``, by name (no tokens)."""
        return [{"name": record.name, "role": record.role, "created": record.created,
                 "creator": record.creator} for record in self.server.operators.all()]

    @requires("admin")
    async def remove_operator(self, name: str) -> dict[str, Any]:
        """Remove an operator: its token stops working at its next request. Refuses the last
        admin."""
        await self.server.operators.remove(name, self.actor)
        return {"name": name, "removed": True}

    @requires("admin")
    async def set_operator_role(self, name: str, role: str) -> dict[str, Any]:
        """Change an operator's role (from its next request on): ``{"name", "role",
        "old_role"}``. Refuses to demote the last admin."""
        old = await self.server.operators.set_role(name, role, self.actor)
        return {"name": name, "role": role, "old_role": old}

    @requires("reader")
    async def verify_audit(self) -> dict[str, Any]:
        """Check the audit log's hash chain: ``{"intact", "records"`` (checked before the
        first broken one, or all), ``"broken_at"`` (that record's id, or null) and
        ``"problem"`` (what is wrong with it)``}``."""
        check = await self.server.audit.verify()
        return {"intact": check.intact, "records": check.records,
                "broken_at": check.broken_at, "problem": check.problem}

    @requires("reader")
    @streaming
    async def follow_audit(self, after: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each audit record as it commits (those after record ``after`` first, when given),
        as ``audit_log`` shows them, with ``"event": "audit"``."""
        if after is not None:
            after = arguments.whole(after, "after")
        async with contextlib.aclosing(self.server.audit.follow(after)) as entries:
            async for entry in entries:
                yield {"event": "audit", **entry}

    # Audit records of the actions above -----------------------------------------------------

    def _entry(self, action: str, target: str = "", **details: Any) -> AuditEntry:
        return AuditEntry(self.actor, action, target, details)

    def _hunt_entry(self, action: str, hunt: HuntRecord, **details: Any) -> AuditEntry:
        """A hunt action's record: with the specification's hash it acted on."""
        return AuditEntry(self.actor, action, hunt.hunt_id,
                          {**details, "spec_hash": hunt.spec_hash})


def _row_filter(filter: Any, column: Any, value: Any) -> RowFilter:
    """The rows an operator asked for, checked: ``column`` and ``value`` go together."""
    text = arguments.text(filter, "filter", maximum=1024)
    if column is None and value is None:
        return RowFilter(text)
    if column is None or value is None:
        raise ServiceError("column and value go together: the rows whose column is that value")
    return RowFilter(text, arguments.text(column, "column", maximum=1024, empty=False),
                     arguments.text(value, "value", maximum=arguments.MAX_TEXT))


def _definition_items(definitions: Any) -> list[tuple[str, str]]:
    """``[{"origin", "text"}]`` as checked pairs."""
    if not isinstance(definitions, list):
        raise ServiceError("definitions must be a list of {origin, text}")
    items = []
    for item in definitions:
        if not isinstance(item, dict):
            raise ServiceError("definitions must be a list of {origin, text}")
        origin = arguments.text(item.get("origin") or "<definition>", "origin", maximum=4096)
        text = arguments.text(item.get("text"), f"{origin}", maximum=1024 * 1024, empty=False)
        items.append((origin, text))
    return items
