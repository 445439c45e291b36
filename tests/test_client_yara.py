"""yara() over real files and proc_yara() over the memory of a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.plugins import client_registry
from agent.plugins.yara_scan import (
    MemoryRegion,
    compiled_rules,
    expand_shorthand,
    hex_dump,
    parse_maps,
    proc_yara,
    yara,
)
from tests.test_client_plugins import make_scope, rows_of
from velotui.vql import collect
from velotui.vql.scope import DeadlineExceeded, QueryContext, Scope

RULES = textwrap.dedent("""
    rule Marked : evil test {
        meta:
            author = "velotui"
            severity = 3
        strings:
            $marker = "VELOTUI-MARKER"
        condition:
            $marker
    }
""")
COLUMNS = {"Rule", "Meta", "Tags", "String", "File", "FileName"}


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    (tmp_path / "hit.bin").write_bytes(b"\x00" * 100 + b"VELOTUI-MARKER" + b"tail" + b"\x00" * 20
                                       + b"VELOTUI-MARKER")
    (tmp_path / "clean.txt").write_text("nothing to see\n")
    return tmp_path


async def test_yara_reports_a_hit_in_a_file_with_context_and_hex_data(samples: Path) -> None:
    scope, logs = make_scope()
    path = str(samples / "hit.bin")
    rows = await rows_of(yara, scope, rules=RULES, files=[path, str(samples / "clean.txt")],
                         context=4)
    assert logs.errors() == []
    [row] = rows
    assert set(row) == COLUMNS
    assert row["Rule"] == "Marked" and row["Tags"] == ["evil", "test"]
    assert row["Meta"] == {"author": "velotui", "severity": 3}
    assert row["FileName"] == path
    assert row["File"]["OSPath"] == path and row["File"]["Size"] == 152
    string = row["String"]
    assert string["Name"] == "$marker" and string["Offset"] == 100
    assert string["Data"] == b"\x00" * 4 + b"VELOTUI-MARKER" + b"tail"
    assert string["HexData"] == [
        "00000060  00 00 00 00 56 45 4c 4f  54 55 49 2d 4d 41 52 4b  |....VELOTUI-MARK|",
        "00000070  45 52 74 61 69 6c                                 |ERtail|",
    ]


async def test_yara_number_gives_more_hits_per_file(samples: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(yara, scope, rules=RULES, files=str(samples / "hit.bin"), number=5)
    assert [row["String"]["Offset"] for row in rows] == [100, 138]
    assert [row["String"]["Data"] for row in rows] == [b"VELOTUI-MARKER"] * 2


async def test_yara_scans_the_rows_of_a_glob_like_the_artifacts(samples: Path) -> None:
    rows = await collect(
        "SELECT FileName, File.Size AS Size, Rule, String.Name AS YaraString, "
        "String.Offset AS HitOffset FROM foreach(row={SELECT OSPath FROM glob(globs=Pattern)}, "
        "query={SELECT * FROM yara(rules=Rules, files=OSPath)})",
        registry=client_registry(), env={"Pattern": str(samples / "*"), "Rules": RULES})
    assert rows == [{"FileName": str(samples / "hit.bin"), "Size": 152, "Rule": "Marked",
                     "YaraString": "$marker", "HitOffset": 100}]


async def test_yara_with_start_scans_in_blocks_from_there(samples: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(yara, scope, rules=RULES, files=[str(samples / "hit.bin")],
                         start=101, blocksize=64, number=5)
    # The first marker starts before start; a block boundary (at 165) does not split the second.
    assert [row["String"]["Offset"] for row in rows] == [138]


async def test_yara_end_leaves_out_hits_past_it(samples: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(yara, scope, rules=RULES, files=[str(samples / "hit.bin")],
                         end=120, number=5)
    assert [row["String"]["Offset"] for row in rows] == [100]


async def test_yara_data_accessor_scans_the_given_text() -> None:
    scope, _ = make_scope()
    rows = await rows_of(yara, scope, rules="wide nocase ascii:program,other",
                         files="regfXXXXXXXXXXXXXXXXXXXXXXprogram", accessor="data")
    [row] = rows
    assert row["String"]["Offset"] == 26 and row["String"]["Data"] == b"program"
    assert row["File"] is None


async def test_a_rule_without_strings_gives_one_row_without_string(samples: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(yara, scope, rules="rule Big { condition: filesize > 100 }",
                         files=[str(samples / "hit.bin"), str(samples / "clean.txt")])
    assert [(row["Rule"], row["String"], row["FileName"]) for row in rows] == [
        ("Big", None, str(samples / "hit.bin"))]


async def test_yara_namespace_and_vars_reach_the_rules(samples: Path) -> None:
    scope, logs = make_scope()
    rows = await rows_of(yara, scope, rules="rule Wanted { condition: wanted }",
                         files=[str(samples / "clean.txt")], namespace="mine",
                         vars={"wanted": True})
    assert logs.errors() == []
    assert [row["Rule"] for row in rows] == ["Wanted"]


def test_rules_are_compiled_once_per_text() -> None:
    first = compiled_rules(RULES + "\n// once")
    assert compiled_rules(RULES + "\n// once") is first
    assert compiled_rules(RULES + "\n// other") is not first


def test_shorthand_and_hex_dump_match_velociraptors_forms() -> None:
    assert expand_shorthand("wide:a,b") == (
        'rule X { strings: $ = "a" wide $ = "b" wide condition: any of them }')
    assert expand_shorthand(RULES) == RULES
    assert hex_dump(b"Go is an open so") == [
        "00000000  47 6f 20 69 73 20 61 6e  20 6f 70 65 6e 20 73 6f  |Go is an open so|"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"rules": "rule Bad { strings: $a = \"x\" condition: $a and nothing }"},
         "yara(): cannot compile the rules: line 1, column 48: unknown identifier `nothing`"),
        ({"rules": "rule Broken {\n  condition:\n}"},
         "yara(): cannot compile the rules: line 3, column 1: syntax error"),
        ({"rules": 42}, "yara(): rules must be YARA rules as text, not 42"),
        ({"rules": RULES, "accessor": "ntfs"},
         "yara(): accessor 'ntfs' is not supported on this agent (use file, auto or data)"),
        ({"rules": RULES, "number": 0}, "yara(): number must be at least 1, not 0"),
        ({"rules": RULES, "files": ["/no/such/file"]},
         "yara(): cannot read /no/such/file: No such file or directory"),
        ({"rules": RULES, "files": [{"Name": "x"}]},
         "yara(): files must be paths or rows with OSPath, not {'Name': 'x'}"),
    ],
)
async def test_yara_bad_input_is_a_one_line_error(samples: Path, args: dict[str, Any],
                                                  error: str) -> None:
    scope, logs = make_scope()
    args.setdefault("files", [str(samples / "hit.bin")])
    assert await rows_of(yara, scope, **args) == []
    assert logs.errors() == [error]


# proc_yara -----------------------------------------------------------------------------------

# The marker is built at run time so that it is in the child's memory but not in its command
# line (which the kernel also maps into the process).
CHILD = ("import sys; marker = ('VELOTUI-' + 'PROC-' + 'MARKER').encode() * 3; "
         "print('ready', flush=True); sys.stdin.read()")
PROC_RULES = 'rule InMemory { strings: $m = "VELOTUI-PROC-MARKER" condition: $m }'


@pytest.fixture
def marked_child() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.kill()
        process.wait()


def _mapped_bytes(pid: int, address: int, length: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb") as memory:
        memory.seek(address)
        return memory.read(length)


async def test_proc_yara_finds_a_marker_in_a_childs_memory(marked_child) -> None:
    scope, logs = make_scope()
    rows = await rows_of(proc_yara, scope, rules=PROC_RULES, pid=marked_child.pid, context=2,
                         number=3)
    assert logs.errors() == []
    assert len(rows) == 3
    for row in rows:
        assert set(row) == {"Rule", "Meta", "Tags", "String", "Pid"}
        assert row["Rule"] == "InMemory" and row["Pid"] == marked_child.pid
        string = row["String"]
        assert string["Data"][2:-2] == b"VELOTUI-PROC-MARKER"
        # Offset is the address in the child: the marker is there.
        assert _mapped_bytes(marked_child.pid, string["Offset"], 19) == b"VELOTUI-PROC-MARKER"


async def test_proc_yara_through_a_query_like_the_process_artifact(marked_child) -> None:
    rows = await collect(
        "SELECT Pid, Rule, String.Name AS YaraString FROM proc_yara(pid=Wanted, rules=Rules)",
        registry=client_registry(), env={"Wanted": marked_child.pid, "Rules": PROC_RULES})
    assert rows == [{"Pid": marked_child.pid, "Rule": "InMemory", "YaraString": "$m"}]


async def test_proc_yara_of_no_process_is_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free
    scope, logs = make_scope()
    assert await rows_of(proc_yara, scope, rules=PROC_RULES, pid=child.pid) == []
    assert logs.errors() == [f"proc_yara(): no process {child.pid}"]


SCAN_AS_NOBODY = """
import asyncio, concurrent.futures.thread, os, sys
from agent.plugins.yara_scan import proc_yara
from tests.test_client_plugins import make_scope
os.setgid(65534); os.setuid(65534)  # after the imports: the code is not for nobody to read

