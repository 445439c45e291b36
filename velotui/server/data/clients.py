"""Client statements: enrolment, what clients say of themselves, labels, revocation."""

from __future__ import annotations

import json
from typing import Any

from velotui.server.data.audit import AuditEntry, append_audit
from velotui.server.data.records import ClientRecord
from velotui.server.data.store import Store, Transaction
from velotui.server.data.topics import client_record_topic


class KeyMismatch(Exception):
    """A client ID is already bound to another public key."""


class ClientTable:
    """Every statement about clients."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self) -> list[ClientRecord]:
        rows = await self.store.fetch_all("SELECT * FROM clients", pool="agents")
        return [ClientRecord.from_row(row) for row in rows]

    async def get_many(self, client_ids: list[str]) -> list[ClientRecord]:
        """These clients' records (those that exist)."""
        found: list[ClientRecord] = []
        for start in range(0, len(client_ids), 500):
            chunk = client_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = await self.store.fetch_all(
                f"SELECT * FROM clients WHERE client_id IN ({marks})", tuple(chunk),
                pool="agents")
            found += [ClientRecord.from_row(row) for row in rows]
        return found

    async def record_hello(self, client_id: str, public_key: bytes, facts_json: str,
                           labels: list[str], last_hunt_timestamp: int, now: float) -> bool:
        """Store what a client said on connecting; True when it is newly enrolled. Raises
        ``KeyMismatch`` when the ID belongs to another key."""
        labels_json = json.dumps(labels)

        def op(tx: Transaction) -> bool:
            tx.announce(client_record_topic(client_id))
            row = tx.one("SELECT public_key FROM clients WHERE client_id = ?", (client_id,))
            if row is None:
                tx.execute(
                    "INSERT INTO clients (client_id, public_key, first_seen, last_seen, facts,"
                    " agent_labels, last_hunt_timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (client_id, public_key, now, now, facts_json, labels_json,
                     last_hunt_timestamp),
                )
                return True
            if bytes(row["public_key"]) != public_key:
                raise KeyMismatch(client_id)
            tx.execute(
                "UPDATE clients SET last_seen = ?, facts = ?, agent_labels = ?,"
                " last_hunt_timestamp = ? WHERE client_id = ?",
                (now, facts_json, labels_json, last_hunt_timestamp, client_id),
            )
            return False

        return await self.store.write(op)

    async def touch(self, client_id: str, now: float, last_hunt_timestamp: int) -> None:
        await self.store.write(lambda tx: tx.execute(
            "UPDATE clients SET last_seen = ?, last_hunt_timestamp = ? WHERE client_id = ?",
            (now, last_hunt_timestamp, client_id),
        ))

    async def set_operator_labels(self, client_id: str, labels: list[str],
                                  audit: AuditEntry | None = None) -> None:
        text = json.dumps(labels)

        def op(tx: Transaction) -> None:
            tx.announce(client_record_topic(client_id))
            tx.execute("UPDATE clients SET operator_labels = ? WHERE client_id = ?",
                       (text, client_id))
            if audit is not None:
                append_audit(tx, audit)

        await self.store.write(op)

    async def revoke(self, client_id: str, now: float, audit: AuditEntry | None = None
                     ) -> bool:
        """Refuse the client's key from now on; False when it was revoked already (the
        operator's action is recorded either way: it was asked and holds)."""

        def op(tx: Transaction) -> bool:
            tx.announce(client_record_topic(client_id))
            changed = bool(tx.changed(
                "UPDATE clients SET revoked = ? WHERE client_id = ? AND revoked IS NULL",
                (now, client_id),
            ))
            if audit is not None:
                append_audit(tx, audit)
            return changed

        return await self.store.write(op)


def facts_json(facts: dict[str, Any]) -> str:
    """The facts as stored: JSON text (agents' facts are checked JSON values at the edge:
    finite numbers, text keys, bounded depth)."""
    return json.dumps(facts, allow_nan=False)
