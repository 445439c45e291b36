"""The PostgreSQL store on a real PostgreSQL: group commit, a failing operation undone alone,
guarded state changes, restart, the schema's version and an older schema brought up to date;
and the datastore that records which database it uses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.conftest import open_datastore
from tests.data_builder import DataBuilder
from tests.postgres import PostgresServer, create_database
from tests.processes import VELOTUI, ServerProcess, free_port, wait_for
from velotui.cli import main as velotui_main
from velotui.server.data import Database, DatabaseUnreachable
from velotui.server.data.audit import AuditEntry
from velotui.server.data.flows import Ending
from velotui.server.data.postgres_store import PostgresRow, PostgresStore, translate
from velotui.server.data.schema import SCHEMA_VERSION
from velotui.server.datastore import Datastore

NOW = 1_800_000_000.0


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {queue: n for queue, n in counts.items() if n}


def insert(value: int):
    def op(tx) -> int:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{value}", str(value)))
        return value

    return op


async def test_concurrent_writes_share_commits_and_all_land_and_outlive_a_restart(
        postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    results = await asyncio.gather(*(store.write(insert(i)) for i in range(300)))
    assert results == list(range(300))
    assert store.operations == 300
    assert store.commits < 300  # grouped
    await store.close()
    reopened = await PostgresStore.open(postgres_url)
    row = await reopened.fetch_one("SELECT COUNT(*) AS n FROM meta WHERE key LIKE 'k%'")
    assert row["n"] == 300 and row[0] == 300
    await reopened.close()


async def test_a_failing_operation_is_undone_alone(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)

    def half_then_fail(tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('half', '1')")
        raise ValueError("no")

    def duplicate_key(tx) -> None:
        # A statement PostgreSQL refuses aborts its transaction: only this op's savepoint goes.
        tx.execute("INSERT INTO meta (key, value) VALUES ('k1', 'again')")

    outcomes = await asyncio.gather(
        store.write(insert(1)), store.write(half_then_fail), store.write(duplicate_key),
        store.write(insert(2)), return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[3] == 2
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], psycopg.errors.UniqueViolation)
    keys = {row["key"]: row["value"] for row in await store.fetch_all("SELECT * FROM meta")}
    assert keys["k1"] == "1" and keys["k2"] == "2" and "half" not in keys
    await store.close()


async def test_a_commit_wakes_who_waits_on_what_it_announced(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    woken = store.changed("hunts")
    untouched = store.changed("audit")

    def announce(tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        tx.announce("hunts")

    await store.write(announce)
    await asyncio.wait_for(woken.wait(), 10)
    assert not untouched.is_set()
    await store.close()


async def test_rows_read_by_name_and_by_position_as_sqlite_rows_do(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    await store.write(insert(7))
    row = await store.fetch_one(
        "SELECT key, value, key AS again, COUNT(*) OVER () AS n, SUM(1) OVER () AS total,"
        " ? AS flag FROM meta WHERE key = 'k7'", (True,))
    assert isinstance(row, PostgresRow)
    assert (row["key"], row[1], row["again"], row["n"], row["flag"]) == ("k7", "7", "k7", 1, 1)
    assert row["total"] == 1 and isinstance(row["total"], int)  # NUMERIC, as SQLite's integer
    assert dict(row) == {"key": "k7", "value": "7", "again": "k7", "n": 1, "total": 1,
                         "flag": 1}
    assert list(row) == ["k7", "7", "k7", 1, 1, 1]
    await store.close()


async def test_text_comes_back_as_given_even_with_nul_which_postgresql_text_cannot_hold(
        postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    odd = ["a\x00b", "\U0010ffff0", "\x00\U0010ffff\x00", "plain", "\U0010ffff"]
    for n, text in enumerate(odd):
        await store.write(lambda tx, n=n, text=text: tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)", (f"odd{n}", text)))
    rows = await store.fetch_all("SELECT key, value FROM meta WHERE key LIKE 'odd%' ORDER BY key")
    assert [row["value"] for row in rows] == odd
    found = await store.fetch_one("SELECT key FROM meta WHERE value = ?", ("a\x00b",))
    assert found["key"] == "odd0"
    await store.close()


def test_placeholders_become_psycopgs_outside_quotes_only() -> None:
    assert translate("SELECT ? WHERE a LIKE 'k%?' AND b = ?") == \
        "SELECT %s WHERE a LIKE 'k%%?' AND b = %s"
    assert translate('SELECT "odd?name" FROM t WHERE x % 2 = ?') == \
        'SELECT "odd?name" FROM t WHERE x %% 2 = %s'


async def test_a_stopped_hunt_is_never_revived_and_late_data_leaves_its_flows_cancelled(
        postgres_url: str, tmp_path: Path) -> None:
    db = await Database.open(postgres_url)
    build = DataBuilder(db, tmp_path / "uploads")
    await build.client("C.1", {"Fqdn": "one"}, first_seen=NOW, last_seen=NOW)
    await build.client("C.2", {"Fqdn": "two"}, first_seen=NOW, last_seen=NOW)
    await build.hunt("H.1", "SELECT 1 FROM scope()", created=NOW, started=NOW, expires=NOW + 3600)
    await build.check("H.1", "C.1", matched=True, at=NOW)
    await build.check("H.1", "C.2", matched=True, at=NOW)
    flow_id = await build.collect("H.1", "C.1", created=NOW, started=NOW, finished=None,
                                  batches=[[{"a": 1}]])
    stopped = await db.hunts.stop("H.1", "stopped by test", NOW + 1,
                                  audit=AuditEntry("tester", "stop", "H.1"))
    assert stopped is not None and stopped.hunt.state == "stopped"
    assert [c.record.state for c in stopped.ended] == ["cancelled"]
    # Rows in flight, a scheduled start, the recruiter and a second stop: none revives it.
    late = await db.flows.ingest_rows("C.1", flow_id, 2, [{"a": 2}], Ending("finished"),
                                      NOW + 2)
    assert late.verdict == "inactive"
    assert await db.hunts.start_scheduled("H.1", NOW + 3, 1) is None
    [candidate] = await db.hunts.pending("H.1", 10)
    assert await db.hunts.recruit("H.1", 1, lambda _c: None, NOW + 4, [candidate]) is None
    assert await db.hunts.stop("H.1", "again", NOW + 5) is None
    flow = await db.flows.get("C.1", flow_id)
    assert flow is not None and (flow.state, flow.rows) == ("cancelled", 1)
    [hunt] = await db.hunts.load()
    assert hunt.state == "stopped" and nonzero(hunt.counts) == {"errors": 1, "pending": 1}
    assert (await db.audit.verify()).intact
    await db.close()
    # Everything is there after a restart, and exactly so.
    db = await Database.open(postgres_url)
    [hunt] = await db.hunts.load()
    assert hunt.state == "stopped" and nonzero(hunt.counts) == {"errors": 1, "pending": 1}
    assert sorted(c.client_id for c in await db.clients.load()) == ["C.1", "C.2"]
    assert [batch async for batch in db.flows.row_batches("C.1", flow_id)] == [
        (1, [{"a": 1}])]
    assert (await db.audit.verify()).records == 1
    await db.close()


async def test_the_schema_version_is_recorded(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    row = await store.fetch_one("SELECT value FROM meta WHERE key = 'schema_version'")
    assert row["value"] == str(SCHEMA_VERSION)
    await store.close()


async def test_an_older_schema_is_brought_up_to_date_with_its_audit_chained(
        postgres_url: str) -> None:
    # What an older velotui's PostgreSQL held: hunts without the schedule and archive
    # columns, an audit without its hash chain, schema version 4.
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            " INSERT INTO meta VALUES ('schema_version', '4');"
            " CREATE TABLE hunts (hunt_id TEXT PRIMARY KEY, description TEXT NOT NULL"
            " DEFAULT '', query TEXT NOT NULL, client_condition TEXT NOT NULL,"
            " server_condition TEXT NOT NULL DEFAULT '', rate DOUBLE PRECISION NOT NULL"
            " DEFAULT 0, client_limit BIGINT NOT NULL DEFAULT 0, expires DOUBLE PRECISION"
            " NOT NULL, timeout DOUBLE PRECISION NOT NULL, max_rows BIGINT NOT NULL DEFAULT 0,"
            " max_upload_bytes BIGINT NOT NULL DEFAULT 0, state TEXT NOT NULL, stop_reason"
            " TEXT, created DOUBLE PRECISION NOT NULL, creator TEXT NOT NULL DEFAULT '',"
            " started DOUBLE PRECISION, start_timestamp BIGINT NOT NULL DEFAULT 0,"
            " stopped DOUBLE PRECISION);"
            " INSERT INTO hunts (hunt_id, query, client_condition, expires, timeout, state,"
            " created) VALUES ('H.OLD', 'SELECT 1 FROM scope()', '', 2e9, 600, 'stopped', 1);"
            " CREATE TABLE audit (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " time DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
            " target TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '{}');"
            " INSERT INTO audit (time, actor, action, target) VALUES (1, 'old', 'create',"
            " 'H.OLD'), (2, 'old', 'stop', 'H.OLD');")
    db = await Database.open(postgres_url)
    version = await db.store.fetch_one("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version["value"] == str(SCHEMA_VERSION)
    [hunt] = await db.hunts.load()
    assert (hunt.hunt_id, hunt.state, hunt.max_errors, hunt.archived, hunt.copied_from) == (
        "H.OLD", "stopped", 0, None, "")
    check = await db.audit.verify()
    assert check.intact and check.records == 2
    await db.audit.append(AuditEntry("new", "export", "H.OLD"))  # the chain goes on
    assert (await db.audit.verify()).records == 3
    archived = await db.hunts.archive("H.OLD", NOW)
    assert archived is not None and archived.archived == NOW
    await db.close()


async def test_an_unreachable_database_is_one_line_without_its_password(
        postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{postgres_server.port}/no_such_database"
    with pytest.raises(DatabaseUnreachable) as refused:
        await Database.open(url)
    message = str(refused.value)
    assert "\n" not in message and "secret" not in message
    assert "no_such_database" in message


def test_the_datastore_records_its_database_beside_other_settings(tmp_path: Path) -> None:
    datastore = Datastore.open(tmp_path / "datastore")
    assert datastore.database_url() is None
    assert datastore.database_target() == datastore.database_path
    datastore.write_settings({"uploads": "/shared/uploads"})  # another part's key
    datastore.set_database_url("postgresql://velotui@db.example:5432/velotui")
    again = Datastore.open(tmp_path / "datastore")
    assert again.database_target() == "postgresql://velotui@db.example:5432/velotui"
    assert json.loads(again.settings_path.read_text()) == {
        "database": "postgresql://velotui@db.example:5432/velotui",
        "uploads": "/shared/uploads"}
    assert again.settings_path.stat().st_mode & 0o777 == 0o600
    again.set_database_url("sqlite")
    assert again.read_settings() == {"uploads": "/shared/uploads"}
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        again.set_database_url("mysql://somewhere/db")


def test_serve_refuses_a_database_that_is_no_postgresql_url_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = velotui_main(["serve", "--datastore", str(tmp_path / "datastore"),
                           "--database", "/var/lib/velotui.db"])
    said = capsys.readouterr().err
    assert status == 2
    assert said.strip().splitlines() == [
        "velotui serve: not a PostgreSQL URL: '/var/lib/velotui.db'"
        " (postgresql://USER@HOST:PORT/DB, or 'sqlite')"]
    assert not (tmp_path / "datastore" / "datastore.json").exists()


async def test_a_server_on_a_datastore_that_names_postgresql_keeps_nothing_in_sqlite(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    from velotui.server.server import Server

    url = create_database(postgres_server)
    server = Server(open_datastore(tmp_path / "datastore", url), "127.0.0.1:0")
    await server.start()
    try:
        api = server.service("tester")
        hunt = await api.create_hunt(query="SELECT 1 FROM scope()")
    finally:
        await server.stop()
    with psycopg.connect(url) as connection:
        [(stored,)] = connection.execute("SELECT hunt_id FROM hunts").fetchall()
    assert stored == hunt["hunt_id"]
    sqlite_file = tmp_path / "datastore" / "velotui.db"
    if sqlite_file.stat().st_size:
        with sqlite3.connect(sqlite_file) as connection:
            assert connection.execute(
                "SELECT name FROM sqlite_master WHERE name = 'hunts'").fetchall() == []


def test_serve_with_a_database_records_it_and_keeps_its_data_there(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = create_database(postgres_server)
    datastore = tmp_path / "datastore"
    server = ServerProcess(datastore)
    log = open(server.log_path, "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [VELOTUI, "serve", "--datastore", str(datastore), "--listen",
         f"127.0.0.1:{server.port}", "--database", url],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(lambda: (datastore / "server.json").exists(), 60, what="the server to listen")
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert Datastore(datastore).database_url() == url
    with psycopg.connect(url) as connection:
        [(version,)] = connection.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    assert version == str(SCHEMA_VERSION)


def test_serve_on_an_unreachable_database_says_so_in_one_line_and_records_nothing(
        tmp_path: Path) -> None:
    url = f"postgresql://velotui:secret@127.0.0.1:{free_port()}/velotui"
    finished = subprocess.run(
        [VELOTUI, "serve", "--datastore", str(tmp_path / "datastore"), "--listen",
         "127.0.0.1:0", "--database", url], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    said = finished.stderr.strip().splitlines()
    assert len(said) == 1 and "Traceback" not in finished.stderr
    assert said[0].startswith("velotui serve: cannot open the PostgreSQL database"
                              " postgresql://velotui:***@127.0.0.1:")
    assert "secret" not in finished.stderr
    # A database that never opened is not recorded: the datastore stays as it was.
    assert Datastore(tmp_path / "datastore").database_url() is None
