"""The clients the server knows: their keys, last known facts, labels and whether they are online.

Every known client is held in memory (a record is small), loaded from the database at start and
written through on every change. What an agent says about itself (facts, its own labels) is kept
as a hint for display and estimates, never trusted for security.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from velotui.server.store import Store


class KeyMismatch(Exception):
    """A client ID is already bound to another public key."""


@dataclass
class ClientRecord:
    client_id: str
    public_key: bytes
    first_seen: float
    last_seen: float
    facts: dict[str, Any] = field(default_factory=dict)
    agent_labels: list[str] = field(default_factory=list)
    operator_labels: list[str] = field(default_factory=list)
    last_hunt_timestamp: int = 0

    @property
    def hostname(self) -> str:
        return str(self.facts.get("Hostname") or "")

    @property
    def fqdn(self) -> str:
        return str(self.facts.get("Fqdn") or self.hostname)

    @property
    def os(self) -> str:
        return str(self.facts.get("OS") or "")

    @property
    def labels(self) -> list[str]:
        """The agent's labels and the operator's, each once."""
        return list(dict.fromkeys([*self.agent_labels, *self.operator_labels]))

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ClientRecord:
        return cls(
            client_id=row["client_id"],
            public_key=bytes(row["public_key"]),
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
            facts=json.loads(row["facts"]),
            agent_labels=json.loads(row["agent_labels"]),
            operator_labels=json.loads(row["operator_labels"]),
            last_hunt_timestamp=row["last_hunt_timestamp"],
        )


class ClientDirectory:
    """Known clients (from the database) and the sessions of those online."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._records: dict[str, ClientRecord] = {}
        self.sessions: dict[str, Any] = {}  # client_id -> the live agent session

    async def load(self) -> None:
        rows = await self.store.fetch_all("SELECT * FROM clients")
        self._records = {row["client_id"]: ClientRecord.from_row(row) for row in rows}

    def get(self, client_id: str) -> ClientRecord | None:
        return self._records.get(client_id)

    def all(self) -> list[ClientRecord]:
        return list(self._records.values())

    def is_online(self, client_id: str) -> bool:
        return client_id in self.sessions

    async def record_hello(
        self,
        client_id: str,
        public_key: bytes,
        facts: dict[str, Any],
        agent_labels: list[str],
        last_hunt_timestamp: int,
    ) -> tuple[ClientRecord, bool]:
        """Store what a client said on connecting; returns (record, newly enrolled).
        Raises ``KeyMismatch`` when the ID belongs to another key."""
        now = time.time()
        facts_text = json.dumps(facts, default=str)
        labels_text = json.dumps(agent_labels)

        def write(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                "SELECT public_key FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
            if row is None:
                connection.execute(
                    "INSERT INTO clients (client_id, public_key, first_seen, last_seen, facts,"
                    " agent_labels, last_hunt_timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (client_id, public_key, now, now, facts_text, labels_text, last_hunt_timestamp),
                )
                return True
            if bytes(row["public_key"]) != public_key:
                raise KeyMismatch(client_id)
            connection.execute(
                "UPDATE clients SET last_seen = ?, facts = ?, agent_labels = ?,"
                " last_hunt_timestamp = ? WHERE client_id = ?",
                (now, facts_text, labels_text, last_hunt_timestamp, client_id),
            )
            return False

        enrolled = await self.store.write(write)
        record = self._records.get(client_id)
        if record is None:
            record = ClientRecord(client_id, public_key, now, now)
            self._records[client_id] = record
        record.last_seen = now
        record.facts = facts
        record.agent_labels = agent_labels
        record.last_hunt_timestamp = last_hunt_timestamp
        return record, enrolled

    async def touch(self, client_id: str, last_hunt_timestamp: int | None = None) -> None:
        """Note that the client was seen now (and what hunt timestamp it reported)."""
        record = self._records.get(client_id)
        if record is None:
            return
        record.last_seen = now = time.time()
        if last_hunt_timestamp is not None:
            record.last_hunt_timestamp = last_hunt_timestamp
        reported = record.last_hunt_timestamp

        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE clients SET last_seen = ?, last_hunt_timestamp = ? WHERE client_id = ?",
                (now, reported, client_id),
            )

        await self.store.write(write)

    async def set_operator_labels(self, client_id: str, labels: list[str]) -> ClientRecord:
        """Replace the labels the operator gave the client. Raises KeyError for an unknown ID."""
        record = self._records.get(client_id)
        if record is None:
            raise KeyError(client_id)
        text = json.dumps(labels)

        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE clients SET operator_labels = ? WHERE client_id = ?", (text, client_id)
            )

        await self.store.write(write)
        record.operator_labels = list(labels)
        return record

    def describe(self, record: ClientRecord) -> dict[str, Any]:
        """A client as the operator API shows it."""
        return {
            "client_id": record.client_id,
            "hostname": record.hostname,
            "fqdn": record.fqdn,
            "os": record.os,
            "labels": record.labels,
            "agent_labels": record.agent_labels,
            "operator_labels": record.operator_labels,
            "first_seen": record.first_seen,
            "last_seen": time.time() if self.is_online(record.client_id) else record.last_seen,
            "online": self.is_online(record.client_id),
            "facts": record.facts,
        }
