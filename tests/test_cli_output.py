"""What the command line prints, run as an operator runs it: the real ``velotui`` program against
a real ``velotui serve`` on a datastore holding stored results. ``velotui hunt query`` end to
end; tables that never clip an ID, and clip nothing when the output is not a terminal; a pipe
closed early ends a command quietly; the refusal to remove a label the agent's own configuration
sets."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import VELOTUI, ServerProcess, velotui
from tests.triage_data import (
    ARTIFACT_HUNT,
    CLIENTS,
    EMPTY_HUNT,
    HUNT,
    LONG_DESCRIPTION,
    TOTAL_ROWS,
    build_datastore,
    expected_rows,
)
from velotui.cli.output import render_table

HUNTS = (HUNT, ARTIFACT_HUNT, EMPTY_HUNT)


@pytest.fixture(scope="module")
def datastore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running ``velotui serve`` on a datastore with stored results; its folder."""
    root = tmp_path_factory.mktemp("cli") / "datastore"
    asyncio.run(build_datastore(root))
    server = ServerProcess(root).start()
    try:
        yield root
    finally:
        server.stop()


def run(datastore: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return velotui(*args, "--datastore", str(datastore))


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


# velotui hunt query -------------------------------------------------------------------------------

COUNT_BY_CLIENT = ("SELECT ClientId, count() AS Rows FROM hunt_results() GROUP BY ClientId"
                   " ORDER BY ClientId")
COUNTS = [{"ClientId": client_id, "Rows": rows} for client_id, (_host, rows) in CLIENTS.items()]


def test_hunt_query_prints_the_rows_in_every_format(datastore: Path) -> None:
    jsonl = run(datastore, "hunt", "query", HUNT, COUNT_BY_CLIENT)
    assert jsonl.returncode == 0 and jsonl.stderr == ""
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == COUNTS

    whole = run(datastore, "hunt", "query", HUNT, COUNT_BY_CLIENT, "--format", "json")
    assert json.loads(whole.stdout) == COUNTS

    table = run(datastore, "hunt", "query", HUNT, COUNT_BY_CLIENT, "--format", "csv")
    assert list(csv.reader(io.StringIO(table.stdout))) == [
        ["ClientId", "Rows"], *([c["ClientId"], str(c["Rows"])] for c in COUNTS)]

    text = run(datastore, "hunt", "query", HUNT, COUNT_BY_CLIENT, "--format", "table")
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["ClientId", "Rows"]
    assert [line.split() for line in lines[2:]] == [
        [c["ClientId"], str(c["Rows"])] for c in COUNTS]


def test_hunt_query_reads_other_hunts_and_the_clients(datastore: Path) -> None:
    result = run(datastore, "hunt", "query", EMPTY_HUNT,
                 f"SELECT Name FROM hunt_results(hunt_id='{ARTIFACT_HUNT}',"
                 " artifact='Linux.Sys.Users')")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"Name": "a"}, {"Name": "b"}]
    listed = run(datastore, "hunt", "query", HUNT,
                 "SELECT hunt_id FROM hunts() ORDER BY hunt_id")
    assert [json.loads(line)["hunt_id"] for line in listed.stdout.splitlines()] == sorted(HUNTS)


def test_a_cut_result_says_so_on_stderr_only(datastore: Path) -> None:
    result = run(datastore, "hunt", "query", HUNT, "SELECT * FROM hunt_results()",
                 "--limit", "5")
    assert result.returncode == 0
    assert [json.loads(line) for line in result.stdout.splitlines()] == expected_rows()[:5]
    assert result.stderr == "velotui hunt query: cut at 5 rows: --limit to raise it\n"
    whole = run(datastore, "hunt", "query", HUNT, "SELECT * FROM hunt_results()",
                "--limit", str(TOTAL_ROWS))
    assert whole.stderr == "" and len(whole.stdout.splitlines()) == TOTAL_ROWS


@pytest.mark.parametrize(("hunt", "query", "expected"), [
    (HUNT, "SELECT * FROM\nhunt_results(", "does not parse: line 2, col"),
    (HUNT, "SELECT * FROM glob(globs='/etc/*')", "unknown plugin glob()"),
    (HUNT, "SELECT * FROM execve(argv=['id'])", "unknown plugin execve()"),
    ("H.0000000000XXX", "SELECT * FROM hunt_results()", "no hunt 'H.0000000000XXX'"),
    ("nonsense", "SELECT 1 FROM scope()", "hunt ID must look like"),
])
def test_hunt_query_errors_are_one_line_and_a_failing_status(
    datastore: Path, hunt: str, query: str, expected: str
) -> None:
    result = run(datastore, "hunt", "query", hunt, query)
    message = assert_one_line_error(result)
    assert message.startswith("velotui hunt: ") and expected in message
    assert result.stdout == ""


# Tables -------------------------------------------------------------------------------------------

LONG_ID = "H.0123456789ABCDEFGHIJKLMNOP"


