"""Real agents run inside the test's event loop, against a real server: the agent's own session,
outbox and flow runner code, each with its own identity and state folder, over wss on loopback.
Used where many scenarios need a fleet and a subprocess per scenario would only add waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.session import AgentSession
from agent.state import AgentState
from velotui.server.server import Server


class Fleet:
    """Agents with given facts, started and stopped together."""

    def __init__(self, server: Server, root: Path) -> None:
        self.server = server
        self.root = root
        self.sessions: dict[str, AgentSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.config = AgentConfig(
            server_url=server.agent_url,
            ca_pem=server.datastore.ca_pem(),
            enrolment_secret=server.datastore.enrolment_secret(),
            labels=[],
            poll_interval=60.0,
            max_backoff=1.0,
        )

    def start(self, name: str, facts: dict[str, Any]) -> str:
        """Start an agent; returns its client ID."""
        state = AgentState.open(self.root / name)
        session = AgentSession(self.config, state, facts=facts, name=name)
        self.sessions[state.identity.client_id] = session
        self._tasks[state.identity.client_id] = asyncio.create_task(session.run_forever())
        return state.identity.client_id

    async def stop(self, client_id: str) -> None:
        task = self._tasks.pop(client_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for client_id in list(self._tasks):
            await self.stop(client_id)

    async def online(self, *client_ids: str, timeout: float = 30) -> None:
        await until(lambda: all(self.server.directory.is_online(c) for c in client_ids),
                    timeout, "agents online")


async def until(condition: Any, timeout: float = 30, what: str = "",
                pause: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> Any:
    """Wait (without blocking the loop) until ``condition()`` is true; its value.

    ``pause`` lets console tests wait with ``pilot.pause`` so the app repaints between polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what or condition}")
        await pause(0.02)


SEED_FACTS = [
    # Matches: Fqdn has text after "myhostname", and the agent has MY_LABEL.
    {"Hostname": "myhostname-1", "Fqdn": "myhostname-1.corp.example", "OS": "windows",
     "Labels": ["MY_LABEL", "Finance"]},
    # Wrong host.
    {"Hostname": "otherhost", "Fqdn": "otherhost.corp.example", "OS": "windows",
     "Labels": ["MY_LABEL"]},
    # Right host, wrong label.
    {"Hostname": "myhostname-db", "Fqdn": "myhostname-db.corp.example", "OS": "linux",
     "Labels": ["Finance"]},
    # IN is case-sensitive: my_label is not MY_LABEL.
    {"Hostname": "MYHOSTNAME", "Fqdn": "MYHOSTNAME.corp.example", "OS": "linux",
     "Labels": ["my_label"]},
    # '.+' needs a character after the name.
    {"Hostname": "myhostname", "Fqdn": "myhostname", "OS": "windows", "Labels": ["MY_LABEL"]},
    # Matches: the regex is unanchored.
    {"Hostname": "lab-myhostname", "Fqdn": "lab-myhostname.example", "OS": "windows",
     "Labels": ["MY_LABEL"]},
]
SEED_SERVER_CONDITION = (
    "SELECT * FROM rows WHERE Fqdn =~ '(?i)myhostname.+' AND 'MY_LABEL' IN Labels"
)
SEED_MATCHES = {"myhostname-1", "lab-myhostname"}
