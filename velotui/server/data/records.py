"""The typed records the data layer hands out, and the changes its guarded statements report.

The rest of the server keeps these in memory as caches; each one changes only by what the writer
reports (a ``FlowChange``, a ``QueueMove``), never by what a caller meant to write.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from velotui.server.data.store import Row
from velotui.server.hunt_spec import spec_hash
from velotui.wire.protocol import ProtocolError, json_value_items

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("finished", "error", "timeout", "cancelled")

# Where a client stands in a hunt. "checking" is the condition being evaluated; it is not one of
# the counts an operator sees, but it is stored like the others.
QUEUES = ("not_matched", "pending", "running", "completed", "results", "errors")
CHECKING = "checking"
RECRUITED = ("running", "completed", "results", "errors")
HUNT_STATES = ("scheduled", "paused", "running", "stopped")
# A hunt's error share is judged once at least this many of its recruited clients finished.
ERROR_SHARE_MINIMUM = 20

# How long past its own timeout a flow may take to report, for the trip to and from the agent.
DEADLINE_GRACE = 10.0


@dataclass(frozen=True)
class FlowLimits:
    """What a flow may produce; the server enforces every one (0: no limit)."""

    timeout: float
    max_rows: int
    max_upload_bytes: int
    max_logs: int
    max_log_bytes: int
    max_uploads: int


# Every collection's limits unless the operator sets others: finite, so that no hunt stores
# without bound by default; shown with the hunt, and raised with the hunt's options.
DEFAULT_LIMITS = FlowLimits(
    timeout=600.0,
    max_rows=1_000_000,
    max_upload_bytes=1024**3,
    max_logs=10_000,
    max_log_bytes=8 * 1024 * 1024,
    max_uploads=1_000,
)


@dataclass
class FlowRecord:
    """A flow as stored, plus what the server keeps beside it in memory."""

    client_id: str
    flow_id: str
    hunt_id: str | None
    kind: str
    query: str
    env: dict[str, Any]
    timeout: float
    max_rows: int
    max_upload_bytes: int
    state: str
    created: float
    max_logs: int = 0
    max_log_bytes: int = 0
    max_uploads: int = 0
    # A hunt flow: the client-side condition run first, whether it waits for the server's
    # judgement, and where it is ('check', then 'collect').
    condition: str = ""
    hold: bool = False
    stage: str = ""
    started: float | None = None
    finished: float | None = None
    rows: int = 0
    bytes: int = 0
    logs: int = 0
    log_bytes: int = 0
    logs_dropped: int = 0
    uploads: int = 0
    error: str | None = None
    last_seq: int = 0
    # The artifacts a collection was compiled from, with their parameters (JSON text; '' for VQL).
    artifacts: str = ""
    # In memory only: when the flow times out, on the monotonic clock (so a step of the wall
    # clock neither ends every flow nor keeps one forever); None for no timeout.
    deadline: float | None = field(default=None, repr=False, compare=False)
    # A condition check's rows, kept as they arrive so judging it needs no read back (None:
    # not kept, or too many to keep; read them from the store).
    kept_rows: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_id, self.flow_id)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(self.finished - self.started, 0.0)

    @property
    def limits(self) -> FlowLimits:
        return FlowLimits(self.timeout, self.max_rows, self.max_upload_bytes, self.max_logs,
                          self.max_log_bytes, self.max_uploads)

    def set_deadline(self, monotonic_now: float, wall_now: float | None = None) -> None:
        """Put the deadline on the monotonic clock: what is left of ``timeout`` (plus the
        grace) since the flow was created, by the wall clock, never more than all of it."""
        if self.timeout <= 0:
            self.deadline = None
            return
        wall_now = time.time() if wall_now is None else wall_now
        whole = self.timeout + DEADLINE_GRACE
        left = min(max(self.created + whole - wall_now, 0.0), whole)
        self.deadline = monotonic_now + left

    @classmethod
    def from_row(cls, row: Row) -> FlowRecord:
        return cls(**_stored(cls, row), env=json.loads(row["env"]), hold=bool(row["hold"]))

    def describe(self) -> dict[str, Any]:
        """The flow as the operator API shows it."""
        return {
            "client_id": self.client_id,
            "flow_id": self.flow_id,
            "hunt_id": self.hunt_id,
            "kind": self.kind,
            "query": self.query,
            "stage": self.stage,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "duration": self.duration,
            "rows": self.rows,
            "bytes": self.bytes,
            "logs": self.logs,
            "logs_dropped": self.logs_dropped,
            "uploads": self.uploads,
            "error": self.error,
            "artifacts": json.loads(self.artifacts) if self.artifacts else [],
            **asdict(self.limits),
        }


APPROVAL_STATES = ("none", "pending", "approved", "rejected", "expired", "void")


@dataclass
class ApprovalRecord:
    """A request to approve a hunt, and its decision once there is one."""

    id: int
    hunt_id: str
    spec_hash: str
    requester: str
    reason: str
    requested: float
    decided_by: str | None = None
    decided: float | None = None
    decision: str = "pending"  # 'pending', 'approved' or 'rejected'
    decision_reason: str | None = None
    expires: float | None = None

    def state(self, current_hash: str, now: float) -> str:
        """Where it stands for a hunt whose specification hashes to ``current_hash``: void
        once the specification changed since the request, expired once past its expiry."""
        if self.decision == "rejected":
            return "rejected"
        if self.spec_hash != current_hash:
            return "void"
        if self.decision == "approved" and self.expires is not None and now >= self.expires:
            return "expired"
        return self.decision

    @classmethod
    def from_row(cls, row: Row) -> ApprovalRecord:
        return cls(**_stored(cls, row))

    def describe(self, current_hash: str, now: float) -> dict[str, Any]:
        """The approval as a hunt dict shows it."""
        return {
            "state": self.state(current_hash, now),
            "spec_hash": self.spec_hash,
            "requester": self.requester,
            "requested": self.requested,
            "decided_by": self.decided_by,
            "decided": self.decided,
            "expires": self.expires,
            "reason": self.decision_reason if self.decision != "pending" else self.reason,
            "request_reason": self.reason,
        }


NO_APPROVAL = {"state": "none", "spec_hash": None, "requester": None, "requested": None,
               "decided_by": None, "decided": None, "expires": None, "reason": None,
               "request_reason": None}


@dataclass
class HuntRecord:
    """A hunt as stored, with its counts (a GROUP BY over its clients) alongside."""

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
    max_logs: int = 0
    max_log_bytes: int = 0
    max_uploads: int = 0
    creator: str = ""
    stop_reason: str | None = None
    draining: bool = False
    started: float | None = None
    start_timestamp: int = 0
    stopped: float | None = None
    # The artifacts the query was compiled from, with their parameters (JSON text; '' for VQL).
    artifacts: str = ""
    start_at: float | None = None
    max_errors: int = 0
    max_errors_percent: float = 0.0
    archived: float | None = None
    copied_from: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*QUEUES, CHECKING), 0))
    # In memory only: the hunt's newest approval request (None: never requested).
    approval: ApprovalRecord | None = field(default=None, repr=False, compare=False)

    @property
    def recruited(self) -> int:
        """Clients that have been moved past pending (the ones a client limit counts)."""
        return sum(self.counts[q] for q in RECRUITED)

    @property
    def in_flight(self) -> int:
        """Clients whose condition check or collection has not ended."""
        return self.counts["running"] + self.counts[CHECKING]

    @property
    def error_limit_reached(self) -> bool:
        """Whether the clients in errors reached the hunt's error limit: the count, or the
        share of the clients recruited once enough of them finished."""
        errors = self.counts["errors"]
        if self.max_errors and errors >= self.max_errors:
            return True
        if not self.max_errors_percent:
            return False
        finished = self.recruited - self.counts["running"]
        return (finished >= ERROR_SHARE_MINIMUM
                and errors * 100 >= self.max_errors_percent * self.recruited)

    @property
    def limits(self) -> FlowLimits:
        """The limits of each of the hunt's collections."""
        return FlowLimits(self.timeout, self.max_rows, self.max_upload_bytes, self.max_logs,
                          self.max_log_bytes, self.max_uploads)

    @classmethod
    def from_row(cls, row: Row) -> HuntRecord:
        return cls(**_stored(cls, row), draining=bool(row["draining"]))

    @property
    def spec_hash(self) -> str:
        """The SHA-256 of the hunt's specification (what an approval is bound to)."""
        return spec_hash(self)

    def approval_state(self, now: float | None = None) -> str:
        """'none', 'pending', 'approved', 'rejected', 'expired' or 'void'."""
        if self.approval is None:
            return "none"
        return self.approval.state(self.spec_hash, time.time() if now is None else now)

    def describe(self) -> dict[str, Any]:
        """The hunt as the operator API shows it."""
        current = self.spec_hash
        approval = (NO_APPROVAL if self.approval is None
                    else self.approval.describe(current, time.time()))
        return {
            "hunt_id": self.hunt_id,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "description": self.description,
            "query": self.query,
            "artifacts": json.loads(self.artifacts) if self.artifacts else [],
            "client_condition": self.client_condition,
            "server_condition": self.server_condition,
            "created": self.created,
            "creator": self.creator,
            "started": self.started,
            "stopped": self.stopped,
            "expires": self.expires,
            "rate": self.rate,
            "limit": self.client_limit,
            "start_at": self.start_at,
            "max_errors": self.max_errors,
            "max_errors_percent": self.max_errors_percent,
            "archived": self.archived,
            "copied_from": self.copied_from,
            **asdict(self.limits),
            "counts": {queue: self.counts[queue] for queue in QUEUES},
            "checking": self.counts[CHECKING],
            "spec_hash": current,
            "approval": dict(approval),
        }


