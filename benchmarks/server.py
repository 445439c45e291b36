"""Speed and scale of the server: hunts over a simulated fleet, against baselines from the same run.

    python -m benchmarks.server --agents N [--rows R] [--profile DIR] [--tracemalloc]

What it does, in order, all in one run (the machines are shared and noisy, so a figure and the
baseline it is compared with must come from the same minutes):

1. Starts a server in this process on a fresh datastore in a temporary folder, and notes this
   process's resident memory.
2. Starts ``velotui-agent --simulate N`` in a separate process, waits until all N agents are
   online, lets them settle, and notes the memory again: ``kb_per_agent`` is the growth per idle
   connected agent.
3. Hunts ``SELECT Hostname FROM info()`` at rate 0 (default client-side condition, no server-side
   condition): ``hunt_seconds`` runs from the operator's create-and-start until every client is
   finished (results, completed, errors or not matched, nothing checking, pending or running).
4. Hunts a query of R rows per client: ``ingest_rows_per_s`` is the rows stored over the time from
   its start until every client is finished (so it includes that hunt's condition checks).
5. Stops the fleet, then times the round-trip baseline: a plain websockets echo server in this
   process, with the same TLS certificate and websocket options as the server, and N connections
   opened by ``python -m benchmarks.roundtrip_fleet roundtrip`` in another process, which sends
   one small message on every connection at once and waits for every reply; the median of a few
   such rounds is ``roundtrip_seconds``.
6. Times the SQLite baseline: raw ``executemany`` of the same rows into a fresh file (see
   ``sqlite_rows_per_s``).

It prints one line per figure and ends with one JSON line. Everything it started (the fleet, the
round-trip process, the server, the temporary folder) is gone when it returns, whether it
finished, failed or was interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from velotui.server.datastore import Datastore
from velotui.server.hunts import CHECKING
from velotui.server.ids import hunt_flow_id
from velotui.server.server import Server
from velotui.server.sessions import AgentGate
from velotui.server.tls import server_ssl_context
from velotui.vql import check as check_vql
from velotui.wire import protocol

HUNT_QUERY = "SELECT Hostname FROM info()"
PAD = "x" * 32
INGEST_QUERY = f"SELECT _value AS N, '{PAD}' AS Pad FROM range(end={{rows}})"
DEFAULT_TOTAL_ROWS = 200_000
FINISHED_QUEUES = ("results", "completed", "errors", "not_matched")
# Counts are read from memory this often while a hunt runs: often enough that the polling adds
# little to the measured time, rarely enough that it costs the server nothing noticeable.
POLL_SECONDS = 0.01
PROGRESS_SECONDS = 10.0
STOP_GRACE_SECONDS = 30.0
# The round trip is short and the machine noisy: the median of a few rounds is the figure.
ROUNDTRIP_ROUNDS = 5
# Log lines are grouped by kind: their time stamp goes, and what varies from agent to agent.
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_VARYING = re.compile(r"C\.[0-9a-f]{16}|F\.[0-9A-Z.]+|\d+(\.\d+)*(:\d+)?")
TARGETS = {  # issue 4, section 8, at N = 2,000
    "hunt_vs_roundtrip": ("at most", 4.0),
    "ingest_vs_sqlite": ("at least", 0.5),
    "kb_per_agent": ("at most", 40.0),
}


class BenchmarkError(RuntimeError):
    """A phase of the benchmark could not finish; the message says which and why."""


@dataclass
class Options:
    """What to run: the command line as values."""

    agents: int
    rows: int
    settle: float = 3.0
    connect_timeout: float = 600.0
    hunt_timeout: float = 900.0
    profile_dir: Path | None = None
    tracemalloc: bool = False


@dataclass
class Figures:
    """What was measured; ``as_json`` is the benchmark's last line."""

    agents: int
    rows_per_client: int
    values: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps({"agents": self.agents, **self.values})


