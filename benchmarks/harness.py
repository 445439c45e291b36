"""What every benchmark here needs, once: progress lines and the JSON result line, the open-files
limit, the agent program and its config, child processes started and stopped in order, resident
memory and CPU time, medians and percentiles, and when a hunt is finished.

Benchmarks run from the repository root with the virtualenv's Python
(``.venv/bin/python -m benchmarks.NAME``); ``make bench`` runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from velotui.runtime import release_free_memory
from velotui.server.hunts import CHECKING

STOP_GRACE_SECONDS = 30.0
PROGRESS_SECONDS = 10.0
# Counts are read from memory this often while something runs: often enough that polling adds
# little to a measured time, rarely enough that it costs the measured server nothing noticeable.
POLL_SECONDS = 0.01
FINISHED_QUEUES = ("results", "completed", "errors", "not_matched")


class BenchmarkError(RuntimeError):
    """A phase of a benchmark could not finish; the message says which and why."""


# Output -------------------------------------------------------------------------------------------


def say(text: str) -> None:
    """A progress line, on standard error, so that standard output holds only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def json_line(figures: Mapping[str, Any]) -> str:
    """The figures as the one JSON line a benchmark ends with (floats rounded to 4 digits)."""
    return json.dumps(_rounded(figures), separators=(", ", ": "))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def target_met(value: float | None, sense: str, limit: float) -> str:
    """``met`` or ``MISSED`` for a target ``at most``/``at least`` ``limit``; ``not measured``
    when there is no value."""
    if value is None:
        return "not measured"
    met = value <= limit if sense == "at most" else value >= limit
    return "met" if met else "MISSED"


# Statistics ---------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median; the figure of a few timed rounds on a shared, noisy machine."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


# This process -------------------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the new soft limit. Every
    connection is a file descriptor, and child processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def settled_rss_bytes() -> int:
    """This process's resident memory once garbage is collected and the heap's free pages are
    handed back to the system (what a server does by itself after a burst of connections):
    memory held, not memory waiting to be reused."""
    gc.collect()
    release_free_memory()
    return rss_bytes()


def rss_bytes(process: psutil.Process | None = None) -> int:
    """Resident memory of ``process`` (this one by default), as it is now."""
    return int((process or psutil.Process()).memory_info().rss)


def peak_rss_bytes() -> int:
    """The most resident memory this process has held in its life."""
    # Linux reports kilobytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time of ``process`` so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


# The agent program --------------------------------------------------------------------------------


def agent_command() -> list[str]:
    """How to run ``velotui-agent``: the console script next to this Python, else the module."""
    script = Path(sys.executable).parent / "velotui-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agent.main"]


async def write_agent_config(datastore_root: Path, server_url: str, path: Path) -> Path:
    """Write a fleet's config with ``velotui agent-config``, as an operator would (the server
    does not import the agent's package). Raises BenchmarkError when that fails."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "velotui.cli", "agent-config", "--datastore", str(datastore_root),
         "--server-url", server_url, "-o", str(path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    # "restart": the certificate had to be reissued for this host, and the running server still
    # presents the old one, so the fleet could not connect.
    if result.returncode != 0 or "restart" in result.stderr:
        raise BenchmarkError(f"velotui agent-config failed: {result.stderr.strip()}")
    return path


async def hunt_on_simulated_fleet(server: Any, folder: Path, agents: int,
                                  children: list[subprocess.Popen[Any]], what: str,
                                  **hunt: Any) -> str:
    """Start ``velotui-agent --simulate AGENTS`` against ``server`` (a Server in this process),
    run one hunt (``create_hunt`` arguments) on every agent to its end, stop the fleet; the
    hunt's ID. Raises RuntimeError when a client did not return results."""
    config = await write_agent_config(server.datastore.root, server.url, folder / "agent.json")
    with open(folder / "fleet.log", "ab") as log:
        fleet = subprocess.Popen(
            [*agent_command(), "--config", str(config), "--state", str(folder / "fleet"),
             "--simulate", str(agents)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    children.append(fleet)
    while len(server.directory.sessions) < agents:
        await asyncio.sleep(0.1)
    created = await server.service("bench").create_hunt(rate=0, start=True, timeout=600, **hunt)
    hunt_id = str(created["hunt_id"])
    while not hunt_finished(server.hunts.get(hunt_id).counts, agents):
        await asyncio.sleep(0.1)
    counts = server.hunts.get(hunt_id).counts
    if counts["results"] != agents:
        raise RuntimeError(f"{what} did not succeed everywhere: {counts}")
    await stop_process(fleet)
    return hunt_id


# Child processes ----------------------------------------------------------------------------------


def start_process(command: Sequence[str], log_path: Path, *, pipes: bool = False,
                  children: list[subprocess.Popen[Any]] | None = None) -> subprocess.Popen[Any]:
    """Start ``command`` in its own session (a Ctrl-C reaches the benchmark only, which then
    stops its children in order), its standard error (and output, unless ``pipes``) appended to
    ``log_path``. With ``pipes``, standard input and output are text pipes for a line protocol.
    The process is appended to ``children`` at once, so that a benchmark that fails can kill it."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log_file,
            stderr=log_file,
            text=pipes, bufsize=1 if pipes else -1,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if children is not None:
        children.append(process)
    return process


async def stop_process(process: subprocess.Popen[Any], grace: float = STOP_GRACE_SECONDS
                       ) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Waits without blocking the event loop,
    because a server in this loop must answer the closing handshakes of the process's
    connections meanwhile."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            say(f"process {process.pid} ignored SIGTERM for {grace:g} s: killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.to_thread(process.wait)
    _close_pipes(process)


def kill_now(process: subprocess.Popen[Any]) -> None:
    """The last resort, outside any event loop: kill and reap."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
    _close_pipes(process)


def _close_pipes(process: subprocess.Popen[Any]) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def tell(process: subprocess.Popen[str], command: str) -> None:
    """Send one command line to a child speaking the line protocol. Raises BenchmarkError when
    it is gone."""
    stdin: IO[str] | None = process.stdin
    try:
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
    except (OSError, ValueError):
        raise BenchmarkError(f"process {process.pid} is gone (status {process.poll()})") from None


async def read_event(process: subprocess.Popen[str], event: str, timeout: float,
                     log_path: Path) -> dict[str, Any]:
    """The next JSON line a child prints, which must be ``{"event": event, ...}``. Raises
    BenchmarkError when it does not come within ``timeout`` seconds, or the child ends or says
    something else (the message quotes its log)."""
    stdout = process.stdout
    assert stdout is not None
    try:
        # A thread reads the pipe: whatever this event loop serves keeps being served meanwhile.
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), timeout)
    except TimeoutError:
        raise BenchmarkError(f"{log_path.stem}: no {event!r} within {timeout:g} s") from None
    if not line:
        await asyncio.to_thread(process.wait)
        raise BenchmarkError(f"{log_path.stem} ended with status {process.returncode}:"
                             f" {tail(log_path)}")
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        message = {}
    if message.get("event") != event:
        raise BenchmarkError(f"{log_path.stem}: expected {event!r}, got {line.strip()!r}")
    return message


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def print_event(event: str, **values: Any) -> None:
    """Print one line of the line protocol a child speaks to its benchmark."""
    print(json.dumps({"event": event, **values}), flush=True)


