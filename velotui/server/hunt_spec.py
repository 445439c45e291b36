"""A hunt's specification and its fingerprint: what an approver approves.

An approval is bound to the SHA-256 of everything that decides what a hunt collects and from
whom: the collection (its query and the artifacts with their parameters it was compiled from),
both conditions (the hidden server-side one included), the pace, the limits, the expiry and
the uploads. The description is not part of it (rewording a hunt changes nothing it does).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

# The fields of a hunt that an approval covers, in the order they are hashed (by name).
SPEC_FIELDS = (
    "query", "artifacts", "client_condition", "server_condition", "rate", "client_limit",
    "expires", "timeout", "max_rows", "max_upload_bytes", "max_logs", "max_log_bytes",
    "max_uploads", "max_errors", "max_errors_percent",
)


class HuntSpecification(Protocol):
    """What spec_hash reads of a hunt (a ``HuntRecord`` has all of it)."""

    query: str
    artifacts: str
    client_condition: str
    server_condition: str
    rate: float
    client_limit: int
    expires: float
    timeout: float
    max_rows: int
    max_upload_bytes: int
    max_logs: int
    max_log_bytes: int
    max_uploads: int
    max_errors: int
    max_errors_percent: float


def specification(hunt: HuntSpecification) -> dict[str, Any]:
    """The hunt's specification as a map (numbers as floats, so 10 and 10.0 hash alike;
    artifacts parsed, so their JSON spelling does not matter)."""
    spec: dict[str, Any] = {}
    for name in SPEC_FIELDS:
        value = getattr(hunt, name)
        if name == "artifacts":
            value = json.loads(value) if value else []
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, int | float):
            value = float(value)
        spec[name] = value
    return spec


def spec_hash(hunt: HuntSpecification) -> str:
    """SHA-256 hex of the canonical JSON (sorted keys, no spaces) of the hunt's
    specification."""
    canonical = json.dumps(specification(hunt), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
