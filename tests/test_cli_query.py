"""`velotui query`: the installed command, every output format, errors where they belong."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

VELOTUI = str(Path(sys.executable).parent / "velotui")
QUERY = "SELECT _value AS N, format(format='n=%d', args=_value) AS Text FROM range(end=3)"


def velotui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VELOTUI, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_jsonl_is_the_default_one_row_a_line() -> None:
    result = velotui("query", QUERY)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"N": 0, "Text": "n=0"},
        {"N": 1, "Text": "n=1"},
        {"N": 2, "Text": "n=2"},
    ]


def test_json_csv_and_table_formats() -> None:
    as_json = json.loads(velotui("query", "--format", "json", QUERY).stdout)
    assert as_json[2] == {"N": 2, "Text": "n=2"}

    as_csv = list(csv.reader(io.StringIO(velotui("query", "--format", "csv", QUERY).stdout)))
    assert as_csv == [["N", "Text"], ["0", "n=0"], ["1", "n=1"], ["2", "n=2"]]

    table = velotui("query", "--format", "table", QUERY).stdout.splitlines()
    assert table[0].split() == ["N", "Text"]
    assert set(table[1]) <= {"-", " "}
    assert table[4].split() == ["2", "n=2"]


def test_env_binds_variables() -> None:
    result = velotui(
        "query",
        "--env",
        'hosts=[{"Name": "a"}, {"Name": "b"}]',
        "--env",
        "who=bob",
        "SELECT Name, who FROM hosts WHERE Name = 'b'",
    )
    assert json.loads(result.stdout) == {"Name": "b", "who": "bob"}


def test_a_parse_error_exits_1_naming_line_and_column() -> None:
    result = velotui("query", "SELECT *\nFROM info()\nWHERE 2-1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("line 3, col 8: unexpected number '-1'")
    assert "  WHERE 2-1\n         ^" in result.stderr


def test_logged_errors_go_to_stderr_and_rows_still_come() -> None:
    result = velotui("query", "SELECT Nope, 1 AS One FROM scope()")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"Nope": None, "One": 1}
    assert "[error] Symbol Nope not found" in result.stderr


def test_info_describes_this_machine() -> None:
    import socket

    result = velotui("query", "SELECT Hostname, OS FROM info()")
    row = json.loads(result.stdout)
    assert row["Hostname"] == socket.gethostname()
    assert row["OS"] == {"linux": "linux", "darwin": "darwin", "win32": "windows"}[sys.platform]
