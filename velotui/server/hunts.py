"""Hunts: one collection to run on every client that matches a condition.

A hunt holds the collection query, the client-side condition (run by the agent), the server-side
condition (run here over the agent's rows as ``rows``, never sent to an agent), a recruitment
rate, a client limit, an expiry and the agents' limits (``HuntRecord`` in the data layer). Each
client a hunt looks at has one row in ``hunt_clients`` whose ``queue`` says where it stands; the
counts are derived from those rows. Here: the defaults and how durations are written.
"""

from __future__ import annotations

import re

from velotui.server.data.records import (
    CHECKING,
    DEFAULT_LIMITS,
    HUNT_STATES,
    QUEUES,
    RECRUITED,
)

DEFAULT_CLIENT_CONDITION = (
    "SELECT OS, Architecture, Fqdn, Platform, config.Client_labels AS Labels FROM info()"
)
SERVER_CONDITION_TEMPLATE = (
    "SELECT * FROM rows WHERE Fqdn =~ '(?i)myhostname.+' AND 'MY_LABEL' IN Labels"
)
DEFAULT_EXPIRY = 7 * 24 * 3600.0
DEFAULT_TIMEOUT = DEFAULT_LIMITS.timeout

__all__ = ["CHECKING", "DEFAULT_CLIENT_CONDITION", "DEFAULT_EXPIRY", "DEFAULT_LIMITS",
           "DEFAULT_TIMEOUT", "HUNT_STATES", "QUEUES", "RECRUITED", "SERVER_CONDITION_TEMPLATE",
           "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90m``, ``12h``, ``7d`` or ``45`` (seconds).
    Raises ValueError otherwise."""
    match = _DURATION.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (like 90m, 12h or 7d)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return seconds
