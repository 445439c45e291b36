"""The agent's file parsers (parse_csv, parse_jsonl, parse_yaml, parse_records_with_regex,
split_records) run as VQL on files the tests write, and on this machine's /etc/passwd."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.plugins import client_registry
from agent.plugins.parsers import go_regex, split_go
from velotui.vql import collect


async def query(text: str, **env: Any) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The rows of ``text``, its errors and its warnings."""
    errors: list[str] = []
    warnings: list[str] = []

    def on_log(level: str, message: str) -> None:
        if level == "error":
            errors.append(message)
        elif level == "warning":
            warnings.append(message)

    rows = await collect(text, registry=client_registry(), env=env, on_log=on_log)
    return rows, errors, warnings


# split_records --------------------------------------------------------------------------------


async def test_split_records_reads_etc_passwd_into_named_columns() -> None:
    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("no /etc/passwd here")
    expected = [line.split(":") for line in passwd.read_text().splitlines() if line]
    rows, errors, _ = await query(
        "SELECT * FROM split_records(filenames='/etc/passwd', regex=':', record_regex='\\r?\\n',"
        " columns=['User', 'X', 'Uid', 'Gid', 'Description', 'Homedir', 'Shell'])"
    )
    assert errors == []
    assert [list(row.values()) for row in rows] == expected
    root = next(row for row in rows if row["User"] == "root")
    assert root["Uid"] == "0" and root["Homedir"] == "/root"


async def test_split_records_names_unnamed_values_by_position(tmp_path: Path) -> None:
    table = tmp_path / "table.txt"
    table.write_text("  sl  local  remote\n   0: 0100007F:0035 00000000:0000 0A\n\n")
    rows, errors, _ = await query(
        "SELECT * FROM split_records(filenames=P, regex=' +', columns=['_', 'sl', 'local'])",
        P=str(table),
    )
    assert errors == []
    assert rows == [
        {"_": "", "sl": "sl", "local": "local", "Column3": "remote"},
        {"_": "", "sl": "0:", "local": "0100007F:0035", "Column3": "00000000:0000",
         "Column4": "0A"},
    ]
    rows, errors, _ = await query("SELECT * FROM split_records(filenames=P)", P=str(table))
    assert rows[0] == {"Column0": "", "Column1": "sl", "Column2": "local", "Column3": "remote"}