def say(text: str) -> None:
    """A progress line, on standard error so that standard output holds only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rss_bytes(process: psutil.Process | None = None) -> int:
    """Resident memory of ``process`` (this one by default) after a full garbage collection
    (when it is this one), so that garbage waiting to be collected is not counted."""
    if process is None:
        gc.collect()
        process = psutil.Process()
    return int(process.memory_info().rss)


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time of ``process`` so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the new soft limit. Each
    agent is a socket here, and child processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Child processes ----------------------------------------------------------------------------------


def agent_command() -> list[str]:
    """How to run ``velotui-agent``: the console script next to this Python, else the module."""
    script = Path(sys.executable).parent / "velotui-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agent.main"]


async def write_agent_config(datastore: Datastore, server_url: str, path: Path) -> Path:
    """Write the fleet's config with ``velotui agent-config``, as an operator would (the server
    does not import the agent's package). Raises BenchmarkError when that fails."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "velotui.cli", "agent-config", "--datastore", str(datastore.root),
         "--server-url", server_url, "-o", str(path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    # "restart": the certificate had to be reissued for this host, and the running server still
    # presents the old one, so the fleet could not connect.
    if result.returncode != 0 or "restart" in result.stderr:
        raise BenchmarkError(f"velotui agent-config failed: {result.stderr.strip()}")
    return path


async def stop_process(process: subprocess.Popen[Any], grace: float = STOP_GRACE_SECONDS
                       ) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Waits without blocking the event loop,
    because the server in this loop must answer the closing handshakes of the fleet."""
    if process.poll() is not None:
        return
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


def kill_now(process: subprocess.Popen[Any]) -> None:
    """The last resort, outside the event loop: kill and reap."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def message_kinds(lines: list[str], top: int = 5) -> list[tuple[int, str]]:
    """The most frequent kinds of log line, as (count, line with times, addresses, agent names
    and numbers blanked out), most frequent first."""
    counts: Counter[str] = Counter()
    for line in lines:
        line = _LOG_PREFIX.sub("", line.strip())
        if line:
            counts[_VARYING.sub("#", line)[:200]] += 1
    return [(count, kind) for kind, count in counts.most_common(top)]


class WarningCounter(logging.Handler):
    """Counts the server's warnings and errors by kind: a fleet that keeps reconnecting, or a
    server refusing agents, shows here rather than only in the timings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# Waiting ------------------------------------------------------------------------------------------


async def wait_until(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Callable[[], str],
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``done`` until it is true. Raises BenchmarkError after ``timeout`` seconds or as
    soon as ``alive`` names a reason to give up (a child process died)."""
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


# The hunts ----------------------------------------------------------------------------------------


def hunt_finished(counts: dict[str, int], agents: int) -> bool:
    """Every client has an outcome, and none is still being checked, waiting or running."""
    return (
        sum(counts[queue] for queue in FINISHED_QUEUES) >= agents
        and counts["pending"] == 0
        and counts["running"] == 0
        and counts[CHECKING] == 0
    )


def describe_counts(counts: dict[str, int]) -> str:
    """The counts as one line of text, for progress and errors."""
    return ", ".join(f"{queue} {value}" for queue, value in counts.items())


def conditions_judged(counts: dict[str, int], agents: int) -> bool:
    """Every client's condition has been judged (it matched, or did not, or failed)."""
    judged = sum(counts[queue] for queue in (*FINISHED_QUEUES, "pending", "running"))
    return judged >= agents and counts[CHECKING] == 0


@dataclass
class HuntOutcome:
    """One timed hunt."""

    hunt_id: str
    seconds: float
    judged_seconds: float  # until every client's condition was judged
    counts: dict[str, int]
    server_cpu: float
    fleet_cpu: float
    commits: int
    operations: int


async def timed_hunt(server: Server, query: str, agents: int, timeout: float,
                     fleet: psutil.Process, fleet_alive: Callable[[], str | None],
                     profile_path: Path | None) -> HuntOutcome:
    """Create and start a hunt at rate 0 and wait until every client is finished.
    Raises BenchmarkError when that takes longer than ``timeout`` seconds."""
    service = server.service("bench")
    me = psutil.Process()
    profiler = cProfile.Profile() if profile_path is not None else None
    cpu_before, fleet_before = cpu_seconds(me), cpu_seconds(fleet)
    commits_before, operations_before = server.db.store.commits, server.db.store.operations
    if profiler is not None:
        profiler.enable()
    began = time.perf_counter()
    try:
        hunt_id = (await service.create_hunt(query=query, rate=0, start=True))["hunt_id"]
        counts = server.hunts.get(hunt_id).counts  # the live dict the hunt manager updates
        judged_at: list[float] = []

        def finished() -> bool:
            if not judged_at and conditions_judged(counts, agents):
                judged_at.append(time.perf_counter() - began)
            return hunt_finished(counts, agents)

        await wait_until(finished, timeout, f"hunt {hunt_id}", lambda: describe_counts(counts),
                         fleet_alive)
        seconds = time.perf_counter() - began
    finally:
        if profiler is not None:
            profiler.disable()
    if profiler is not None and profile_path is not None:
        profiler.dump_stats(profile_path)
        report_profile(profiler, profile_path)
    return HuntOutcome(
        hunt_id=hunt_id, seconds=seconds, judged_seconds=judged_at[0] if judged_at else seconds,
        counts=dict(counts),
        server_cpu=cpu_seconds(me) - cpu_before, fleet_cpu=cpu_seconds(fleet) - fleet_before,
        commits=server.db.store.commits - commits_before,
        operations=server.db.store.operations - operations_before,
    )


def report_profile(profiler: cProfile.Profile, path: Path, top: int = 30) -> None:
    """The heaviest functions of the event loop's thread (the store's writer thread is not
    profiled: cProfile sees one thread) on standard error; the full profile is in ``path``."""
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(top)
        say(f"profile by {order} (full profile: {path}):\n{text.getvalue()}")


# Baselines ----------------------------------------------------------------------------------------


async def _echo(connection: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):  # a client going away is no error here
        async for message in connection:
            await connection.send(message)


async def roundtrip_seconds(datastore: Datastore, connections: int, folder: Path,
                            timeout: float) -> tuple[list[float], float]:
    """The round-trip baseline: (the seconds of each of ``ROUNDTRIP_ROUNDS`` rounds of one
    message and its reply on every one of ``connections`` connections at once, the seconds it
    took to open them).

    The echo server runs here with the server's own TLS certificate and the same websocket
    options as the agent listener, so that the transport costs the same; the connections are
    held by ``roundtrip_fleet roundtrip`` in another process. Raises BenchmarkError when it
    fails."""
    context = server_ssl_context(datastore.server_cert_path, datastore.server_key_path)
    ca_path = folder / "ca.pem"
    ca_path.write_text(datastore.ca_pem(), encoding="ascii")
    async with serve(
        _echo, "127.0.0.1", 0, ssl=context, max_size=protocol.MAX_FRAME_BYTES,
        compression=None, ping_interval=20, ping_timeout=60, close_timeout=5,
    ) as echo:
        port = echo.sockets[0].getsockname()[1]
        errors_path = folder / "roundtrip.log"
        # Its errors go to a file: a pipe nobody reads while it runs could fill and stall it.
        with open(errors_path, "ab") as errors_file:
            client = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.roundtrip_fleet", "roundtrip",
                 "--url", f"wss://127.0.0.1:{port}/", "--ca", str(ca_path),
                 "--connections", str(connections)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors_file,
                text=True, bufsize=1, start_new_session=True,
            )
        try:
            opened = await _read_event(client, "open", timeout, errors_path)
            assert client.stdin is not None
            rounds = []
            for _ in range(ROUNDTRIP_ROUNDS):
                client.stdin.write("go\n")
                client.stdin.flush()
                measured = await _read_event(client, "roundtrip", timeout, errors_path)
                rounds.append(float(measured["seconds"]))
            client.stdin.write("close\n")
            client.stdin.flush()
            # Let it close its connections itself, so that the echo server sees clean closes.
            deadline = time.monotonic() + 30.0
            while client.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await stop_process(client, grace=10.0)
            for stream in (client.stdin, client.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
    return rounds, float(opened["seconds"])


async def _read_event(process: subprocess.Popen[str], event: str, timeout: float,
                      errors_path: Path) -> dict[str, Any]:
    assert process.stdout is not None
    stdout = process.stdout
    try:
        # A thread reads the pipe: the echo server in this loop must keep answering meanwhile.
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), timeout)
    except TimeoutError:
        raise BenchmarkError(f"round trip: no {event!r} within {timeout:g} s") from None
    if not line:
        process.wait()
        raise BenchmarkError(f"round trip: the client process ended ({process.returncode}):"
                             f" {tail(errors_path)}")
    message = json.loads(line)
    if message.get("event") != event:
        raise BenchmarkError(f"round trip: expected {event!r}, got {line.strip()}")
    return message