# Waiting ------------------------------------------------------------------------------------------


async def wait_until(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Callable[[], str],
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``done`` every POLL_SECONDS until it is true. Raises BenchmarkError after
    ``timeout`` seconds or as soon as ``alive`` names a reason to give up (a child died)."""
    began = time.monotonic()
    next_progress = began + PROGRESS_SECONDS
    while not done():
        now = time.monotonic()
        problem = alive()
        if problem:
            raise BenchmarkError(f"{what}: {problem} ({progress()})")
        if now - began > timeout:
            raise BenchmarkError(f"{what}: not done after {timeout:g} s ({progress()})")
        if now >= next_progress:
            say(f"  {what}: {progress()} after {now - began:.0f} s")
            next_progress = now + PROGRESS_SECONDS
        await asyncio.sleep(POLL_SECONDS)


# Hunts --------------------------------------------------------------------------------------------


def hunt_finished(counts: Mapping[str, int], clients: int) -> bool:
    """Every one of ``clients`` has an outcome in the hunt's counts, and none is still being
    checked, waiting or running."""
    return (
        sum(counts[queue] for queue in FINISHED_QUEUES) >= clients
        and counts["pending"] == 0
        and counts["running"] == 0
        and counts[CHECKING] == 0
    )


def describe_counts(counts: Mapping[str, int]) -> str:
    """A hunt's counts as one line of text, for progress and errors."""
    return ", ".join(f"{queue} {value}" for queue, value in counts.items())


# Churn --------------------------------------------------------------------------------------------

RSS_SAMPLE_SECONDS = 0.05


async def churn(
    oldest_first: Callable[[], Sequence[Any]],
    close: Callable[[Any], Any],
    per_second: int,
    seconds: float,
    open_count: Callable[[], int],
) -> dict[str, int]:
    """Close ``per_second`` connections every second for ``seconds``, the oldest first (what
    ``oldest_first()`` lists), each with ``close(connection)`` (a coroutine, run as a task), while
    their clients reconnect by themselves; meanwhile sample this process's resident memory.
    Returns ``peak_rss`` (bytes, as sampled, nothing collected), ``closed`` and ``fewest_open``
    (the fewest ``open_count()`` seen)."""
    me = psutil.Process()
    closing: weakref.WeakSet[Any] = weakref.WeakSet()  # not picked again while they close
    tasks: list[asyncio.Task[Any]] = []
    peak, fewest = rss_bytes(me), open_count()
    began = time.monotonic()
    ticks = 0
    while (now := time.monotonic()) - began < seconds:
        if now - began >= ticks:  # a new second: the next batch goes
            ticks += 1
            batch = [c for c in oldest_first() if c not in closing][:per_second]
            closing.update(batch)
            tasks += [asyncio.ensure_future(close(c)) for c in batch]
        peak = max(peak, rss_bytes(me))
        fewest = min(fewest, open_count())
        await asyncio.sleep(RSS_SAMPLE_SECONDS)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"peak_rss": peak, "closed": len(tasks), "fewest_open": fewest}