async def test_split_records_headers_from_the_first_row_and_count(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text("IP address       HW type     Flags\n10.0.0.1         0x1         0x2\n")
    rows, errors, _ = await query(
        "SELECT * FROM split_records(filenames=P, regex='\\\\s{3,20}', first_row_is_headers=TRUE)",
        P=str(arp),
    )
    assert errors == []
    assert rows == [{"IP address": "10.0.0.1", "HW type": "0x1", "Flags": "0x2"}]
    rows, _, _ = await query(
        "SELECT * FROM split_records(filenames='a b c d', accessor='data', count=2)")
    assert rows == [{"Column0": "a", "Column1": "b c d"}]


async def test_split_records_with_a_record_regex_across_read_blocks(tmp_path: Path) -> None:
    sections = [f"Types: deb\nURIs: http://example.org/{index}" for index in range(5000)]
    path = tmp_path / "sources"
    path.write_text("\n\n\n".join(sections) + "\n")
    rows, errors, _ = await query(
        "SELECT * FROM split_records(filenames=P, columns='Section', regex='^ #',"
        " record_regex='\\n{2,}')",
        P=str(path),
    )
    assert errors == []
    assert [row["Section"] for row in rows] == [*sections[:-1], sections[-1] + "\n"]


def test_go_split_keeps_gos_edges() -> None:
    spaces = re.compile(" +")
    assert split_go(spaces, " a  b ") == ["", "a", "b", ""]
    assert split_go(spaces, "a b c", 2) == ["a", "b c"]
    assert split_go(spaces, "") == []
    assert split_go(re.compile("(:)"), "a:b") == ["a", "b"]


def test_go_regex_spellings() -> None:
    assert go_regex(r"(?<Name>\w+)").match("abc").group("Name") == "abc"  # type: ignore[union-attr]
    assert go_regex(r"^a(?i)B").match("ab") is not None
    assert go_regex(r"x\z").search("x") is not None


# parse_records_with_regex ---------------------------------------------------------------------


async def test_parse_records_with_regex_yields_named_groups(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Package: one\nStatus: install ok installed\nVersion: 1.0\n\n"
        "Package: two\nStatus: install ok installed\n\n"
    )
    rows, errors, _ = await query(
        "SELECT * FROM parse_records_with_regex(file=P,"
        " regex=['(?sm)^(?P<Record>Package:.+?)\\n\\n',"
        " '(?m)^Version: (?P<Version>.+)(?P<Extra>X)?'])",
        P=str(status),
    )
    assert errors == []
    assert rows == [
        {"Record": "Package: one\nStatus: install ok installed\nVersion: 1.0"},
        {"Record": "Package: two\nStatus: install ok installed"},
        {"Version": "1.0", "Extra": ""},
    ]


async def test_parse_records_with_regex_on_data_and_a_bad_regex() -> None:
    rows, errors, _ = await query(
        "SELECT * FROM parse_records_with_regex(accessor='data', file='a=1 b+=2',"
        " regex='(?P<Key>[^ ]+?)(?P<Op>-|\\\\+)?=(?P<Value>[^ ]+)')"
    )
    assert errors == []
    assert rows == [{"Key": "a", "Op": "", "Value": "1"}, {"Key": "b", "Op": "+", "Value": "2"}]
    rows, errors, _ = await query(
        "SELECT * FROM parse_records_with_regex(accessor='data', file='x', regex='(?P<A>')")
    assert rows == []
    assert len(errors) == 1
    assert errors[0].startswith("parse_records_with_regex(): regex '(?P<A>' is not a valid")


# parse_csv ------------------------------------------------------------------------------------


async def test_parse_csv_with_headers_quotes_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "hits.csv"
    path.write_text('Name,Path\n# a comment\nssh,"/usr/bin/ssh, the client"\nbash,/bin/bash\n')
    rows, errors, _ = await query("SELECT * FROM parse_csv(filename=P, comment='#')",
                                  P=str(path))
    assert errors == []
    assert rows == [{"Name": "ssh", "Path": "/usr/bin/ssh, the client"},
                    {"Name": "bash", "Path": "/bin/bash"}]


async def test_parse_csv_columns_auto_headers_and_separator() -> None:
    rows, errors, _ = await query(
        "SELECT * FROM parse_csv(filename='a b\\nc d\\n', accessor='data', separator=' ',"
        " columns=['Left', 'Right'])"
    )
    assert errors == []
    assert rows == [{"Left": "a", "Right": "b"}, {"Left": "c", "Right": "d"}]
    rows, errors, _ = await query(
        "SELECT * FROM parse_csv(filename='a;b\\n', accessor='data', separator=';',"
        " auto_headers=TRUE)"
    )
    assert rows == [{"Column0": "a", "Column1": "b"}]
    rows, errors, _ = await query(
        "SELECT * FROM parse_csv(filename='a', accessor='data', separator='::')")
    assert rows == []
    assert errors == ["parse_csv(): separator must be a single character, not '::'"]


# parse_jsonl ----------------------------------------------------------------------------------


async def test_parse_jsonl_reads_objects_and_counts_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    lines = [json.dumps({"Pid": index, "Name": f"p{index}"}) for index in range(3)]
    path.write_bytes(gzip.compress(("\n".join(lines[:2]) + "\nnot json\n[1]\n\n"
                                    + lines[2] + "\n").encode()))
    rows, errors, _ = await query("SELECT * FROM parse_jsonl(filename=P)", P=str(path))
    assert rows == [{"Pid": 0, "Name": "p0"}, {"Pid": 1, "Name": "p1"}, {"Pid": 2, "Name": "p2"}]
    assert len(errors) == 1
    assert errors[0].startswith(f"parse_jsonl(): {path}: skipped 2 line(s), the first (line 3)")


# parse_yaml -----------------------------------------------------------------------------------


async def test_parse_yaml_of_a_file_and_of_data(tmp_path: Path) -> None:
    path = tmp_path / "remap.yaml"
    path.write_text("remappings:\n  - type: mount\n    from: {accessor: file}\n")
    rows, errors, warnings = await query(
        "SELECT parse_yaml(filename=P) AS File,"
        " parse_yaml(filename='[1, two]', accessor='data') AS Data,"
        " parse_yaml(filename='a: [', accessor='data') AS Bad FROM scope()",
        P=str(path),
    )
    assert rows == [{
        "File": {"remappings": [{"type": "mount", "from": {"accessor": "file"}}]},
        "Data": [1, "two"],
        "Bad": None,
    }]
    assert len(errors) == 1
    assert errors[0].startswith("parse_yaml(): <data, 4 bytes>: not YAML at line 1")
    assert warnings == []
