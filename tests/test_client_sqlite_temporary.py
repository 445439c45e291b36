"""sqlite() on real database files (plain, locked by another connection, in WAL mode), and
tempfile()/tempdir(), whose files last as long as the query."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agent.flow_runner import FlowRunner
from agent.outbox import Outbox
from agent.plugins import client_registry
from agent.plugins.temporary import TEMPORARIES_SERVICE, QueryTemporaries
from velotui.vql import collect, run
from velotui.wire.protocol import FlowRequest, decode


async def query(text: str, **env: Any) -> tuple[list[dict[str, Any]], list[str]]:
    errors: list[str] = []
    rows = await collect(
        text, registry=client_registry(), env=env,
        on_log=lambda level, message: errors.append(message) if level == "error" else None,
    )
    return rows, errors


def make_database(path: Path, *, wal: bool = False) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    if wal:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA wal_autocheckpoint = 0")  # committed rows stay in the -wal
    connection.execute("CREATE TABLE hashes (path TEXT, md5 TEXT, size INTEGER)")
    connection.executemany("INSERT INTO hashes VALUES (?, ?, ?)",
                           [("/bin/a", "aa", 1), ("/bin/b", "bb", 2)])
    return connection


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# sqlite ---------------------------------------------------------------------------------------


async def test_sqlite_runs_a_query_with_arguments(tmp_path: Path) -> None:
    database = tmp_path / "hashes.db"
    make_database(database).close()
    rows, errors = await query(
        "SELECT * FROM sqlite(file=F, query='SELECT path, size AS Size FROM hashes ORDER BY path')",
        F=str(database),
    )
    assert errors == []
    assert rows == [{"path": "/bin/a", "Size": 1}, {"path": "/bin/b", "Size": 2}]
    rows, errors = await query(
        "SELECT * FROM sqlite(file=F, query='SELECT path FROM hashes WHERE md5 = ?', args='bb')",
        F=str(database),
    )
    assert (rows, errors) == ([{"path": "/bin/b"}], [])
    rows, errors = await query(
        "SELECT * FROM sqlite(file=F, query='SELECT path FROM hashes WHERE size = :size',"
        " args=dict(size=1))",
        F=str(database),
    )
    assert (rows, errors) == ([{"path": "/bin/a"}], [])


async def test_sqlite_never_writes(tmp_path: Path) -> None:
    database = tmp_path / "hashes.db"
    make_database(database).close()
    before = file_digest(database)
    rows, errors = await query(
        "SELECT * FROM sqlite(file=F, query='INSERT INTO hashes VALUES (?, ?, ?)',"
        " args=['/bin/c', 'cc', 3])",
        F=str(database),
    )
    assert rows == []
    assert len(errors) == 1
    assert errors[0].startswith(f"sqlite(): {database}: attempt to write a readonly database")
    assert file_digest(database) == before


async def test_sqlite_reads_a_locked_database_from_a_copy(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    owner = make_database(database)
    owner.execute("BEGIN EXCLUSIVE")
    owner.execute("INSERT INTO hashes VALUES ('/bin/uncommitted', 'zz', 9)")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            sqlite3.connect(database, timeout=0).execute("SELECT * FROM hashes").fetchall()
        rows, errors = await query(
            "SELECT path FROM sqlite(file=F, query='SELECT path FROM hashes ORDER BY path')",
            F=str(database),
        )
    finally:
        owner.execute("ROLLBACK")
        owner.close()
    assert errors == []
    assert rows == [{"path": "/bin/a"}, {"path": "/bin/b"}]


async def test_sqlite_sees_rows_still_in_the_wal_file(tmp_path: Path) -> None:
    database = tmp_path / "wal.db"
    owner = make_database(database, wal=True)
    try:
        owner.execute("INSERT INTO hashes VALUES ('/bin/recent', 'cc', 3)")
        wal = Path(str(database) + "-wal")
        assert wal.stat().st_size > 0
        before = (file_digest(database), file_digest(wal))
        rows, errors = await query(
            "SELECT path FROM sqlite(file=F, query='SELECT path FROM hashes ORDER BY path')",
            F=str(database),
        )
        assert (file_digest(database), file_digest(wal)) == before
    finally:
        owner.close()
    assert errors == []
    assert rows == [{"path": "/bin/a"}, {"path": "/bin/b"}, {"path": "/bin/recent"}]


async def test_sqlite_on_bad_input_logs_one_line(tmp_path: Path) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello " * 100)
    database = tmp_path / "hashes.db"
    make_database(database).close()
    cases = [
        ("SELECT * FROM sqlite(file=F, query='SELECT 1')", str(not_a_database),
         f"sqlite(): {not_a_database}: file is not a database"),
        ("SELECT * FROM sqlite(file=F, query='SELECT 1')", str(tmp_path / "missing.db"),
         f"sqlite(): {tmp_path / 'missing.db'}: No such file or directory"),
        ("SELECT * FROM sqlite(file=F, query='SELECT nope FROM hashes')", str(database),
         f"sqlite(): {database}: no such column: nope"),
        ("SELECT * FROM sqlite(file=F, query='SELECT 1', accessor='zip')", str(database),
         "sqlite(): accessor 'zip' is not supported (supported: auto, file, data)"),
    ]
    for text, path, expected in cases:
        rows, errors = await query(text, F=path)
        assert (rows, errors) == ([], [expected])


# tempfile and tempdir -------------------------------------------------------------------------


async def test_tempfile_and_tempdir_last_as_long_as_the_query(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    rows = run(
        "LET Folder <= tempdir() "
        "SELECT tempfile(data=['echo ', 'hi'], extension='.sh', permissions='x') AS Script,"
        " tempfile(data='plain') AS Plain, Folder FROM scope()",
        registry=client_registry(),
    )
    async for row in rows:
        # While the query runs, the files exist with their content.
        assert Path(row["Script"]).read_text() == "echo hi"
        assert row["Script"].endswith(".sh")
        assert os.stat(row["Script"]).st_mode & stat.S_IXUSR
        assert not os.stat(row["Plain"]).st_mode & stat.S_IXUSR
        assert Path(row["Folder"]).is_dir()
        (Path(row["Folder"]) / "inside.txt").write_text("x")
        seen.append(row)
    del rows
    [row] = seen
    for path in row.values():
        assert not os.path.exists(path)


async def test_temporaries_removed_by_the_host_keep_remove_last_for_the_end() -> None:
    temporaries = QueryTemporaries()
    rows = await collect(
        "SELECT tempdir(remove_last=TRUE) AS Last, tempfile(data='x') AS First FROM scope()",
        registry=client_registry(), services={TEMPORARIES_SERVICE: temporaries},
    )
    [row] = rows
    assert temporaries.paths() == [row["First"], row["Last"]]
    assert os.path.exists(row["First"]) and os.path.exists(row["Last"])
    temporaries.remove_all()
    assert not os.path.exists(row["First"]) and not os.path.exists(row["Last"])


async def test_tempfile_bad_arguments_are_one_line_errors() -> None:
    rows, errors = await query(
        "SELECT tempfile(data=dict(a=1)) AS A, tempfile(permissions='rw') AS B,"
        " tempfile(extension='../x') AS C FROM scope()"
    )
    assert rows == [{"A": None, "B": None, "C": None}]
    assert errors == [
        "tempfile(): data must be a string or a list of strings, not {'a': 1}",
        "tempfile(): permissions may only be 'x' (executable), not 'rw'",
        "tempfile(): extension must be a file name ending, not '../x'",
    ]


async def test_a_flows_temporary_files_are_gone_when_the_flow_ends(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox.sqlite")
    request = FlowRequest(
        flow_id="F.temp",
        query="LET Folder <= tempdir() SELECT tempfile(data='x') AS File, Folder,"
              " stat(filename=tempfile(data='abc')).Size AS Size FROM scope()",
    )
    runner = FlowRunner(request, outbox, client_registry())
    status = await asyncio.wait_for(runner.run(), 30)
    assert status.state == "finished"
    messages = [decode(frame, "agent") for frame in await outbox.unacked_frames()]
    rows = [row for message in messages if message.TYPE == "rows" for row in message.rows]
    rows += [row for message in messages if message.TYPE == "status"
             for row in message.final_rows or []]
    [row] = rows
    assert row["Size"] == 3  # the file existed while the query ran
    assert row["File"].startswith(tempfile.gettempdir())
    assert not os.path.exists(row["File"]) and not os.path.exists(row["Folder"])