def sqlite_rows_per_s(path: Path, client_ids: list[str], flow_id: str, rows_per_client: int
                      ) -> tuple[float, int, float]:
    """The ingest baseline: (rows per second, rows, seconds).

    What a generic store would do with the same rows, as fast as SQLite goes from Python: a fresh
    database file with the store's pragmas (WAL, synchronous=FULL), one table keyed like
    ``flow_rows`` by (client_id, flow_id, seq) with each row as its own JSON text, and all the
    rows in one ``executemany`` in one transaction. The clock covers turning the rows into JSON,
    the insert and the commit (a full sync); the rows start as the Python dicts that a decoded
    agent message holds, built before the clock starts."""
    rows = [{"N": value, "Pad": PAD} for value in range(rows_per_client)]
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(
            "CREATE TABLE rows (client_id TEXT NOT NULL, flow_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (client_id, flow_id, seq))"
        )
        began = time.perf_counter()
        parameters = [
            (client_id, flow_id, seq, json.dumps(row))
            for client_id in client_ids
            for seq, row in enumerate(rows)
        ]
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", parameters)
        connection.execute("COMMIT")
        seconds = time.perf_counter() - began
    finally:
        connection.close()
    count = len(client_ids) * rows_per_client
    return count / seconds, count, seconds


# Memory -------------------------------------------------------------------------------------------


