"""Hunts: one collection to run on every client that matches a condition.

A hunt holds the collection query, the client-side condition (run by the agent), the server-side
condition (run here over the agent's rows as ``rows``, never sent to an agent), a recruitment
rate, a client limit, an expiry and the agents' limits. Each client a hunt looks at has one row in
``hunt_clients`` whose ``queue`` says where it stands; the counts are derived from those rows.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CLIENT_CONDITION = (
    "SELECT OS, Architecture, Fqdn, Platform, config.Client_labels AS Labels FROM info()"
)
SERVER_CONDITION_TEMPLATE = (
    "SELECT * FROM rows WHERE Fqdn =~ '(?i)myhostname.+' AND 'MY_LABEL' IN Labels"
)
DEFAULT_EXPIRY = 7 * 24 * 3600.0
DEFAULT_TIMEOUT = 600.0

# Where a client stands in a hunt. "checking" is the condition being evaluated; it is not one of
# the counts an operator sees, but it is stored like the others.
QUEUES = ("not_matched", "pending", "running", "completed", "results", "errors")
CHECKING = "checking"
RECRUITED = ("running", "completed", "results", "errors")
STATES = ("paused", "running", "stopped")

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


@dataclass
class Hunt:
    """A hunt as stored, with its counts kept alongside in memory."""

    hunt_id: str
    query: str
    client_condition: str
    server_condition: str
    description: str
    rate: float
    client_limit: int
    expires: float
    timeout: float
    max_rows: int
    max_upload_bytes: int
    state: str
    created: float
    creator: str = ""
    stop_reason: str | None = None
    started: float | None = None
    start_timestamp: int = 0
    stopped: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*QUEUES, CHECKING), 0))

    @property
    def recruited(self) -> int:
        """Clients that have been moved past pending (the ones a client limit counts)."""
        return sum(self.counts[q] for q in RECRUITED)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Hunt:
        return cls(
            hunt_id=row["hunt_id"],
            query=row["query"],
            client_condition=row["client_condition"],
            server_condition=row["server_condition"],
            description=row["description"],
            rate=row["rate"],
            client_limit=row["client_limit"],
            expires=row["expires"],
            timeout=row["timeout"],
            max_rows=row["max_rows"],
            max_upload_bytes=row["max_upload_bytes"],
            state=row["state"],
            created=row["created"],
            creator=row["creator"],
            stop_reason=row["stop_reason"],
            started=row["started"],
            start_timestamp=row["start_timestamp"],
            stopped=row["stopped"],
        )

    def describe(self) -> dict[str, Any]:
        """The hunt as the operator API shows it."""
        return {
            "hunt_id": self.hunt_id,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "description": self.description,
            "query": self.query,
            "client_condition": self.client_condition,
            "server_condition": self.server_condition,
            "created": self.created,
            "creator": self.creator,
            "started": self.started,
            "stopped": self.stopped,
            "expires": self.expires,
            "rate": self.rate,
            "limit": self.client_limit,
            "timeout": self.timeout,
            "max_rows": self.max_rows,
            "max_upload_bytes": self.max_upload_bytes,
            "counts": {queue: self.counts[queue] for queue in QUEUES},
            "checking": self.counts[CHECKING],
        }