class ClientRecord:
    """A known client. What its agent says of its host (the facts) is kept as JSON text, with
    the host name, FQDN and OS parsed out: the server holds every client in memory, and a
    parsed map of facts costs several times its text."""

    __slots__ = ("agent_labels", "client_id", "facts_json", "first_seen", "fqdn", "hostname",
                 "last_hunt_timestamp", "last_seen", "operator_labels", "os", "public_key",
                 "revoked")

    def __init__(self, client_id: str, public_key: bytes, first_seen: float, last_seen: float,
                 facts: dict[str, Any] | None = None, agent_labels: list[str] | None = None,
                 operator_labels: list[str] | None = None, last_hunt_timestamp: int = 0,
                 revoked: float | None = None) -> None:
        self.client_id = client_id
        self.public_key = public_key
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.agent_labels = list(agent_labels or [])
        self.operator_labels = list(operator_labels or [])
        self.last_hunt_timestamp = last_hunt_timestamp
        self.revoked = revoked
        self.set_facts(facts or {})

    def set_facts(self, facts: dict[str, Any]) -> None:
        self.facts_json = json.dumps(facts, separators=(",", ":"), allow_nan=False)
        self.hostname = str(facts.get("Hostname") or "")
        self.fqdn = str(facts.get("Fqdn") or self.hostname)
        self.os = str(facts.get("OS") or "")

    @property
    def facts(self) -> dict[str, Any]:
        """The facts, parsed (a new map each time)."""
        return json.loads(self.facts_json)

    @property
    def labels(self) -> list[str]:
        """The agent's labels and the operator's, each once."""
        return list(dict.fromkeys([*self.agent_labels, *self.operator_labels]))

    @classmethod
    def from_row(cls, row: Row) -> ClientRecord:
        return cls(row["client_id"], bytes(row["public_key"]), row["first_seen"],
                   row["last_seen"], facts=_checked_facts(json.loads(row["facts"])),
                   agent_labels=json.loads(row["agent_labels"]),
                   operator_labels=json.loads(row["operator_labels"]),
                   last_hunt_timestamp=row["last_hunt_timestamp"], revoked=row["revoked"])


