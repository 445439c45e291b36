"""Server settings an operator changes: whether hunts need approval, how long an approval
holds, and the labels whose clients no hunt recruits unless it names them.

Stored in the database (the settings table); kept here in memory, read at start and changed only
after the store has written the change.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from velotui.server import arguments
from velotui.server.data import AuditEntry, Database
from velotui.server.errors import ServiceError

DEFAULTS: dict[str, Any] = {"approvals": "off", "approval_hours": 24.0, "excluded_labels": []}
APPROVAL_MODES = ("required", "off")


def checked_setting(key: Any, value: Any) -> tuple[str, Any]:
    """The setting and its value as stored; raises ServiceError naming what is wrong.
    ``excluded_labels`` takes a list or comma-separated text ("" clears it)."""
    if not isinstance(key, str) or key not in DEFAULTS:
        raise ServiceError(f"no setting {key!r:.100} (settings: {', '.join(DEFAULTS)})")
    if key == "approvals":
        if value not in APPROVAL_MODES:
            raise ServiceError(f"approvals is required or off, not {value!r}")
        return key, value
    if key == "approval_hours":
        hours = arguments.number(value, "approval_hours", maximum=24 * 365.0)
        if hours <= 0:
            raise ServiceError("approval_hours must be more than zero")
        return key, hours
    if isinstance(value, str):
        value = [label.strip() for label in value.split(",") if label.strip()]
    return key, list(dict.fromkeys(arguments.labels(value, "excluded_labels")))


def names_label(condition: str, label: str) -> bool:
    """Whether a condition names the label as a quoted string ('no-hunt' or "no-hunt")."""
    return re.search(rf"(['\"]){re.escape(label)}\1", condition) is not None


class ServerSettings:
    """The settings in force: stored values over the defaults."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.values: dict[str, Any] = dict(DEFAULTS)

    async def load(self) -> None:
        stored = await self.db.settings.all()
        self.values = {**DEFAULTS, **{k: v for k, v in stored.items() if k in DEFAULTS}}

    async def set(self, key: Any, value: Any, audit: AuditEntry | None = None) -> Any:
        """Store a checked setting (with its audit record, which gains the key, the old and
        the new value); its value as stored."""
        key, value = checked_setting(key, value)
        if audit is not None:
            audit = replace(audit, target=key, details={
                **audit.details, "old": self.values.get(key), "new": value})
        await self.db.settings.set(key, value, audit)
        self.values[key] = value
        return value

    @property
    def approvals_required(self) -> bool:
        return self.values["approvals"] == "required"

    @property
    def approval_seconds(self) -> float:
        return float(self.values["approval_hours"]) * 3600.0

    @property
    def excluded_labels(self) -> list[str]:
        return list(self.values["excluded_labels"])

    def excluded_by(self, labels: list[str], client_condition: str, server_condition: str
                    ) -> str | None:
        """The first excluded label among ``labels`` that neither condition names, or None:
        a client with it is recruited by no hunt that does not name it."""
        for label in self.values["excluded_labels"]:
            if label in labels and not (names_label(client_condition, label)
                                        or names_label(server_condition, label)):
                return label
        return None
