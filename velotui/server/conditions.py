"""Hunt conditions on the server: the hidden server-side condition, and estimates.

The server-side condition runs here over the rows the agent's client-side condition returned,
as ``rows``, with a ``client`` variable holding what the server itself knows of the client (its
ID, the labels the operator gave it, when it was first and last seen), which an agent cannot
forge. It is never sent to an agent. A client matches when the condition returns a row; with no
server-side condition, when the client-side condition returned one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from velotui.server.data import ClientRecord
from velotui.vql import Scope, collect, compile_query, default_registry
from velotui.vql.registry import Registry

log = logging.getLogger(__name__)
# A condition check returns facts about a client, not evidence: at most this many rows.
MAX_CONDITION_ROWS = 1000


@dataclass(frozen=True)
class Judgement:
    """The server-side condition's verdict on one client: matched, or an error saying why it
    could not be judged."""

    matched: bool
    error: str | None = None


class _Errors(list):
    """Collects the errors a query logs."""

    def __call__(self, level: str, message: str) -> None:
        if level == "error":
            self.append(message)


def server_registry() -> Registry:
    """What the server-side condition may call: the engine's built-ins, nothing that touches
    the server's own machine."""
    return default_registry()


def client_variable(record: ClientRecord | None, client_id: str) -> dict[str, Any]:
    """The ``client`` variable: the server's own, trusted knowledge of the client."""
    if record is None:
        return {"ClientId": client_id, "Labels": [], "FirstSeen": None, "LastSeen": None}
    return {
        "ClientId": record.client_id,
        "Labels": list(record.operator_labels),
        "FirstSeen": record.first_seen,
        "LastSeen": record.last_seen,
    }


class ServerCondition:
    """A hunt's server-side condition, compiled once and run for each client checked."""

    def __init__(self, text: str, registry: Registry | None = None) -> None:
        self.text = text.strip()
        self.registry = registry or server_registry()
        self.program = compile_query(self.text, self.registry) if self.text else None

    async def judge(self, rows: list[dict[str, Any]], client: dict[str, Any]) -> Judgement:
        """The verdict for these client rows."""
        if len(rows) > MAX_CONDITION_ROWS:
            return Judgement(False, f"the client condition returned more than"
                                    f" {MAX_CONDITION_ROWS} rows")
        try:
            return Judgement(await self.matches(rows, client))
        except Exception as error:
            return Judgement(False, f"{error.__class__.__name__}: {error}")

    async def matches(self, rows: list[dict[str, Any]], client: dict[str, Any]) -> bool:
        """True when the condition returns a row for these client rows."""
        if self.program is None:
            return bool(rows)
        errors = _Errors()
        result = await collect(
            self.program, env={"rows": rows, "client": client}, registry=self.registry,
            on_log=errors,
        )
        if errors:
            log.debug("server condition for %s logged: %s", client.get("ClientId"), errors)
        return bool(result)


# Estimates ---------------------------------------------------------------------------------------


def estimate_registry() -> Registry:
    """The client-side condition run on the server against a client's last known facts:
    ``info()`` gives those facts; anything else an agent would have is missing."""
    registry = default_registry()

    async def info(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        """The client's last known info() row."""
        facts = scope.services.get("facts")
        if facts:
            yield dict(facts)

    registry.plugin(info, name="info")
    return registry


@dataclass
class Estimate:
    matched: int
    total: int
    undetermined: int  # clients whose condition needs more than their last known facts

    def describe(self) -> dict[str, int]:
        return {"matched": self.matched, "total": self.total, "undetermined": self.undetermined}


async def estimate(clients: list[ClientRecord], client_condition: str, server_condition: str
                   ) -> Estimate:
    """How many ``clients`` would match, judged by their last known facts.
    Raises VQLSyntaxError when a condition does not parse."""
    registry = estimate_registry()
    client_program = compile_query(client_condition, registry)
    condition = ServerCondition(server_condition)
    matched = undetermined = 0
    for record in clients:
        errors = _Errors()
        labels = list(record.agent_labels)
        rows = await collect(
            client_program, registry=registry,
            env={"config": {"Client_labels": labels, "Labels": labels}},
            services={"facts": record.facts}, on_log=errors,
        )
        if any("not found" in e and "Plugin" in e for e in errors):
            undetermined += 1
            continue
        if await condition.matches(rows, client_variable(record, record.client_id)):
            matched += 1
    return Estimate(matched=matched, total=len(clients), undetermined=undetermined)