@dataclass(frozen=True)
class QueueMove:
    """A client moved between a hunt's queues, as committed."""

    hunt_id: str
    client_id: str
    old: str
    new: str


@dataclass
class FlowChange:
    """What one guarded change to a flow did, as committed: the flow's stored figures after it
    (``record``), whether this change ended it, and the hunt queue move that went with it."""

    record: FlowRecord
    ended: bool = False
    moves: list[QueueMove] = field(default_factory=list)
    # Set when the server ended the flow for the agent (a limit): tell the agent to stop.
    cancel_reason: str | None = None
    # A held hunt flow's condition rows, just come: the server-side condition judges them.
    checked_rows: list[dict[str, Any]] | None = None


@dataclass
class HuntChange:
    """What a guarded change to a hunt did, as committed: the hunt after it, the flows it
    ended (each with its queue move), the clients it recruited and their collections."""

    hunt: HuntRecord
    ended: list[FlowChange] = field(default_factory=list)
    moves: list[QueueMove] = field(default_factory=list)
    recruited: list[FlowRecord] = field(default_factory=list)


# Fields whose stored form is not the record's (JSON text, integers for booleans) are converted
# by each from_row; the rest are taken as they are.
_CONVERTED = {"env", "hold", "draining"}


def _stored(cls: type, row: Row) -> dict[str, Any]:
    """The row's columns that are fields of ``cls`` (a join may bring others)."""
    names = {f.name for f in fields(cls)} - _CONVERTED
    return {name: row[name] for name in row.keys() if name in names}  # noqa: SIM118


def _checked_facts(facts: Any) -> dict[str, Any]:
    """Facts as the edge accepts them today; facts stored before its limits (nested too deep,
    too many values) are dropped rather than break every listing of clients."""
    try:
        json_value_items(facts)
    except (ProtocolError, RecursionError):
        return {}
    return facts if isinstance(facts, dict) else {}
