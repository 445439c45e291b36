"""How the console reaches a server: one embedded in this process, on its own event loop and
thread (with an optional demo fleet of local agents), or one already running elsewhere, through
the operator API.

Either way the console gets an object with the operator API's methods (``ThreadedService`` for
the embedded server, ``RemoteService`` over the network), called with keyword arguments only,
so the screens do not care which it is, and neither ever runs server work on the console's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService
from velotui.server.server import DEFAULT_LISTEN, Server
from velotui.server.sessions import AgentGate
from velotui.server_thread import ServerThread, ThreadedService

AGENTS_PER_FLEET_PROCESS = 5000
"""Simulated agents per demo fleet process: each is a socket (open files are limited per
process), and a bigger fleet is split so its processes share the connection work."""


class ServerLink:
    """Starts (or connects to) a server; ``api`` is its operator API once started."""

    api: Any
    description: str = ""

    async def start(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class EmbeddedLink(ServerLink):
    """A server in this process on its own thread and event loop (``server_thread``), and
    optionally ``demo`` simulated agents in ``demo_processes`` child processes (by default one
    per AGENTS_PER_FLEET_PROCESS).

    ``start`` (awaited on the console's loop) opens the datastore and starts the server over
    there, then the fleet; ``stop`` stops the fleet, then the server, then the thread, and
    returns once the thread has ended. Both only await the server's loop, never block the
    console's."""

    datastore_path: Path | None = None
    listen: str = DEFAULT_LISTEN
    demo: int = 0
    demo_processes: int | None = None
    server: Server | None = None
    server_thread: ServerThread | None = field(default=None, repr=False)
    fleet: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    async def start(self) -> Any:
        self.server_thread = ServerThread()
        self.server_thread.start()
        try:
            service = await self.server_thread.run(self._start_server())
        except BaseException:
            await self.stop()
            raise
        self.description = service.server.url
        self.api = ThreadedService(service, self.server_thread)
        return self.api

    async def _start_server(self) -> Any:
        """On the server's loop."""
        datastore = Datastore.open(self.datastore_path)
        server = Server(datastore, self.listen)
        try:
            await server.start()
        except BaseException:
            # The address taken, say: what it opened (the store and its threads) is closed.
            # Its own failure to close, if any, would hide why it could not start.
            with contextlib.suppress(Exception):
                await server.stop()
            raise
        self.server = server
        if self.demo:
            processes = self.demo_processes or math.ceil(self.demo / AGENTS_PER_FLEET_PROCESS)
            self.fleet = start_demo_fleet(server, self.demo, processes)
        return server.service(f"console:{_user()}")

    async def stop(self) -> None:
        server_thread, self.server_thread = self.server_thread, None
        if server_thread is None:
            return
        try:
            if server_thread.running:
                await server_thread.run(self._stop_server())
        finally:  # whatever happened there, the thread ends
            await server_thread.stop()

    async def _stop_server(self) -> None:
        """On the server's loop: the fleet first (its agents' goodbyes need the server), then
        the server, which finishes its queued writes."""
        fleet, self.fleet = self.fleet, []
        if fleet:
            await asyncio.to_thread(stop_processes, fleet)
        server, self.server = self.server, None
        if server is not None:
            await server.stop()


@dataclass
class RemoteLink(ServerLink):
    """A server already running (``velotui serve``), reached through its operator API."""

    url: str = ""
    token: str = ""
    ca_pem: str = ""

    async def start(self) -> Any:
        self.api = await RemoteService.connect(self.url, self.token, self.ca_pem)
        self.description = f"{self.url} (connected)"
        return self.api

    async def stop(self) -> None:
        if getattr(self, "api", None) is not None:
            await self.api.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container)
        return "unknown"


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
            ))
    return fleet


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
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
