"""host(): resolve a name through the system's resolver, as Velociraptor's host() does."""

from __future__ import annotations

import socket
from typing import Any

from agent.plugins.blocking import call_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

_FAMILIES = {"": socket.AF_UNSPEC, "ip": socket.AF_UNSPEC, "ip4": socket.AF_INET,
             "a": socket.AF_INET, "ip6": socket.AF_INET6, "aaaa": socket.AF_INET6}


def register(registry: Registry) -> None:
    registry.function(host)


def _addresses(name: str, family: int) -> list[str]:
    found = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


async def host(scope: Scope, *, name: Any, server: Any = None, type: Any = None,
               prefer_go: Any = False, tracker_only: Any = False) -> list[str] | None:
    """The addresses ``name`` resolves to (``type``: ip, ip4/A or ip6/AAAA). ``server`` (asking
    one DNS server directly) is not supported: refused, saying so."""
    if not isinstance(name, str) or not name:
        scope.error(f"host(): name must be a host name, not {name!r}")
        return None
    if server:
        scope.error("host(): server= is not supported here; the system's resolver is used")
        return None
    family = _FAMILIES.get(str(type or "").lower())
    if family is None:
        scope.error(f"host(): type must be ip, ip4 or ip6, not {type!r}")
        return None
    try:
        return await call_blocking(_addresses, name, family)
    except OSError as error:
        scope.error(f"host(): cannot resolve {name}: {error.strerror or error}")
        return None
