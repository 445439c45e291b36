"""The server a console embeds, run as the console's child process.

    python -m velotui.embedded_server [--datastore DIR] [--listen HOST:PORT] [--demo N]
                                      [--demo-processes P] [--operator NAME] [--database URL]

The console (``velotui`` with no command) starts this and talks to it through the operator API,
as ``--connect`` does: the server's agent traffic, commits, VQL and garbage collections run in a
process of their own, so they never hold the console's interpreter (a thread would share its
lock) and a frame never waits on them. It is still one command and one process tree for the
operator.

Once listening it writes one JSON line to standard output, ``{"url", "token", "ca_pem",
"agent_url"}``, or ``{"error"}`` and exits 1 when it cannot start. It runs until its standard
input ends (the console closed it, or died) or SIGTERM, then stops its demo fleet, then
itself, finishing its queued writes. From then on what it writes to standard error goes to
``<datastore>/logs/embedded.stderr``; its log to ``server.log`` there, as ``velotui serve``'s.

The console acts as an operator: ``--operator NAME``, else the operator named as the local user
if there is one, else the admin whose token is the datastore's ``api_token`` (the local user
owns the datastore, so may act as any of its operators).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from velotui.cli.server_commands import PRIVATE_UMASK, configure_logging
from velotui.server.data import DatabaseUnreachable
from velotui.server.datastore import Datastore, DatastoreError, checked_database_url
from velotui.server.server import DEFAULT_LISTEN, Server, parse_listen
from velotui.server.sessions import AgentGate

AGENTS_PER_FLEET_PROCESS = 5000
"""Simulated agents per demo fleet process: each is a socket (open files are limited per
process), and a bigger fleet is split so its processes share the connection work."""
STDERR_NAME = "embedded.stderr"
SERVER_NICENESS = 5
DEMO_FLEET_NICENESS = 5  # more, on top of the server's


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m velotui.embedded_server")
    parser.add_argument("--datastore", type=Path, default=None)
    parser.add_argument("--listen", default=DEFAULT_LISTEN)
    parser.add_argument("--demo", type=int, default=0)
    parser.add_argument("--demo-processes", type=int, default=None)
    parser.add_argument("--operator", default=None)
    parser.add_argument("--database", default=None)
    args = parser.parse_args(argv)
    os.umask(PRIVATE_UMASK)  # the database, logs, uploads and exports are its user's alone
    # The operator's keys and frames come first when the cores are short: the console is idle
    # most of the time, and then the server has them all.
    os.nice(SERVER_NICENESS)
    try:
        parse_listen(args.listen)
        datastore = Datastore.open(args.datastore)
        checked_database_url(args.database)
        configure_logging(datastore, verbose=False, to_stderr=False)  # server.log only
    except (ValueError, DatastoreError, OSError) as error:
        return _refuse(str(error))
    server = Server(datastore, args.listen, database=args.database)
    return asyncio.run(_run(server, args.demo, args.demo_processes, args.operator))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container)
        return "unknown"


def console_operator(server: Server, requested: str | None) -> str:
    """The operator the console acts as (see the module's notes). Raises ValueError."""
    operators = server.operators
    if requested:
        if operators.get(requested) is None:
            raise ValueError(f"no operator {requested!r} (see: velotui operator list)")
        return requested
    if operators.get(_user()) is not None:
        return _user()
    first = operators.by_token(server.datastore.api_token())
    if first is None:
        raise ValueError("the admin of the api_token file was removed: give --operator NAME")
    return first.name


def _refuse(reason: str) -> int:
    print(json.dumps({"error": reason}), flush=True)
    return 1


async def _run(server: Server, demo: int, demo_processes: int | None,
               operator: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await server.start()
    except DatabaseUnreachable as error:
        return _refuse(str(error))
    except OSError as error:
        with contextlib.suppress(Exception):
            await server.stop()
        return _refuse(f"cannot listen on {server.host}:{server.port}: {error.strerror}")
    try:
        acting_as = console_operator(server, operator)
    except ValueError as error:
        await server.stop()
        return _refuse(str(error))
    fleet: list[subprocess.Popen[bytes]] = []
    try:
        if demo:
            processes = demo_processes or math.ceil(demo / AGENTS_PER_FLEET_PROCESS)
            fleet = start_demo_fleet(server, demo, processes)
        # A token of the console's own, for this run, standing for the operator it acts as.
        token = secrets.token_urlsafe(32)
        server.add_operator_token(token, acting_as)
        datastore = server.datastore
        print(json.dumps({"url": server.url, "agent_url": server.agent_url, "token": token,
                          "ca_pem": datastore.ca_pem()}), flush=True)
        _stderr_to(datastore.logs_dir / STDERR_NAME)
        # The console closes our standard input to stop us; so does its death, however abrupt.
        watcher = asyncio.ensure_future(_input_ends())
        watcher.add_done_callback(lambda _: stop.set())
        try:
            await stop.wait()
        finally:
            watcher.cancel()
    finally:
        if fleet:  # first: their goodbyes need the server
            await asyncio.to_thread(stop_processes, fleet)
        await server.stop()
    return 0


async def _input_ends() -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


def _stderr_to(path: Path) -> None:
    """Standard error from now on into ``path``: the console reads ours only until we are
    ready, and a pipe nobody reads would block us once full."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(descriptor, sys.stderr.fileno())
    os.close(descriptor)


def start_demo_fleet(server: Server, count: int, processes: int = 1
                     ) -> list[subprocess.Popen[bytes]]:
    """``count`` simulated agents in ``processes`` child processes, enrolled with this server;
    their state and log live in the datastore's ``demo`` folder so a restart reuses their
    identities. Split over several processes, each gets the simulated hosts of its share of the
    indexes (a facts file), so the fleet has ``count`` different hosts either way."""
    from agent.config import AgentConfig
    from agent.plugins.facts import simulated_facts

    server.agent_gate = AgentGate.for_own_fleet(count)  # they all come at once, on purpose
    folder = server.datastore.root / "demo"
    folder.mkdir(mode=0o700, exist_ok=True)
    config = folder / "agent.json"
    AgentConfig(
        server_url=server.agent_url,
        ca_pem=server.datastore.ca_pem(),
        enrolment_secret=server.datastore.enrolment_secret(),
        labels=["Demo"],
        poll_interval=30.0,
        max_backoff=5.0,
    ).save(config)
    agent = Path(sys.executable).parent / "velotui-agent"
    command = [str(agent)] if agent.exists() else [sys.executable, "-m", "agent.main"]
    processes = max(1, min(processes, count))
    fleet = []
    with open(folder / "fleet.log", "ab") as log:  # each child keeps its own copy open
        for index in range(processes):
            first, last = count * index // processes, count * (index + 1) // processes
            options = ["--state", str(folder / "fleet"), "--simulate", str(last - first)]
            if processes > 1:
                facts = folder / f"facts-{index}.json"
                facts.write_text(json.dumps([simulated_facts(n) for n in range(first, last)]))
                options = ["--state", str(folder / f"fleet-{index}"),
                           "--simulate", str(last - first), "--facts", str(facts)]
            fleet.append(subprocess.Popen(
                [*command, "--config", str(config), *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # a Ctrl-C in the console is the console's, not theirs
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Stand-ins for other machines: on this one they come after the console and
                # the server whenever the cores are short.
                preexec_fn=_lower_priority,
            ))
    return fleet


def _lower_priority() -> None:
    os.nice(DEMO_FLEET_NICENESS)


def stop_processes(processes: list[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """SIGTERM to all of them at once, then SIGKILL to any still there after ``timeout``."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
