"""pslist(), process_tracker_pslist() and getpid(): the running processes, with the columns of
Velociraptor's pslist(), and the agent's own process id."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import psutil

from agent.plugins.arguments import int_argument
from agent.plugins.blocking import stream_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

_ATTRIBUTES = [
    "pid", "ppid", "name", "username", "exe", "cmdline", "create_time", "status",
    "num_threads", "memory_info", "cpu_times", "cwd",
]


def process_row(process: psutil.Process) -> dict[str, Any] | None:
    """The process as a pslist() row, with NULL for what we may not read; None when it is gone."""
    try:
        info = process.as_dict(_ATTRIBUTES, ad_value=None)
    except psutil.NoSuchProcess:
        return None
    cmdline = info["cmdline"]
    created = info["create_time"]
    memory = info["memory_info"]
    times = info["cpu_times"]
    return {
        "Pid": info["pid"],
        "Ppid": info["ppid"],
        "Name": info["name"],
        "Username": info["username"],
        "Exe": info["exe"],
        "CommandLine": " ".join(cmdline) if cmdline is not None else None,
        "Cwd": info["cwd"],
        "CreateTime": datetime.fromtimestamp(created, tz=UTC) if created is not None else None,
        "Status": info["status"],
        "Threads": info["num_threads"],
        # Velociraptor's rows are case-insensitive and its artifacts read both MemoryInfo.RSS
        # and MemoryInfo.rss; VQL here is case-sensitive, so both spellings are present.
        "MemoryInfo": (
            {"RSS": memory.rss, "VMS": memory.vms, "rss": memory.rss, "vms": memory.vms}
            if memory is not None else None
        ),
        "Times": {"user": times.user, "system": times.system} if times is not None else None,
        # Windows' pslist() names the CPU seconds User and System (Generic.Client.Stats).
        "User": times.user if times is not None else None,
        "System": times.system if times is not None else None,
    }


def _process_rows(pid: int | None) -> Iterator[dict[str, Any]]:
    # Plain Process objects rather than psutil.process_iter(), whose shared cache is not safe
    # when many simulated agents list processes from worker threads at once.
    pids = [pid] if pid is not None else psutil.pids()
    for each in pids:
        try:
            process = psutil.Process(each)
        except psutil.Error:
            continue
        row = process_row(process)
        if row is not None:
            yield row


async def pslist(scope: Scope, *, pid: Any = None) -> AsyncIterator[dict[str, Any]]:
    """One row per process (Pid, Ppid, Name, Username, Exe, CommandLine, Cwd, CreateTime,
    Status, Threads, MemoryInfo {RSS, VMS, rss, vms}, Times {user, system}, User, System, in
    seconds), or only the process ``pid``. NULL for what the agent may not read."""
    wanted = None if pid is None else int_argument(scope, "pslist", "pid", pid)
    if pid is not None and wanted is None:
        return
    async for row in stream_blocking(_process_rows(wanted), max_items=64):
        yield row


def getpid(scope: Scope) -> int:
    """The agent's own process id (artifacts use it to leave the agent out of a scan)."""
    return os.getpid()


def register(registry: Registry) -> None:
    """Add pslist() and getpid() to the registry (process_tracker_pslist(): see
    process_tracker)."""
    registry.plugin(pslist)
    registry.function(getpid)
