"""interfaces(): the machine's network interfaces and their addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import psutil

from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

# Go's net.Flags names, in the order net.Flags.String() prints them; psutil spells one differently.
_GO_FLAGS = ("up", "broadcast", "loopback", "pointtopoint", "multicast", "running")
_PSUTIL_FLAG_NAMES = {"pointopoint": "pointtopoint"}


def _prefix_length(netmask: str) -> int | None:
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return None


def address_with_prefix(address: str, netmask: str | None) -> str:
    """``address/prefix`` like "10.0.0.2/24" (IPv6 zone removed); the bare address without mask."""
    address = address.split("%", 1)[0]
    prefix = _prefix_length(netmask) if netmask else None
    return address if prefix is None else f"{address}/{prefix}"


def _go_flags(stats: Any) -> str:
    flags = {
        _PSUTIL_FLAG_NAMES.get(flag, flag)
        for flag in (getattr(stats, "flags", "") or "").split(",")
        if flag
    }
    if stats is not None and stats.isup:
        flags.add("up")
    return "|".join(flag for flag in _GO_FLAGS if flag in flags)


def _hardware_address(address: str) -> str:
    # psutil writes Windows MACs as AA-BB-..; Go writes aa:bb:..; loopback has none in Go.
    normal = address.replace("-", ":").lower()
    return "" if not normal.strip("0:") else normal


def list_interfaces() -> list[dict[str, Any]]:
    """One row per interface: Index, MTU, Name, HardwareAddr, Flags, Addrs."""
    addresses = psutil.net_if_addrs()
    all_stats = psutil.net_if_stats()
    try:
        indexes = {name: index for index, name in socket.if_nameindex()}
    except (OSError, AttributeError):
        indexes = {}
    rows: list[dict[str, Any]] = []
    names = sorted(set(addresses) | set(all_stats), key=lambda n: (indexes.get(n, 1 << 31), n))
    for name in names:
        stats = all_stats.get(name)
        hardware = ""
        addrs: list[str] = []
        for entry in addresses.get(name, []):
            if entry.family == psutil.AF_LINK:
                hardware = _hardware_address(entry.address)
            elif entry.family in (socket.AF_INET, socket.AF_INET6):
                addrs.append(address_with_prefix(entry.address, entry.netmask))
        rows.append({
            "Index": indexes.get(name),
            "MTU": stats.mtu if stats is not None else None,
            "Name": name,
            "HardwareAddr": hardware,
            "Flags": _go_flags(stats),
            "Addrs": addrs,
        })
    return rows


async def interfaces(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row per network interface: Index, MTU, Name, HardwareAddr, Flags (like
    "up|loopback|running"), Addrs (like ["10.0.0.2/24"])."""
    for row in await asyncio.to_thread(list_interfaces):
        yield row


def register(registry: Registry) -> None:
    """Add interfaces() to the registry."""
    registry.plugin(interfaces)
