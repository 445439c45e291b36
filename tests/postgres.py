"""A real PostgreSQL for the tests: a cluster of its own per test session (per xdist worker),
and a fresh empty database per test.

``postgres_server`` finds ``initdb`` and ``pg_ctl`` (PATH, then /usr/lib/postgresql/*/bin), makes a
cluster in a temporary folder and starts it on a free loopback port, its unix socket in that
folder. Both programs refuse to run as root: as root, the folder is given to the ``postgres``
system user (created when missing) and they run as that user. Where PostgreSQL is not installed,
every test that needs it is skipped, saying so. The cluster is stopped at the session's end.

The cluster trades durability for speed (``fsync=off``): the tests restart stores and servers,
never the machine.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SYSTEM_USER = "postgres"
_databases = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster: connect as ``user`` (trusted) to 127.0.0.1:``port``."""

    folder: Path
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def find_programs() -> tuple[str, str] | None:
    """initdb and pg_ctl, from PATH or the newest /usr/lib/postgresql/*/bin; None: none here."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda f: int(Path(f).parent.name.split(".")[0]), reverse=True):
        initdb, pg_ctl = f"{folder}/initdb", f"{folder}/pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _as_owner(command: list[str]) -> list[str]:
    """``command`` run as the cluster's owner: the postgres system user when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SYSTEM_USER, "--", *command]


def _ensure_system_user() -> None:
    with contextlib.suppress(KeyError):
        import pwd

        pwd.getpwnam(SYSTEM_USER)
        return
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    SYSTEM_USER], check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster(folder: Path) -> PostgresServer:
    """initdb into ``folder`` and start it; raises RuntimeError (with PostgreSQL's log) when it
    does not come up, pytest's skip when PostgreSQL is not installed."""
    programs = find_programs()
    if programs is None:
        pytest.skip("PostgreSQL is not installed here (no initdb/pg_ctl on PATH or in"
                    " /usr/lib/postgresql/*/bin): the PostgreSQL tests are skipped")
    initdb, pg_ctl = programs
    if os.geteuid() == 0:
        _ensure_system_user()
        shutil.chown(folder, SYSTEM_USER)
    data = folder / "data"
    subprocess.run(_as_owner([initdb, "-D", str(data), "-U", "postgres", "-A", "trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"]),
                   check=True, capture_output=True)
    log = folder / "postgres.log"
    for _attempt in range(5):  # another worker may take the port between probe and start
        port = _free_port()
        options = (f"-p {port} -k {folder} -h 127.0.0.1 -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = subprocess.run(
            _as_owner([pg_ctl, "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
                       "-o", options]),
            capture_output=True, text=True)
        if started.returncode == 0:
            return PostgresServer(folder, port)
    said = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
    raise RuntimeError(f"PostgreSQL did not start: {said}")


def stop_cluster(server: PostgresServer) -> None:
    programs = find_programs()
    assert programs is not None
    subprocess.run(_as_owner([programs[1], "stop", "-D", str(server.folder / "data"),
                              "-m", "immediate"]), capture_output=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This session's PostgreSQL cluster (skips the test where PostgreSQL is not installed)."""
    # Not under pytest's tmp folder: its parents are root's alone, and the cluster runs as the
    # postgres user when we are root.
    folder = Path(tempfile.mkdtemp(prefix="velotui-pg-"))
    try:
        server = start_cluster(folder)
        try:
            yield server
        finally:
            stop_cluster(server)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server: PostgresServer) -> str:
    """A new empty database on ``server``; its URL."""
    import psycopg

    name = f"t_{next(_databases)}"
    with psycopg.connect(server.url(), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database for this test alone."""
    return create_database(postgres_server)


def execute_by_hand(datastore: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Read or change a stopped server's database behind its back (what an older velotui, or a
    crash, could leave), whichever database its datastore uses; ``sql`` with ``?``
    placeholders. The rows it returned, as tuples."""
    url = datastore.database_url()
    if url is None:
        with contextlib.closing(sqlite3.connect(datastore.database_path)) as connection, \
                connection:
            return connection.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []
