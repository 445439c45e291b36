"""How the console reaches a server: one it embeds, run as its child process (with an optional
demo fleet of local agents), or one already running elsewhere (``--connect``).

Either way the console gets a ``RemoteService``: the operator API's methods, called with keyword
arguments only, over a websocket, so the screens do not care which it is, and no server work
ever runs in the console's process (not even on another thread: a thread would share the
console's interpreter lock, and a server's garbage collection or long C call would stall its
frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velotui.server.errors import ServiceError
from velotui.server.remote import RemoteService
from velotui.server.server import DEFAULT_LISTEN

STOP_TIMEOUT = 30.0
"""Seconds the embedded server may take to finish its queued writes once asked to stop."""


class ServerLink:
    """Starts (or connects to) a server; ``api`` is its operator API once started."""

    api: Any
    description: str = ""
    can_reconnect = False
    """Whether ``reconnect`` may bring back a server that went away (one the console does
    not run itself: it may be restarted)."""

    async def start(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    async def reconnect(self) -> Any:
        """A new connection to the server; raises ServiceError while it cannot be reached."""
        raise ServiceError("the console's own server cannot be reconnected to")

    @property
    def server_address(self) -> str:
        return self.description

    async def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class EmbeddedServerError(ServiceError):
    """The embedded server could not start; the message says why, in one line."""


@dataclass
class EmbeddedLink(ServerLink):
    """A server run by ``python -m velotui.embedded_server`` as this process's child, and
    optionally ``demo`` simulated agents (in ``demo_processes`` processes of their own, by
    default one per 5,000).

    ``start`` waits for it to listen, then connects to it; ``stop`` disconnects and closes
    its standard input, upon which it stops its fleet, then itself (its queued writes
    finished), and returns once it has exited. The server also stops when this process dies,
    however abruptly: its standard input ends then too."""

    datastore_path: Path | None = None
    listen: str = DEFAULT_LISTEN
    demo: int = 0
    demo_processes: int | None = None
    operator: str | None = None  # who the console acts as (None: the server's default)
    database: str | None = None  # a PostgreSQL URL to record in the datastore (None: as it is)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    server_url: str = ""

    async def start(self) -> Any:
        command = [sys.executable, "-m", "velotui.embedded_server", "--listen", self.listen,
                   "--demo", str(self.demo)]
        if self.datastore_path is not None:
            command += ["--datastore", str(self.datastore_path)]
        if self.demo_processes is not None:
            command += ["--demo-processes", str(self.demo_processes)]
        if self.operator:
            command += ["--operator", self.operator]
        if self.database is not None:
            command += ["--database", self.database]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the console is the console's, not its
        )
        try:
            ready = await self._ready()
            self.api = await RemoteService.connect(ready["url"], ready["token"], ready["ca_pem"])
        except BaseException:
            await self.stop()
            raise
        self.server_url = self.description = ready["url"]
        return self.api

    async def _ready(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await self.process.stdout.readline()
        with contextlib.suppress(ValueError):
            ready = json.loads(line)
            if isinstance(ready, dict) and "url" in ready:
                return ready
            if isinstance(ready, dict) and "error" in ready:
                raise EmbeddedServerError(str(ready["error"]))
        # It died before it could say (a broken installation): its last words, if any.
        assert self.process.stderr is not None
        said = (await self.process.stderr.read()).decode(errors="replace").strip()
        status = await self.process.wait()
        last = said.splitlines()[-1] if said else f"it ended with status {status}"
        raise EmbeddedServerError(f"the embedded server did not start: {last}")

    async def stop(self) -> None:
        api, self.api = getattr(self, "api", None), None
        if api is not None:
            with contextlib.suppress(Exception):
                await api.close()
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@dataclass
class RemoteLink(ServerLink):
    """A server already running (``velotui serve``), reached through its operator API."""

    url: str = ""
    token: str = ""
    ca_pem: str = ""
    can_reconnect = True

    async def start(self) -> Any:
        self.api = await RemoteService.connect(self.url, self.token, self.ca_pem)
        self.description = f"{self.url} (connected)"
        return self.api

    async def reconnect(self) -> Any:
        await self.stop()
        return await self.start()

    @property
    def server_address(self) -> str:
        return self.url

    async def stop(self) -> None:
        api, self.api = getattr(self, "api", None), None
        if api is not None:
            with contextlib.suppress(Exception):  # already closed by the server going away
                await api.close()
