"""Copying a SQLite datastore's database into PostgreSQL (``velotui datastore migrate``).

Every table of the schema (but ``meta``, where each database records its own schema version) is
copied in one PostgreSQL transaction, in batches read from the SQLite file in rowid order, ids
kept: a failure leaves the target as it was. Identity sequences then continue after the copied
ids. After the commit the copy is checked: the same number of rows in every table, and the audit
chain intact and ending at the same record.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velotui.server.data.audit import ChainCheck
from velotui.server.data.database import Database
from velotui.server.data.schema import POSTGRESQL_EXTRA_COLUMNS, TABLES

BATCH_ROWS = 1000
_BEFORE_EVERY_ROWID = -(2**63)  # SQLite's smallest integer
# Each database records its own schema version here; nothing else is in it.
_NOT_COPIED = ("meta",)
TABLE_NAMES = tuple(name for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", TABLES)
                    if name not in _NOT_COPIED)
# SQLite's implicit rowid that PostgreSQL holds as a column (an export's snapshot bound).
_ROWID_COLUMNS = {table: column for table, column, _definition in POSTGRESQL_EXTRA_COLUMNS
                  if column == "rowid"}


class MigrationError(Exception):
    """The migration was refused or failed; the message says why in one line."""


@dataclass(frozen=True)
class TableCopied:
    """One table copied: its name and how many rows."""

    table: str
    rows: int


@dataclass(frozen=True)
class MigrationResult:
    """What was copied, and the copied audit chain as checked (as the original's: intact, or
    broken at the same record)."""

    tables: list[TableCopied]
    audit: ChainCheck


async def migrate_to_postgresql(
    source: Path, target: Database, *,
    copied: Callable[[TableCopied], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> MigrationResult:
    """Copy the SQLite database at ``source`` (upgraded to the current schema first; no server
    may be writing it) into ``target``, an open PostgreSQL ``Database`` whose tables are empty.
    ``copied`` is called (in the store's writer thread) after each table. Returns what was
    copied and verified. Raises MigrationError: a target that is not PostgreSQL or not empty
    (nothing written), a copy that failed (nothing committed), or a check that failed after
    the commit."""
    if getattr(target.store, "dialect", "sqlite") != "postgresql":
        raise MigrationError("the target is not a PostgreSQL database")
    occupied = [f"{table} ({rows} rows)" for table, rows in (await _counts(target)).items()
                if rows]
    if occupied:
        raise MigrationError("the target database is not empty: " + ", ".join(occupied[:3])
                             + (" ..." if len(occupied) > 3 else "")
                             + "; give an empty database")
    upgraded = await Database.open(source)  # brings an older datastore to the current schema
    await upgraded.close()
    try:
        tables = await target.store.write(
            lambda tx: _copy_all(tx, source, batch_rows, copied))
    except sqlite3.Error as error:
        raise MigrationError(f"cannot read {source}: {error}") from None
    return await _verify(source, target, tables)


def _copy_all(tx: Any, source: Path, batch_rows: int,
              copied: Callable[[TableCopied], None] | None) -> list[TableCopied]:
    """The copy, inside the target's transaction."""
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        tables = []
        for table in TABLE_NAMES:
            try:
                rows = _copy_table(tx, reader, table, batch_rows)
            except sqlite3.Error:
                raise  # the source's fault: said as such by the caller
            except Exception as error:  # PostgreSQL refused a row (psycopg's errors)
                said = str(error).strip().splitlines()
                raise MigrationError(f"copying {table} failed, nothing was written:"
                                     f" {said[0] if said else type(error).__name__}") from None
            tables.append(TableCopied(table, rows))
            if copied is not None:
                copied(tables[-1])
        _continue_identities(tx)
        return tables
    finally:
        reader.close()


def _copy_table(tx: Any, reader: sqlite3.Connection, table: str, batch_rows: int) -> int:
    columns = [row[1] for row in reader.execute(f"PRAGMA table_info({table})")]
    if table in _ROWID_COLUMNS:
        columns.append(_ROWID_COLUMNS[table])
    selected = ", ".join(f'"{column}"' if column != "rowid" else "rowid" for column in columns)
    insert = (f"INSERT INTO {table} ({', '.join(columns)})"
              f" VALUES ({', '.join('?' for _ in columns)})")
    after, total = _BEFORE_EVERY_ROWID, 0
    while True:
        # Pages by rowid: each batch starts where the last ended, however big the table.
        rows = reader.execute(
            f"SELECT rowid AS _at, {selected} FROM {table} WHERE rowid > ? ORDER BY rowid"
            " LIMIT ?", (after, batch_rows)).fetchall()
        if not rows:
            return total
        tx.executemany(insert, [row[1:] for row in rows])
        total += len(rows)
        after = rows[-1][0]


def _continue_identities(tx: Any) -> None:
    """Make each identity column (audit and approval ids, flow_rows' rowid) go on after the
    largest id copied, as SQLite's would."""
    for row in tx.all("SELECT table_name, column_name FROM information_schema.columns"
                      " WHERE table_schema = current_schema() AND is_identity = 'YES'"):
        table, column = row["table_name"], row["column_name"]
        tx.one(f"SELECT setval(pg_get_serial_sequence(?, ?),"
               f" (SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}), false)",
               (table, column))


async def _counts(db: Database) -> dict[str, int]:
    counts = {}
    for table in TABLE_NAMES:
        row = await db.store.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")
        counts[table] = int(row["n"]) if row is not None else 0
    return counts


async def _verify(source: Path, target: Database, tables: list[TableCopied]
                  ) -> MigrationResult:
    copied = await _counts(target)
    original = await Database.open(source)
    try:
        expected = await _counts(original)
        source_chain = await original.audit.verify()
        source_head = await original.audit.entries(1)
    finally:
        await original.close()
    differing = [f"{table} {copied[table]} of {expected[table]}" for table in TABLE_NAMES
                 if copied[table] != expected[table]]
    if differing:
        raise MigrationError("the copy's row counts differ: " + ", ".join(differing)
                             + "; the datastore still uses SQLite")
    chain = await target.audit.verify()
    if chain != source_chain:
        raise MigrationError(f"the copied audit chain does not check as the original does"
                             f" ({chain.records} records, broken at {chain.broken_at}, against"
                             f" {source_chain.records}, broken at {source_chain.broken_at});"
                             " the datastore still uses SQLite")
    head = await target.audit.entries(1)
    if [entry["hash"] for entry in head] != [entry["hash"] for entry in source_head]:
        raise MigrationError("the copied audit chain does not end where the original does;"
                             " the datastore still uses SQLite")
    return MigrationResult(tables, chain)
