"""netstat(): the machine's TCP and UDP sockets, with the columns of Velociraptor's netstat()."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import psutil

from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

_FAMILY_NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_TYPE_NAMES = {socket.SOCK_STREAM: "TCP", socket.SOCK_DGRAM: "UDP"}
# A socket with no peer has the family's wildcard address and port 0, as gopsutil reports it.
_NO_PEER = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


def _address(address: Any, family: int) -> dict[str, Any]:
    if not address:
        return {"IP": _NO_PEER.get(family, ""), "Port": 0}
    return {"IP": address.ip, "Port": address.port}


def connection_row(connection: Any) -> dict[str, Any]:
    """One psutil connection as a netstat() row."""
    family = int(connection.family)
    kind = int(connection.type)
    return {
        "Fd": connection.fd if connection.fd >= 0 else None,
        "Family": family,
        "Type": kind,
        "FamilyString": _FAMILY_NAMES.get(family, str(family)),
        "TypeString": _TYPE_NAMES.get(kind, str(kind)),
        "Status": connection.status,
        "Laddr": _address(connection.laddr, family),
        "Raddr": _address(connection.raddr, family),
        "Pid": connection.pid,
        # Only Windows says when a socket was bound.
        "Timestamp": None,
    }


def list_connections() -> list[dict[str, Any]]:
    """Every TCP and UDP socket (IPv4 and IPv6) as netstat() rows; blocking. Pid is NULL for
    sockets of processes the agent may not look into."""
    return [connection_row(each) for each in psutil.net_connections(kind="inet")]


async def netstat(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row per TCP or UDP socket: Fd, Family, Type, FamilyString ("IPv4", "IPv6"),
    TypeString ("TCP", "UDP"), Status ("LISTEN", "ESTABLISHED", ..., "NONE" for UDP), Laddr and
    Raddr (each {IP, Port}), Pid (NULL when not ours to see) and Timestamp (NULL off Windows)."""
    try:
        rows = await asyncio.to_thread(list_connections)
    except (psutil.Error, OSError) as error:
        scope.error(f"netstat(): cannot list the sockets: {error}")
        return
    for row in rows:
        yield row


def register(registry: Registry) -> None:
    """Add netstat() to the registry."""
    registry.plugin(netstat)
