"""``velotui datastore migrate --to postgresql://...``: move a datastore's database from its
SQLite file into PostgreSQL, so that several frontends can share it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from velotui.cli.connection import add_datastore_option, existing_datastore
from velotui.server.data import Database, DatabaseUnreachable
from velotui.server.data.database import is_postgresql_url
from velotui.server.data.migrate import MigrationError, TableCopied, migrate_to_postgresql
from velotui.server.datastore import Datastore, DatastoreError
from velotui.server.remote import RemoteError


def add_parsers(subparsers: Any) -> None:
    datastore = subparsers.add_parser("datastore", help="the datastore itself (migrate)")
    commands = datastore.add_subparsers(dest="datastore_command", metavar="COMMAND",
                                        required=True)
    migrate = commands.add_parser(
        "migrate", help="copy the datastore's SQLite database into PostgreSQL",
        description="Copy every table of the datastore's SQLite database into an empty "
        "PostgreSQL database in one transaction, check the copy (row counts, audit chain), "
        "then record the database in the datastore so that the next start uses it. Stop the "
        "server first. Uploaded files stay where they are.")
    add_datastore_option(migrate)
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="the empty PostgreSQL database: postgresql://USER@HOST:PORT/DB")
    migrate.set_defaults(handler=migrate_main)


def migrate_main(args: argparse.Namespace) -> int:
    if not is_postgresql_url(args.to):
        print("velotui datastore migrate: --to must be a PostgreSQL URL"
              " (postgresql://USER@HOST:PORT/DB)", file=sys.stderr)
        return 2
    try:
        datastore = existing_datastore(args.datastore)
        _check_source(datastore)
        return asyncio.run(_migrate(datastore, args.to))
    except (RemoteError, DatastoreError, DatabaseUnreachable, MigrationError) as error:
        print(f"velotui datastore migrate: {error}", file=sys.stderr)
        return 1


def _check_source(datastore: Datastore) -> None:
    if datastore.database_url() is not None:
        raise MigrationError(f"{datastore.root} uses PostgreSQL already (its datastore.json)")
    pid = datastore.running_server_pid()
    if pid is not None:
        # What it wrote after the copy began would not be in the copy.
        raise MigrationError(f"a server is running on {datastore.root} (process {pid}):"
                             " stop it first")


async def _migrate(datastore: Datastore, url: str) -> int:
    target = await Database.open(url)
    try:
        result = await migrate_to_postgresql(datastore.database_path, target,
                                             copied=_print_copied)
    finally:
        await target.close()
    datastore.set_database_url(url)
    rows = sum(table.rows for table in result.tables)
    chain = ("intact" if result.audit.intact
             else f"broken at record {result.audit.broken_at} as in the original")
    print(f"verified {len(result.tables)} tables, {rows} rows; audit chain {chain}"
          f" ({result.audit.records} records)")
    print(f"{datastore.root} now uses PostgreSQL (recorded in datastore.json); uploads stay in"
          f" {datastore.uploads_location()}")
    return 0


def _print_copied(copied: TableCopied) -> None:
    # Called from the store's writer thread, as each table is copied.
    print(f"{copied.table}: {copied.rows} rows", flush=True)
