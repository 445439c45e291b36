"""Velociraptor's process tracker functions, answered from the processes running now.

Velociraptor can keep a tracker of every process it saw start and end; without one it answers
from the live process list, and so does the agent: ``process_tracker_pslist()`` gives pslist()'s
rows with ``StartTime`` and ``EndTime``; a process *record* is ``{Id, ParentId, StartTime,
EndTime, Data}`` (Data: the pslist row); ``process_tracker_get``, ``_children``, ``_callchain``
(from the oldest ancestor to the process) and ``_tree`` (``{id, name, data, children}``) read
them. Processes that have ended are not known (EndTime is always NULL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psutil

from agent.plugins.blocking import call_blocking, stream_blocking
from agent.plugins.processes import process_row
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

DEFAULT_MAX_ITEMS = 1000


def register(registry: Registry) -> None:
    registry.plugin(process_tracker_pslist)
    for function in (process_tracker_get, process_tracker_children, process_tracker_callchain,
                     process_tracker_tree):
        registry.function(function)


def _row(pid: int) -> dict[str, Any] | None:
    try:
        return process_row(psutil.Process(pid))
    except psutil.Error:
        return None


def _record(row: dict[str, Any]) -> dict[str, Any]:
    return {"Id": str(row["Pid"]), "ParentId": str(row.get("Ppid") or 0),
            "StartTime": row.get("CreateTime"), "EndTime": None, "Data": row}


def _pid(scope: Scope, function: str, value: Any) -> int | None:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).strip())
    except (TypeError, ValueError):
        scope.error(f"{function}(): id must be a process id, not {value!r}")
        return None


def _limit(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_ITEMS


def _rows() -> list[dict[str, Any]]:
    return [row for pid in psutil.pids() if (row := _row(pid)) is not None]


async def process_tracker_pslist(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """pslist()'s rows, with StartTime (the creation time) and EndTime (NULL: running)."""
    rows = ({**row, "StartTime": row.get("CreateTime"), "EndTime": None}
            for pid in psutil.pids() if (row := _row(pid)) is not None)
    async for row in stream_blocking(rows, max_items=64):
        yield row


async def process_tracker_get(scope: Scope, *, id: Any, max_items: Any = None) -> Any:
    """The record of process ``id``, or NULL when it is not running."""
    pid = _pid(scope, "process_tracker_get", id)
    row = None if pid is None else await call_blocking(_row, pid)
    return None if row is None else _record(row)


async def process_tracker_children(scope: Scope, *, id: Any, max_items: Any = None) -> Any:
    """The records of the processes whose parent is ``id``."""
    pid = _pid(scope, "process_tracker_children", id)
    if pid is None:
        return None
    rows = await call_blocking(_rows)
    return [_record(r) for r in rows if r.get("Ppid") == pid][:_limit(max_items)]


def _chain(pid: int, limit: int) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    while pid and pid not in seen and len(chain) < limit:
        seen.add(pid)
        row = _row(pid)
        if row is None:
            break
        chain.append(_record(row))
        pid = row.get("Ppid") or 0
    return list(reversed(chain))


async def process_tracker_callchain(scope: Scope, *, id: Any, max_items: Any = None) -> Any:
    """The records from the oldest known ancestor of ``id`` down to ``id`` itself."""
    pid = _pid(scope, "process_tracker_callchain", id)
    if pid is None:
        return None
    return await call_blocking(_chain, pid, _limit(max_items))


def _tree(pid: int, limit: int) -> dict[str, Any] | None:
    rows = {row["Pid"]: row for row in _rows()}
    children: dict[int, list[int]] = {}
    for row in rows.values():
        children.setdefault(row.get("Ppid") or 0, []).append(row["Pid"])
    count = 0

    def node(each: int, depth: int) -> dict[str, Any]:
        nonlocal count
        count += 1
        row = rows[each]
        below = [node(child, depth + 1) for child in sorted(children.get(each, []))
                 if child != each and count < limit and depth < 64]
        return {"id": str(each), "name": row.get("Name"), "data": row, "children": below}

    return node(pid, 0) if pid in rows else None


async def process_tracker_tree(scope: Scope, *, id: Any, data_callback: Any = None,
                               max_items: Any = None) -> Any:
    """The tree of processes under ``id``: ``{id, name, data, children}`` nested.
    ``data_callback`` is not supported (the data is the pslist row)."""
    pid = _pid(scope, "process_tracker_tree", id)
    if pid is None:
        return None
    return await call_blocking(_tree, pid, _limit(max_items))
