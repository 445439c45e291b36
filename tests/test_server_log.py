"""The server's own log: agent text cannot forge or hide lines, the file rotates, and the
datastore's database, logs and secrets are readable by the server's user only."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ServerProcess
from tests.protocol_client import handshake
from velotui.server.datastore import Datastore
from velotui.server.server import Server
from velotui.server.server_log import (
    LOG_FORMAT,
    EscapingFormatter,
    PrivateRotatingFileHandler,
    escape_log_text,
)
from velotui.wire import protocol

needs_posix_modes = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX-only")
FORGED = "2099-01-01 00:00:00,000 INFO velotui.server.sessions: enrolled C.forged"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets everyone read new files, as many systems have by default."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def format_record(message: str, *args: object, exc_info: object = None) -> str:
    record = logging.LogRecord("velotui.server.sessions", logging.WARNING, __file__, 1, message,
                               args, exc_info)
    return EscapingFormatter(LOG_FORMAT).format(record)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("host\nname", "host\\nname"),
        ("host\r\n" + FORGED, "host\\r\\n" + FORGED),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("a\x00b\x7fc\x85d", "a\\x00b\\x7fc\\x85d"),
        ("name\u202egnp.exe", "name\\u202egnp.exe"),
        ("line\u2028separator", "line\\u2028separator"),
        ("tab\there", "tab\\there"),
        ("C:\\Windows ünïcödé 主机", "C:\\Windows ünïcödé 主机"),
    ],
    ids=["newline", "forged line", "terminal escapes", "nul del c1", "right-to-left override",
         "line separator", "tab", "plain text unchanged"],
)
def test_agent_text_is_escaped_in_every_record(text: str, shown: str) -> None:
    line = format_record("enrolled %s (%s) from %s", "C.1234", text, "10.0.0.1:5000")
    assert line.endswith(f"enrolled C.1234 ({shown}) from 10.0.0.1:5000")
    assert "\n" not in line and "\r" not in line
    assert escape_log_text(text) == shown


def test_a_traceback_keeps_its_lines_but_none_can_pass_for_a_record() -> None:
    try:
        raise ValueError("bad value\n" + FORGED)
    except ValueError:
        text = format_record("could not handle %s", "x\ny", exc_info=sys.exc_info())
    first, *rest = text.split("\n")
    assert first.endswith("could not handle x\\ny")
    assert rest and all(line.startswith("    ") for line in rest)
    assert any("ValueError: bad value" in line for line in rest)
    assert "    " + FORGED in rest  # there, but indented: not the start of a record


@needs_posix_modes
def test_the_log_rotates_and_every_file_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "server.log"
    path.write_text("from an older version\n")
    path.chmod(0o644)
    handler = PrivateRotatingFileHandler(path, maxBytes=2000, backupCount=2, encoding="utf-8")
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logger = logging.getLogger("test_server_log.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for number in range(200):
            logger.warning("line %d %s", number, "x" * 50)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["server.log", "server.log.1", "server.log.2"]
    assert all(mode(tmp_path / name) == 0o600 for name in files)
    assert all((tmp_path / name).stat().st_size <= 2000 for name in files)
    assert "line 199 " in path.read_text()


@needs_posix_modes
async def test_the_database_and_its_journals_are_private_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    server = Server(Datastore.open(tmp_path / "datastore"), "127.0.0.1:0")
    await server.start()
    try:
        connection, _welcome = await handshake(server, tmp_path / "agent")  # some writes
        await connection.close()
        root = server.datastore.root
        for name in ("velotui.db", "velotui.db-wal", "velotui.db-shm"):
            assert mode(root / name) == 0o600, name
    finally:
        await server.stop()


@needs_posix_modes
def test_velotui_serve_escapes_agent_text_and_keeps_its_files_private(
    tmp_path: Path, open_umask: None
) -> None:
    datastore = tmp_path / "datastore"
    server = ServerProcess(datastore).start()
    try:
        reachable = types.SimpleNamespace(agent_url=server.url + protocol.AGENT_PATH,
                                          datastore=Datastore.open(datastore))

        async def enrol() -> None:
            facts = {"Hostname": "evil\n" + FORGED, "OS": "linux"}
            connection, welcome = await handshake(reachable, tmp_path / "agent", facts=facts)
            assert isinstance(welcome, protocol.Welcome) and welcome.enrolled
            await connection.close()

        asyncio.run(enrol())
        log_path = datastore / "logs" / "server.log"
        lines = log_path.read_text(encoding="utf-8").splitlines()
        enrolled = [line for line in lines if " enrolled C." in line]
        assert len(enrolled) == 1 and "(evil\\n2099-01-01" in enrolled[0]
        assert not any(line.startswith("2099") for line in lines)

        assert mode(datastore) == 0o700
        for folder in ("logs", "uploads", "exports"):
            assert mode(datastore / folder) == 0o700, folder
        for name in ("velotui.db", "velotui.db-wal", "velotui.db-shm", "logs/server.log",
                     "ca.key", "server.key", "enrolment_secret", "api_token", "server.json"):
            assert mode(datastore / name) == 0o600, name
    finally:
        server.stop()
