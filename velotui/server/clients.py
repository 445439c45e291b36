"""The clients the server knows: their keys, last known facts, labels and whether they are online.

Every known client is held in memory (a record is small), loaded from the database at start and
written through on every change. What an agent says about itself (facts, its own labels) is kept
as a hint for display and estimates, never trusted for security.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from velotui.server.data import AuditEntry, ClientRecord, Database
from velotui.server.data.clients import KeyMismatch, facts_json
from velotui.server.data.store import EVERYTHING
from velotui.server.data.topics import CLIENT_RECORD

log = logging.getLogger(__name__)

__all__ = ["ClientDirectory", "ClientRecord", "KeyMismatch"]


class ClientDirectory:
    """Known clients (from the database) and the sessions of those online."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._records: dict[str, ClientRecord] = {}
        self.sessions: dict[str, Any] = {}  # client_id -> the live agent session
        # Clients another frontend enrolled or changed (heard through the store).
        self._heard_clients: set[str] = set()
        self._heard_everything = False
        self._heard = asyncio.Event()
        self._follow_task: asyncio.Task[None] | None = None
        # Called when another frontend revoked a client connected here (the server closes its
        # session and ends its flows).
        self.on_revoked: Callable[[str], Awaitable[None]] | None = None

    async def load(self) -> None:
        self._records = {record.client_id: record for record in await self.db.clients.load()}
        self.db.store.listen(self._heard_from_others)
        self._follow_task = asyncio.create_task(self._follow_forever(), name="client-follower")

    async def close(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task

    def _heard_from_others(self, topics: set[str]) -> None:
        """Another frontend enrolled clients or changed their records: read them again."""
        for topic in topics:
            if topic == EVERYTHING:
                self._heard_everything = True
            elif topic.startswith(CLIENT_RECORD):
                self._heard_clients.add(topic[len(CLIENT_RECORD):])
        self._heard.set()

    async def _follow_forever(self) -> None:
        while True:
            await self._heard.wait()
            self._heard.clear()
            everything, self._heard_everything = self._heard_everything, False
            client_ids, self._heard_clients = self._heard_clients, set()
            try:
                if everything:
                    stored = await self.db.clients.load()
                else:
                    stored = await self.db.clients.get_many(sorted(client_ids))
            except Exception:
                log.exception("following other frontends' clients failed")
                continue
            for record in stored:
                local = self._records.get(record.client_id)
                if record.client_id not in self.sessions or local is None:
                    self._records[record.client_id] = record
                    continue
                # Connected here: what its agent says of itself is newest here, but the labels
                # an operator gave it elsewhere, and a revocation, hold from now on.
                local.operator_labels = list(record.operator_labels)
                if record.revoked is not None and local.revoked is None:
                    local.revoked = record.revoked
                    if self.on_revoked is not None:
                        try:
                            await self.on_revoked(record.client_id)
                        except Exception:
                            log.exception("closing revoked client %s failed", record.client_id)

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
        enrolled = await self.db.clients.record_hello(
            client_id, public_key, facts_json(facts), agent_labels, last_hunt_timestamp, now)
        record = self._records.get(client_id)
        if record is None:
            record = ClientRecord(client_id, public_key, now, now)
            self._records[client_id] = record
        record.last_seen = now
        record.set_facts(facts)
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
        await self.db.clients.touch(client_id, now, record.last_hunt_timestamp)

    async def set_operator_labels(self, client_id: str, labels: list[str],
                                  audit: AuditEntry | None = None) -> ClientRecord:
        """Replace the labels the operator gave the client. Raises KeyError for an unknown ID."""
        record = self._records.get(client_id)
        if record is None:
            raise KeyError(client_id)
        await self.db.clients.set_operator_labels(client_id, labels, audit)
        record.operator_labels = list(labels)
        return record

    async def revoke(self, client_id: str, audit: AuditEntry | None = None) -> ClientRecord:
        """Refuse the client's key from now on. Raises KeyError for an unknown ID."""
        record = self._records.get(client_id)
        if record is None:
            raise KeyError(client_id)
        now = time.time()
        if await self.db.clients.revoke(client_id, now, audit):
            record.revoked = now
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
            "revoked": record.revoked,
            "facts": record.facts,
        }