async def main():
    scope, logs = make_scope()
    rows = [row async for row in proc_yara(scope, rules=sys.argv[1], pid=int(sys.argv[2]))]
    print(len(rows), logs.errors())

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to scan as another user")
def test_proc_yara_of_a_process_we_may_not_read_is_a_one_line_error(marked_child) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCAN_AS_NOBODY, PROC_RULES, str(marked_child.pid)],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"0 ['proc_yara(): cannot read the memory of process {marked_child.pid}: "
        "Permission denied']")


def _past_deadline_scope() -> Scope:
    context = QueryContext(client_registry(), deadline=0.0, clock=lambda: 1.0)
    return Scope({}, context=context)


async def test_a_scan_past_the_querys_deadline_stops(marked_child, samples: Path) -> None:
    nothing = 'rule Nothing { strings: $n = "NOT-IN-THERE-ANYWHERE" condition: $n }'
    with pytest.raises(DeadlineExceeded):
        await rows_of(proc_yara, _past_deadline_scope(), rules=nothing, pid=marked_child.pid)
    with pytest.raises(DeadlineExceeded):
        await rows_of(yara, _past_deadline_scope(), rules=nothing,
                      files=[str(samples / "hit.bin")] * 3)


async def test_problems_met_in_a_scan_are_logged_on_the_querys_thread(samples: Path) -> None:
    # A flow's log sink uses the event loop: it must not be called from a worker thread.
    threads: list[int] = []
    context = QueryContext(client_registry(),
                           on_log=lambda level, message: threads.append(threading.get_ident()))
    scope = Scope({}, context=context)
    await rows_of(yara, scope, rules=RULES, files=[str(samples / "gone.bin"), str(samples)])
    assert len(threads) == 2 and set(threads) == {threading.get_ident()}


def test_parse_maps_keeps_readable_regions_a_file_offset_can_reach() -> None:
    maps = textwrap.dedent("""\
        55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234    /usr/bin/python3.11
        55d0c0a21000-55d0c0a22000 ---p 00000000 00:00 0
        7ffd1b5f0000-7ffd1b611000 rw-p 00000000 00:00 0       [stack]
        7ffd1b7d0000-7ffd1b7d4000 r--p 00000000 00:00 0       [vvar]
        ffffffffff600000-ffffffffff601000 r-xp 00000000 00:00 0  [vsyscall]
    """)
    assert parse_maps(maps) == [
        MemoryRegion(0x55d0c0a00000, 0x55d0c0a21000, "/usr/bin/python3.11"),
        MemoryRegion(0x7ffd1b5f0000, 0x7ffd1b611000, "[stack]"),
    ]
