"""The audit hash chain on a real SQLite file: intact as written; a record edited, removed or
moved (the file changed behind the server's back) breaks it at the first record that no longer
fits, which verify names; an older datastore's records are chained, in id order, at upgrade."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

from velotui.server.data import AuditEntry, Database
from velotui.server.data.audit import GENESIS, record_hash

RECORDS = 5


async def written(path: Path, count: int = RECORDS) -> None:
    db = await Database.open(path)
    try:
        for n in range(1, count + 1):
            await db.audit.append(AuditEntry("alice", "start", f"H.{n:013d}", {"n": n}))
        await db.audit.append(AuditEntry("bob", "delete", "H.X"), outcome="refused",
                              reason="H.X is running: stop it before deleting it")
    finally:
        await db.close()


async def verified(path: Path) -> tuple[int, int | None, str]:
    db = await Database.open(path)
    try:
        check = await db.audit.verify()
        return check.records, check.broken_at, check.problem
    finally:
        await db.close()


def edit(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in statements:
            connection.execute(statement)


async def test_an_untouched_chain_is_intact_and_follows_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    await written(path)
    assert await verified(path) == (RECORDS + 1, None, "")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM audit ORDER BY id").fetchall()
    assert rows[0]["previous"] == GENESIS
    for before, row in itertools.pairwise(rows):
        assert row["previous"] == before["hash"]
    last = rows[-1]
    assert (last["outcome"], last["reason"]) == ("refused",
                                                 "H.X is running: stop it before deleting it")
    # The hash as the contract states it, computed here independently
    body = json.dumps({"id": last["id"], "time": last["time"], "actor": "bob",
                       "action": "delete", "target": "H.X", "details": {},
                       "outcome": "refused", "reason": last["reason"]},
                      sort_keys=True, separators=(",", ":"))
    assert last["hash"] == hashlib.sha256((last["previous"] + body).encode()).hexdigest()


async def test_an_edited_record_breaks_the_chain_at_itself(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    await written(path)
    edit(path, """UPDATE audit SET actor = 'mallory' WHERE id = 3""")
    records, broken_at, problem = await verified(path)
    assert (records, broken_at) == (2, 3)
    assert "changed" in problem

    path = tmp_path / "details.db"
    await written(path)
    edit(path, """UPDATE audit SET details = '{"n":99}' WHERE id = 4""")
    assert (await verified(path))[:2] == (3, 4)


async def test_an_edit_that_also_rehashes_the_record_breaks_at_the_next(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    await written(path)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM audit WHERE id = 2").fetchone()
        forged = record_hash(row["previous"], 2, row["time"], "mallory", row["action"],
                             row["target"], json.loads(row["details"]), row["outcome"],
                             row["reason"])
        connection.execute("UPDATE audit SET actor = 'mallory', hash = ? WHERE id = 2",
                           (forged,))
    records, broken_at, problem = await verified(path)
    assert (records, broken_at) == (2, 3)  # record 2 fits its hash; 3 no longer follows it
    assert "removed, added or moved" in problem


async def test_a_removed_record_breaks_the_chain_at_the_one_after(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    await written(path)
    edit(path, "DELETE FROM audit WHERE id = 3")
    records, broken_at, problem = await verified(path)
    assert (records, broken_at) == (2, 4)
    assert "removed" in problem

    path = tmp_path / "first.db"
    await written(path)
    edit(path, "DELETE FROM audit WHERE id = 1")
    assert (await verified(path))[:2] == (0, 2)


async def test_reordered_records_break_the_chain_at_the_first_moved(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    await written(path)
    # records 2 and 3 trade places: each keeps its content and hashes, under the other's id
    edit(path, "UPDATE audit SET id = 100 WHERE id = 2",
         "UPDATE audit SET id = 2 WHERE id = 3",
         "UPDATE audit SET id = 3 WHERE id = 100")
    records, broken_at, _problem = await verified(path)
    assert (records, broken_at) == (1, 2)


async def test_records_of_an_older_datastore_are_chained_at_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "velotui.db"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        # the audit table as velotui made it before the chain (schema 5)
        connection.execute(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
            " actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',"
            " details TEXT NOT NULL DEFAULT '{}')")
        # ids out of insertion order, and a gap: the chain follows ids
        for id, action in ((7, "stop"), (2, "create"), (4, "start")):
            connection.execute("INSERT INTO audit (id, time, actor, action, target, details)"
                               " VALUES (?, ?, 'operator', ?, 'H.1', '{\"a\": [1, 2]}')",
                               (id, 1_700_000_000.5 + id, action))

    db = await Database.open(path)
    try:
        entries = await db.audit.entries(100)
        assert [e["id"] for e in entries] == [2, 4, 7]
        assert entries[0]["previous"] == GENESIS
        assert [e["previous"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
        assert all(e["outcome"] == "allowed" and e["reason"] is None for e in entries)
        assert entries[0]["details"] == {"a": [1, 2]}
        await db.audit.append(AuditEntry("alice", "archive", "H.1"))
        check = await db.audit.verify()
        assert (check.intact, check.records) == (True, 4)
    finally:
        await db.close()

    # Opening again chains nothing twice
    hashes = [row[0] for row in sqlite3.connect(path).execute(
        "SELECT hash FROM audit ORDER BY id")]
    db = await Database.open(path)
    await db.close()
    assert [row[0] for row in sqlite3.connect(path).execute(
        "SELECT hash FROM audit ORDER BY id")] == hashes
