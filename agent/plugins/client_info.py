"""client_info(): this client's record, in the shapes Velociraptor's artifacts read it.

On Velociraptor's server client_info(client_id=...) looks a client up in the datastore; an agent
knows one client only, itself, so it answers for itself (its client id when the agent has one).
Artifacts read both the record's fields (``os_info.fqdn``, ``client_id``) and the info() names
(``Hostname``), so the row carries both.
"""

from __future__ import annotations

import asyncio
import functools
from importlib import metadata
from typing import Any

from agent.plugins import info
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

CLIENT_ID_SETTING = "client_id"
"""Registry setting: this agent's client id, when it has one."""


@functools.cache
def _agent_version() -> str:
    try:
        return metadata.version("velotui")
    except metadata.PackageNotFoundError:
        return ""


def client_record(host: dict[str, Any], client_id: str | None, labels: list[str]
                  ) -> dict[str, Any]:
    """The client_info() value for a host's info() row, its client id and labels."""
    return {
        "client_id": client_id,
        "ClientId": client_id,
        "Hostname": host.get("Hostname"),
        "Fqdn": host.get("Fqdn"),
        "OS": host.get("OS"),
        "Platform": host.get("Platform"),
        "PlatformVersion": host.get("PlatformVersion"),
        "KernelVersion": host.get("KernelVersion"),
        "Architecture": host.get("Architecture"),
        "Labels": labels,
        "labels": labels,
        "os_info": {
            "system": host.get("OS"),
            "hostname": host.get("Hostname"),
            "release": f"{host.get('Platform') or ''}{host.get('PlatformVersion') or ''}",
            "machine": host.get("Architecture"),
            "fqdn": host.get("Fqdn"),
        },
        "agent_information": {"name": "velotui-agent", "version": _agent_version()},
    }


async def client_info(scope: Scope, client_id: Any = None) -> dict[str, Any] | None:
    """This client's record: client_id and ClientId (NULL when the agent has none), Hostname,
    Fqdn, OS, Platform, PlatformVersion, KernelVersion, Architecture, Labels (also as labels),
    os_info {system, hostname, release, machine, fqdn} and agent_information {name, version}.
    Another client's id is NULL with an error: an agent knows only itself."""
    own_id = scope.registry.setting(CLIENT_ID_SETTING)
    if client_id is not None and client_id != own_id:
        scope.error(f"client_info(): only this client is known on an agent, not {client_id!r}")
        return None
    row = info.recent_machine_info()
    if row is None:
        row = await asyncio.to_thread(info.machine_info)
    host = info.with_facts(row, scope.registry.setting(info.FACTS_SETTING))
    config = scope.registry.variables().get("config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return client_record(host, own_id, list(labels) if isinstance(labels, list) else [])


def register(registry: Registry) -> None:
    """Add client_info() to the registry."""
    registry.function(client_info)