def report_tracemalloc(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, agents: int,
                       top: int = 25) -> None:
    """Where the Python heap grew while the agents connected, per agent, by the line that
    allocated it. (OpenSSL's buffers are allocated outside Python and do not appear.)"""
    stats = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in stats)
    lines = [f"tracemalloc: the Python heap grew {total / agents / 1024:.1f} KB per agent;"
             f" largest growth by line, per agent:"]
    for stat in stats[:top]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size_diff / agents / 1024:8.2f} KB"
                     f" {stat.count_diff / agents:7.1f} blocks  {frame.filename}:{frame.lineno}")
    lines.append("by file, per agent:")
    for stat in after.compare_to(before, "filename")[:top]:
        lines.append(f"  {stat.size_diff / agents / 1024:8.2f} KB"
                     f" {stat.count_diff / agents:7.1f} blocks  {stat.traceback[0].filename}")
    say("\n".join(lines))


# The run ------------------------------------------------------------------------------------------


async def run_benchmark(options: Options, folder: Path,
                        children: list[subprocess.Popen[Any]]) -> Figures:
    """Run every phase in ``folder`` (which the caller removes); every process started is put
    in ``children`` at once, so the caller can kill what this could not stop.
    Raises BenchmarkError when a phase fails."""
    agents = options.agents
    figures = Figures(agents=agents, rows_per_client=options.rows)
    values = figures.values
    me = psutil.Process()
    warnings = WarningCounter()
    logging.getLogger().addHandler(warnings)
    datastore = Datastore.open(folder / "datastore")
    server = Server(datastore, "127.0.0.1:0")
    server.agent_gate = AgentGate.for_own_fleet(agents)  # N new agents at once, on purpose
    await server.start()
    fleet_process: subprocess.Popen[bytes] | None = None
    try:
        # The store opens its readers on the first read: open them now, so that they are not
        # counted as the agents' memory.
        await server.db.store.fetch_one("SELECT 1")
        say(f"server on {server.url}, datastore {datastore.root}")
        rss_before = rss_bytes()

        config_path = await write_agent_config(datastore, server.url, folder / "agent.json")
        fleet_log = folder / "fleet.log"
        fleet_arguments = ["--config", str(config_path), "--state", str(folder / "fleet"),
                           "--simulate", str(agents)]
        command = [*agent_command(), *fleet_arguments]
        if options.profile_dir is not None:
            # The fleet's whole life, written when it exits after SIGTERM.
            command = [sys.executable, "-m", "cProfile", "-o",
                       str(options.profile_dir / "fleet.prof"), "-m", "agent.main",
                       *fleet_arguments]
        say(f"starting the fleet: {' '.join(command)}")
        if options.tracemalloc:
            tracemalloc.start()
            heap_before = tracemalloc.take_snapshot()
        with open(fleet_log, "ab") as log_file:
            began = time.perf_counter()
            # Its own session: a Ctrl-C here reaches this process only, which then stops the
            # fleet in order (SIGTERM, then SIGKILL), instead of both racing to shut down.
            fleet_process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        children.append(fleet_process)
        fleet = psutil.Process(fleet_process.pid)
        running_fleet = fleet_process

        def fleet_alive() -> str | None:
            if running_fleet.poll() is None:
                return None
            return (f"the fleet exited with status {running_fleet.returncode}; its log ends:\n"
                    + tail(fleet_log))

        sessions = server.directory.sessions
        await wait_until(lambda: len(sessions) >= agents, options.connect_timeout,
                         "connecting", lambda: f"{len(sessions)} of {agents} online",
                         fleet_alive)
        values["connect_seconds"] = round(time.perf_counter() - began, 2)
        say(f"all {agents} agents online after {values['connect_seconds']:.1f} s;"
            f" settling for {options.settle:g} s")
        await asyncio.sleep(options.settle)
        if len(sessions) != agents:
            raise BenchmarkError(f"{len(sessions)} agents online after settling, not {agents}")
        if options.tracemalloc:
            report_tracemalloc(heap_before, tracemalloc.take_snapshot(), agents)
            tracemalloc.stop()
        rss_after = rss_bytes()
        values["kb_per_agent"] = round((rss_after - rss_before) / agents / 1024, 1)
        values["server_rss_mb_idle"] = round(rss_after / 2**20, 1)
        values["fleet_rss_mb_idle"] = round(rss_bytes(fleet) / 2**20, 1)

        profile_dir = options.profile_dir
        # The VQL parser is built on first use: a running server has paid for that long before
        # its first big hunt, so it is not counted in this one.
        check_vql("SELECT * FROM scope()")
        say(f"hunt: {HUNT_QUERY}")
        hunt = await timed_hunt(server, HUNT_QUERY, agents, options.hunt_timeout, fleet,
                                fleet_alive,
                                profile_dir / "hunt.prof" if profile_dir else None)
        values["hunt_seconds"] = round(hunt.seconds, 3)
        values["hunt_judged_seconds"] = round(hunt.judged_seconds, 3)
        values["errors"] = hunt.counts["errors"]
        values["not_matched"] = hunt.counts["not_matched"]
        values["hunt_counts"] = hunt.counts
        values["hunt_server_cpu_s"] = round(hunt.server_cpu, 2)
        values["hunt_fleet_cpu_s"] = round(hunt.fleet_cpu, 2)
        values["hunt_commits"] = hunt.commits
        values["hunt_write_ops"] = hunt.operations
        say(f"  finished in {hunt.seconds:.2f} s: {describe_counts(hunt.counts)}")

        ingest_query = INGEST_QUERY.format(rows=options.rows)
        say(f"ingest hunt: {ingest_query}")
        ingest = await timed_hunt(server, ingest_query, agents, options.hunt_timeout, fleet,
                                  fleet_alive,
                                  profile_dir / "ingest.prof" if profile_dir else None)
        stored = await server.db.store.fetch_one(
            "SELECT COALESCE(SUM(row_count), 0) AS n FROM flow_rows WHERE flow_id = ?",
            (hunt_flow_id(ingest.hunt_id),),
        )
        ingest_rows = int(stored["n"]) if stored is not None else 0
        values["ingest_rows"] = ingest_rows
        values["ingest_seconds"] = round(ingest.seconds, 3)
        values["ingest_rows_per_s"] = round(ingest_rows / ingest.seconds)
        values["ingest_judged_seconds"] = round(ingest.judged_seconds, 3)
        values["ingest_errors"] = ingest.counts["errors"]
        values["ingest_not_matched"] = ingest.counts["not_matched"]
        values["ingest_server_cpu_s"] = round(ingest.server_cpu, 2)
        values["ingest_fleet_cpu_s"] = round(ingest.fleet_cpu, 2)
        values["ingest_commits"] = ingest.commits
        values["ingest_write_ops"] = ingest.operations
        say(f"  finished in {ingest.seconds:.2f} s: {describe_counts(ingest.counts)};"
            f" {ingest_rows} rows stored")
        client_ids = sorted(sessions)

        say("stopping the fleet")
        await stop_process(fleet_process)
        fleet_process = None
        fleet_lines = tail(fleet_log, lines=10**9).splitlines()
        values["fleet_log_lines"] = len(fleet_lines)
        values["fleet_log_kinds"] = message_kinds(fleet_lines)

        say(f"round-trip baseline: {agents} plain websocket connections")
        rounds, opening = await roundtrip_seconds(datastore, agents, folder,
                                                  options.hunt_timeout)
        roundtrip = statistics.median(rounds)
        values["roundtrip_seconds"] = round(roundtrip, 4)
        values["roundtrip_rounds"] = [round(seconds, 4) for seconds in rounds]
        values["roundtrip_open_seconds"] = round(opening, 2)

        say("SQLite baseline")
        sqlite_rate, sqlite_rows, sqlite_seconds = await asyncio.to_thread(
            sqlite_rows_per_s, folder / "baseline.sqlite", client_ids,
            hunt_flow_id(ingest.hunt_id), options.rows)
        values["sqlite_rows_per_s"] = round(sqlite_rate)
        values["sqlite_rows"] = sqlite_rows
        values["sqlite_seconds"] = round(sqlite_seconds, 3)

        values["hunt_vs_roundtrip"] = round(hunt.seconds / roundtrip, 2)
        values["ingest_vs_sqlite"] = round(values["ingest_rows_per_s"] / sqlite_rate, 3)
        values["server_cpu_s_total"] = round(cpu_seconds(me), 1)
        values["server_warnings"] = len(warnings.messages)
        values["server_warning_kinds"] = message_kinds(warnings.messages)
    finally:
        logging.getLogger().removeHandler(warnings)
        if fleet_process is not None:
            say("stopping the fleet")
            await stop_process(fleet_process)
        await server.stop()
    return figures