def test_at_80_columns_ids_are_whole_and_only_other_cells_are_clipped() -> None:
    rows = [{"ID": LONG_ID, "State": "running", "Description": "d" * 200,
             "ClientId": "C.0123456789abcdef", "FlowId": "F.0123456789ABCDEF",
             "Target": "C.0123456789abcdef/F.0123456789ABCDEF", "Details": "x" * 300}]
    lines = render_table(rows, max_width=80).splitlines()
    body = lines[2]
    for whole in (LONG_ID, "C.0123456789abcdef", "F.0123456789ABCDEF",
                  "C.0123456789abcdef/F.0123456789ABCDEF"):
        assert whole in body
    assert "d" * 200 not in body and "x" * 300 not in body and "…" in body
    # The IDs alone take 111 columns here: the rest shrink as far as they go, no further.
    cells = body.split()
    assert cells[2] == "d" * 7 + "…" and cells[-1] == "x" * 7 + "…"


def test_a_table_that_fits_is_not_clipped_and_cells_stay_on_one_line() -> None:
    rows = [{"ID": "H.1", "Description": "two\nlines\tand a tab"}]
    assert render_table(rows, max_width=80).splitlines()[2] == "H.1  two lines and a tab"
    assert render_table([{"Details": "y" * 500}], clip=False).splitlines()[2] == "y" * 500


def test_tables_into_a_pipe_clip_nothing(datastore: Path) -> None:
    hunts = run(datastore, "hunt", "list")
    assert hunts.returncode == 0
    assert LONG_DESCRIPTION.strip() in hunts.stdout
    assert "…" not in hunts.stdout
    run(datastore, "hunt", "query", HUNT, "SELECT 'a long query text, kept whole in the"
        " audit table when it goes to another program' AS Text FROM scope()")
    audit = run(datastore, "audit")
    assert "kept whole in the audit table when it goes to another program" in audit.stdout
    assert "…" not in audit.stdout


def on_terminal(datastore: Path, *args: str, columns: int = 80) -> str:
    """What ``velotui ARGS`` shows on a terminal ``columns`` wide (a real pseudo-terminal)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([VELOTUI, *args, "--datastore", str(datastore)],
                               stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=subprocess.PIPE, env=environment)
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the program has closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    _out, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    return shown.decode().replace("\r\n", "\n")


def test_on_an_80_column_terminal_ids_are_whole_and_long_cells_clipped(datastore: Path
                                                                       ) -> None:
    shown = on_terminal(datastore, "hunt", "list")
    for hunt_id in HUNTS:
        assert hunt_id in shown
    assert LONG_DESCRIPTION.strip() not in shown and "…" in shown

    clients = on_terminal(datastore, "clients")
    for client_id in CLIENTS:
        assert client_id in clients

    run(datastore, "hunt", "query", HUNT, "SELECT 1 AS One FROM scope()")
    audit = on_terminal(datastore, "audit")
    assert f"query_hunt  {HUNT}" in audit
    assert "…" in audit  # its details are clipped to fit


# Closed pipes -------------------------------------------------------------------------------------

CLOSED_PIPE_COMMANDS = [
    ("hunt", "list"), ("hunt", "list", "--json"), ("hunt", "show", HUNT),
    ("hunt", "results", HUNT), ("hunt", "results", HUNT, "--format", "csv"),
    ("hunt", "query", HUNT, "SELECT * FROM hunt_results()"),
    ("hunt", "query", HUNT, "SELECT * FROM hunt_results()", "--format", "table"),
    ("audit",), ("audit", "--json"), ("clients",), ("clients", "--json"),
]


@pytest.mark.parametrize("command", CLOSED_PIPE_COMMANDS, ids=" ".join)
def test_output_into_a_closed_pipe_ends_quietly(datastore: Path, command: tuple[str, ...]
                                                ) -> None:
    reading, writing = os.pipe()
    os.close(reading)  # the reader is gone before the first line: every write fails
    try:
        result = subprocess.run([VELOTUI, *command, "--datastore", str(datastore)],
                                stdin=subprocess.DEVNULL, stdout=writing,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writing)
    assert result.stderr == ""
    assert result.returncode == 1  # as Python's own convention for EPIPE


def test_results_piped_into_a_reader_that_stops_after_one_line(datastore: Path) -> None:
    """``velotui hunt results ID | head -1``: the reader takes a line and goes away while
    the rows (far more than a pipe holds) are still being written."""
    process = subprocess.Popen([VELOTUI, "hunt", "results", HUNT, "--datastore",
                                str(datastore)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = json.loads(process.stdout.readline())
    process.stdout.close()
    errors = process.stderr.read().decode()
    process.wait(timeout=120)
    assert first == expected_rows()[0]
    assert errors == ""


# Labels -------------------------------------------------------------------------------------------


def test_removing_a_label_from_the_agents_configuration_is_refused(datastore: Path) -> None:
    client_id = next(iter(CLIENTS))
    result = run(datastore, "clients", "label", client_id, "-prod")
    assert assert_one_line_error(result) == (
        f"velotui clients: {client_id}: label 'prod' comes from the agent's configuration;"
        " change it there (velotui agent-config --label)")
    assert result.returncode == 1
    listed = run(datastore, "clients", "--json")
    client = next(json.loads(line) for line in listed.stdout.splitlines()
                  if json.loads(line)["client_id"] == client_id)
    assert client["labels"] == ["prod"]
    added = run(datastore, "clients", "label", client_id, "+case-7")
    assert added.returncode == 0 and added.stdout == f"{client_id}: prod, case-7\n"
    removed = run(datastore, "clients", "label", client_id, "-case-7")
    assert removed.returncode == 0 and removed.stdout == f"{client_id}: prod\n"
