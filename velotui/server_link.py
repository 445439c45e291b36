"""How the console reaches a server: one embedded in its own event loop (with an optional demo
fleet of local agents), or one already running elsewhere, through the operator API.

Either way the console gets an object with the operator API's methods (``Service`` in process,
``RemoteService`` over the network), called with keyword arguments only, so the screens do not
care which it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService
from velotui.server.server import DEFAULT_LISTEN, Server
from velotui.server.sessions import AgentGate


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
    """A server in the console's own event loop, and optionally ``demo`` simulated agents."""

    datastore_path: Path | None = None
    listen: str = DEFAULT_LISTEN
    demo: int = 0
    server: Server | None = None
    fleet: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    async def start(self) -> Any:
        datastore = Datastore.open(self.datastore_path)
        self.server = Server(datastore, self.listen)
        await self.server.start()
        self.description = self.server.url
        self.api = self.server.service(f"console:{_user()}")
        if self.demo:
            self.fleet = start_demo_fleet(self.server, self.demo)
        return self.api

    async def stop(self) -> None:
        if self.fleet is not None:
            # In a thread: the agents' goodbyes need this loop's server to answer them.
            await asyncio.to_thread(stop_process, self.fleet)
            self.fleet = None
        if self.server is not None:
            await self.server.stop()
            self.server = None


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


def start_demo_fleet(server: Server, count: int) -> subprocess.Popen[bytes]:
    """``count`` simulated agents in one child process, enrolled with this server; their state
    and log live in the datastore's ``demo`` folder so a restart reuses their identities."""
    from agent.config import AgentConfig

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
    log = open(folder / "fleet.log", "ab")  # noqa: SIM115 - the child keeps it for its life
    return subprocess.Popen(
        [*command, "--config", str(config), "--state", str(folder / "fleet"),
         "--simulate", str(count)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,  # a Ctrl-C in the console is the console's, not the fleet's
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
