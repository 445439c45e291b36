"""VQL over what the server has stored: an operator's query over a hunt's results, run on the
server (the console's Query tab, ``velotui hunt query``).

What such a query may reach is stated once, here: the plugins ``QUERY_PLUGINS`` (a hunt's stored
rows, the hunts, the known clients) and the built-ins the server-side condition may call
(``conditions.ALLOWED_BUILTINS``: pure computation over the values given). Nothing reads or
changes the server's files, processes, network or environment; a call to anything else
(``glob()``, ``execve()``, ``sleep()``, ``query()``) is an unknown plugin or function, and the
query is refused naming it.

A query runs on the server's event loop (its plugins read the data layer there), within
``QUERY_TIME_LIMIT`` seconds; the engine lets the loop run between rows. It stops reading once it
has ``limit`` rows. Whatever goes wrong is one line: a ``QueryRefused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from velotui.server.conditions import ALLOWED_BUILTINS, REFUSED_BUILTINS
from velotui.vql import (
    DeadlineExceeded,
    Registry,
    Scope,
    UnknownName,
    VQLSyntaxError,
    builtins_registry,
    run,
)
from velotui.vql.values import to_json_value

QUERY_TIME_LIMIT = 30.0
"""Seconds a query over stored results may run before it is refused."""

SOURCE_COLUMN = "_Source"  # where artifact hunts name each row's source: Artifact[/Source]

_DATA = "stored_data"  # the services key under which a run finds its StoredData


class QueryRefused(Exception):
    """A query over stored data could not run or failed; the message is one line."""


class UnknownHunt(LookupError):
    """``StoredData.hunt_rows`` was asked for a hunt there is none of."""


@dataclass
class StoredData:
    """What the plugins read, handed to one run: the hunt a query is about, a hunt's rows
    (``ClientId``, ``Fqdn``, ``FlowId`` first; raises UnknownHunt for an unknown hunt), every
    hunt and every client as the operator API describes them."""

    hunt_id: str
    hunt_rows: Callable[[str], AsyncIterator[dict[str, Any]]]
    hunts: Callable[[], Any]  # an awaitable list of dicts
    clients: Callable[[], Any]
    columns: set[str] = field(default_factory=set)  # every column the plugins yielded


def _data(scope: Scope) -> StoredData:
    return scope.services[_DATA]


def _from_source(row: Mapping[str, Any], artifact: str, source: str) -> bool:
    tag = row.get(SOURCE_COLUMN)
    if not isinstance(tag, str):
        return False
    name, _slash, source_name = tag.partition("/")
    if artifact and name != artifact:
        return False
    return not source or source_name == source


async def hunt_results(scope: Scope, hunt_id: str | None = None, artifact: str | None = None,
                       source: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Every stored row of a hunt (the one queried unless ``hunt_id``), ``ClientId``, ``Fqdn``
    and ``FlowId`` first. ``artifact`` and ``source`` keep the rows an artifact hunt tagged in
    ``_Source`` as that artifact (any of its sources) or that source (of any artifact, or of
    ``artifact``)."""
    data = _data(scope)
    for name, value in (("hunt_id", hunt_id), ("artifact", artifact), ("source", source)):
        if value is not None and not isinstance(value, str):
            scope.error(f"hunt_results(): {name} must be text")
            return
    selecting = bool(artifact or source)
    try:
        rows = data.hunt_rows(hunt_id or data.hunt_id)
        async with contextlib.aclosing(rows):
            async for row in rows:
                if selecting and not _from_source(row, artifact or "", source or ""):
                    continue
                data.columns.update(row)
                yield row
    except UnknownHunt as error:
        scope.error(f"hunt_results(): {error}")


async def hunts(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row per hunt, newest first, as ``velotui hunt list --json`` shows it."""
    data = _data(scope)
    for hunt in await data.hunts():
        data.columns.update(hunt)
        yield hunt


async def clients(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row per known client, most recently seen first, as ``velotui clients --json``
    shows it."""
    data = _data(scope)
    for client in await data.clients():
        data.columns.update(client)
        yield client


QUERY_PLUGINS = {"hunt_results": hunt_results, "hunts": hunts, "clients": clients}
"""The plugins a query over stored data has beyond the pure built-ins."""


@functools.cache
def query_registry() -> Registry:
    """Everything a query over stored data may call (shared: add nothing to it): the pure
    built-ins of the server-side condition's allow-list, and ``QUERY_PLUGINS``."""
    registry = builtins_registry().only(ALLOWED_BUILTINS).child()
    for name, plugin in QUERY_PLUGINS.items():
        registry.plugin(plugin, name=name)
    return registry


@dataclass
class QueryResult:
    rows: list[dict[str, Any]]
    truncated: bool


class _Problems:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unknown: dict[tuple[str, str], UnknownName] = {}

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.errors.append(message)

    def note_unknown(self, unknown: UnknownName) -> None:
        self.unknown.setdefault((unknown.kind, unknown.name), unknown)

    def first(self, columns: set[str]) -> str | None:
        """The one-line reason the run failed, or None. A symbol that is a column of some rows
        but not of others is NULL where missing, as VQL means, and no error."""
        excused = set()
        for unknown in self.unknown.values():
            if unknown.kind == "symbol" and unknown.name in columns:
                excused.add(unknown.message)
                continue
            return _unknown_reason(unknown)
        for message in self.errors:
            if message not in excused:
                return f"the query failed: {message}"
        return None


def _unknown_reason(unknown: UnknownName) -> str:
    name = unknown.name
    if unknown.kind == "symbol":
        return f"{name} is not defined (not a column of the rows, nor a LET)"
    why = REFUSED_BUILTINS.get(name)
    allowed = ", ".join(f"{plugin}()" for plugin in QUERY_PLUGINS)
    if unknown.kind == "plugin":
        return (f"unknown plugin {name}(): a query over stored results runs on the server and"
                f" reads only {allowed}" + (f" ({name}() is refused: {why})" if why else ""))
    if unknown.kind == "function":
        return (f"unknown function {name}(): a query over stored results may call only pure"
                " functions" + (f" ({name}() is refused: {why})" if why else ""))
    return f"FROM {name}: no such variable or plugin (the plugins are {allowed})"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def run_query(text: str, data: StoredData, limit: int,
                    time_limit: float = QUERY_TIME_LIMIT) -> QueryResult:
    """The first ``limit`` rows of ``text`` (VQL, already checked to parse) over ``data``, and
    whether there were more (it stops reading at the row after). Raises QueryRefused (one
    line) when the query fails, calls what it may not, or runs past ``time_limit``."""
    problems = _Problems()
    rows: list[dict[str, Any]] = []
    truncated = False
    try:
        results = run(text, registry=query_registry(), services={_DATA: data},
                      on_log=problems.log, on_unknown=problems.note_unknown,
                      deadline=time.monotonic() + time_limit)
        async with asyncio.timeout(time_limit), contextlib.aclosing(results) as produced:
            async for row in produced:
                if len(rows) >= limit:
                    truncated = True
                    break
                rows.append(to_json_value(row))
    except VQLSyntaxError as error:
        raise QueryRefused(_one_line(f"the query does not parse: {error}")) from None
    except (DeadlineExceeded, TimeoutError):
        raise QueryRefused(f"the query ran longer than {time_limit:g} s and was stopped;"
                           " narrow it (a WHERE, a LIMIT, or hunt_results(artifact=...))"
                           ) from None
    problem = problems.first(data.columns)
    if problem is not None:
        raise QueryRefused(_one_line(problem))
    return QueryResult(rows, truncated)