def print_figures(figures: Figures) -> None:
    """The human-readable lines, then the JSON line."""
    values = figures.values
    agents = figures.agents
    lines = [
        f"agents: {agents} simulated agents in one separate process (velotui-agent --simulate)",
        f"connect: all online {values['connect_seconds']} s after the fleet process started"
        " (includes creating keys on a first run and the agents' staggered start)",
        f"memory: {values['kb_per_agent']} KB of server RSS per idle connected agent"
        f" (server RSS {values['server_rss_mb_idle']} MB idle with all connected;"
        f" fleet process {values['fleet_rss_mb_idle']} MB)",
        f"hunt: {values['hunt_seconds']} s from create-and-start to every client finished"
        f" ({HUNT_QUERY!r}, rate 0; every condition judged after"
        f" {values['hunt_judged_seconds']} s); errors {values['errors']},"
        f" not matched {values['not_matched']};"
        f" server CPU {values['hunt_server_cpu_s']} s, fleet CPU {values['hunt_fleet_cpu_s']} s;"
        f" {values['hunt_commits']} commits of {values['hunt_write_ops']} writes",
        f"round trip: {values['roundtrip_seconds']} s for one 64-byte message and its echo on"
        f" each of {agents} plain websocket connections at once (median of"
        f" {values['roundtrip_rounds']}; echo server in the server's process with the"
        " datastore's TLS certificate and the agent listener's options; connections from a"
        f" separate process, opened in {values['roundtrip_open_seconds']} s)",
        f"hunt_vs_roundtrip: {values['hunt_vs_roundtrip']}",
        f"ingest: {values['ingest_rows_per_s']} rows/s ({values['ingest_rows']} rows,"
        f" {figures.rows_per_client} per client, in {values['ingest_seconds']} s from"
        f" create-and-start to every client finished; errors {values['ingest_errors']},"
        f" not matched {values['ingest_not_matched']};"
        f" server CPU {values['ingest_server_cpu_s']} s, fleet CPU"
        f" {values['ingest_fleet_cpu_s']} s; {values['ingest_commits']} commits of"
        f" {values['ingest_write_ops']} writes)",
        f"sqlite: {values['sqlite_rows_per_s']} rows/s ({values['sqlite_rows']} rows in"
        f" {values['sqlite_seconds']} s: json.dumps of each row, then one executemany of"
        " (client_id, flow_id, seq, json) into a fresh table keyed by (client_id, flow_id, seq),"
        " WAL, synchronous=FULL, one transaction, commit included)",
        f"ingest_vs_sqlite: {values['ingest_vs_sqlite']}",
    ]
    for count_key, kinds_key, what in (
        ("server_warnings", "server_warning_kinds", "server warnings and errors"),
        ("fleet_log_lines", "fleet_log_kinds", "lines in the fleet's log (warnings, errors)"),
    ):
        if values[count_key]:
            kinds = "; ".join(f"{count} x {kind}" for count, kind in values[kinds_key])
            lines.append(f"{values[count_key]} {what}; most common: {kinds}")
    for name in ("not_matched", "ingest_not_matched"):
        if values[name]:
            # Every simulated agent's info() returns a row and there is no server-side
            # condition, so every client must match: anything else is a server bug.
            lines.append(f"WRONG: {name} is {values[name]}; every client should have matched")
    for name, (sense, limit) in TARGETS.items():
        value = values[name]
        met = value <= limit if sense == "at most" else value >= limit
        lines.append(f"target {name} {sense} {limit:g} (at N=2,000): {value}"
                     f" {'met' if met else 'MISSED'}")
    print("\n".join(lines))
    print(figures.as_json(), flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.server``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server",
        description="Time hunts over a simulated fleet against plain-websocket and raw-SQLite"
        " baselines measured in the same run; the last line of output is JSON.",
    )
    parser.add_argument("--agents", type=int, required=True, metavar="N",
                        help="how many simulated agents")
    parser.add_argument("--rows", type=int, metavar="R",
                        help="rows per client in the ingest hunt"
                        f" (default: {DEFAULT_TOTAL_ROWS:,} in all)")
    parser.add_argument("--settle", type=float, default=3.0, metavar="S",
                        help="seconds to wait once all are online, before measuring memory")
    parser.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                        help="give up when the fleet is not online by then"
                        " (default: 120 s + 60 ms per agent)")
    parser.add_argument("--hunt-timeout", type=float, default=900.0, metavar="S",
                        help="give up on a hunt or a baseline taking longer (default 900)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="profile the server's event loop during each hunt (hunt.prof,"
                        " ingest.prof; the top on standard error) and the fleet's whole life"
                        " (fleet.prof) with cProfile, in DIR; slows everything down")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="report where the Python heap grows as agents connect (slows"
                        " connecting and inflates kb_per_agent: a diagnosis, not a figure)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every phase finished, 1 when one failed, 2 for wrong usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error("--agents must be 1 or more")
    rows = args.rows if args.rows is not None else max(1, round(DEFAULT_TOTAL_ROWS / args.agents))
    if rows < 1:
        parser.error("--rows must be 1 or more")
    options = Options(
        agents=args.agents, rows=rows, settle=args.settle,
        connect_timeout=(args.connect_timeout if args.connect_timeout is not None
                         else 120.0 + 0.06 * args.agents),
        hunt_timeout=args.hunt_timeout, profile_dir=args.profile, tracemalloc=args.tracemalloc,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit = raise_open_files_limit()
    if limit < 2 * args.agents + 256:
        say(f"warning: {limit} open files allowed; {args.agents} agents need about"
            f" {args.agents + 256} here and as many in the fleet process")
    if options.profile_dir is not None:
        options.profile_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="velotui-bench-"))
    children: list[subprocess.Popen[Any]] = []
    try:
        figures = asyncio.run(_run_stoppable(options, folder, children))
    except BenchmarkError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 1
    finally:
        for child in children:
            kill_now(child)
        shutil.rmtree(folder, ignore_errors=True)
    print_figures(figures)
    return 0


async def _run_stoppable(options: Options, folder: Path,
                         children: list[subprocess.Popen[Any]]) -> Figures:
    # SIGTERM cancels the run as Ctrl-C does (asyncio.run handles SIGINT), so the cleanup in
    # run_benchmark's finally blocks runs either way.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_benchmark(options, folder, children)


if __name__ == "__main__":
    sys.exit(main())
