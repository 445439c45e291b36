"""The agent's client plugins, run against real files, this real machine and real processes."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.plugins import client_registry
from agent.plugins.facts import facts_for, load_facts_file, simulated_facts
from agent.plugins.files import go_file_mode, parse_lines, read_file, stat
from agent.plugins.globbing import expand_braces, glob
from agent.plugins.hashing import hash_
from agent.plugins.info import INFO_COLUMNS, info
from agent.plugins.network import interfaces
from agent.plugins.processes import pslist
from agent.plugins.upload import Uploader, upload
from agent.plugins.users import users
from velotui.vql import collect
from velotui.vql.registry import Registry
from velotui.vql.scope import QueryContext, Scope

FILE_COLUMNS = {
    "Name", "OSPath", "FullPath", "Size", "Mode", "Mtime", "Atime", "Ctime", "Btime", "Data",
    "IsDir", "IsLink",
}


class Logs(list[tuple[str, str]]):
    def errors(self) -> list[str]:
        return [message for level, message in self if level == "error"]


def make_scope(
    registry: Registry | None = None, services: dict[str, Any] | None = None
) -> tuple[Scope, Logs]:
    logs = Logs()
    context = QueryContext(
        registry or client_registry(),
        on_log=lambda level, message: logs.append((level, message)),
        services=services,
    )
    return Scope({}, context=context), logs


async def rows_of(plugin: Any, scope: Scope, **args: Any) -> list[dict[str, Any]]:
    return [row async for row in plugin(scope, **args)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a.txt, b.log, sub/c.txt, sub/deeper/d.txt, sub/deeper/e.bin"""
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "b.log").write_text("bravo\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "c.txt").write_text("charlie\n")
    (tmp_path / "sub" / "deeper" / "d.txt").write_text("delta\n")
    (tmp_path / "sub" / "deeper" / "e.bin").write_bytes(b"\x00\x01")
    return tmp_path


# registry -------------------------------------------------------------------------------------


def test_client_registry_offers_every_plugin_and_the_config_labels() -> None:
    base = Registry()
    registry = client_registry(labels=["Finance", "Servers"], base=base)
    plugins = {callee.name for callee in registry.plugins()}
    functions = {callee.name for callee in registry.functions()}
    assert {"info", "pslist", "glob", "stat", "parse_lines", "users", "interfaces"} <= plugins
    assert {"hash", "read_file", "upload"} <= functions
    config = registry.variables()["config"]
    assert config["Client_labels"] == ["Finance", "Servers"]
    assert config["Labels"] == ["Finance", "Servers"]
    assert base.lookup_plugin("glob") is None  # the base registry is left alone


def test_simulated_host_labels_join_the_config_labels() -> None:
    registry = client_registry(labels=["Demo"], facts={"Labels": ["Finance", "Demo"]})
    assert registry.variables()["config"]["Client_labels"] == ["Demo", "Finance"]


async def test_the_default_hunt_condition_runs_against_the_client_registry() -> None:
    registry = client_registry(labels=["Finance"], facts={"Fqdn": "fin-01.corp.example.com"})
    rows = await collect(
        "SELECT OS, Architecture, Fqdn, Platform, config.Client_labels AS Labels FROM info()",
        registry=registry,
    )
    assert len(rows) == 1
    assert rows[0]["Fqdn"] == "fin-01.corp.example.com"
    assert rows[0]["Labels"] == ["Finance"]
    assert rows[0]["OS"] and rows[0]["Platform"]


async def test_a_collection_query_hashes_and_uploads_globbed_files(tree: Path) -> None:
    store = tree / "store"
    store.mkdir()
    logs = Logs()
    rows = await collect(
        "SELECT Name, hash(path=FullPath).SHA256 AS SHA256, upload(file=FullPath).Size AS Sent "
        "FROM glob(globs='*.txt', root=Root)",
        registry=client_registry(),
        env={"Root": str(tree)},
        services={"uploader": FolderUploader(store)},
        on_log=lambda level, message: logs.append((level, message)),
    )
    assert rows == [{
        "Name": "a.txt",
        "SHA256": hashlib.sha256(b"alpha\n").hexdigest(),
        "Sent": len("alpha\n"),
    }]
    assert logs.errors() == []


# glob -----------------------------------------------------------------------------------------


async def test_glob_star_matches_one_directory_level(tree: Path) -> None:
    scope, logs = make_scope()
    rows = await rows_of(glob, scope, globs=str(tree / "*.txt"))
    assert [row["FullPath"] for row in rows] == [str(tree / "a.txt")]
    row = rows[0]
    assert set(row) == FILE_COLUMNS
    assert row["Name"] == "a.txt"
    assert row["Size"] == len("alpha\n")
    assert row["IsDir"] is False and row["IsLink"] is False
    assert row["Mode"] == go_file_mode(os.stat(tree / "a.txt").st_mode)
    assert row["Mtime"].tzinfo is not None
    assert row["Mtime"] == datetime.fromtimestamp(os.stat(tree / "a.txt").st_mtime, tz=UTC)
    assert logs.errors() == []


async def test_glob_double_star_recurses_including_the_top_level(tree: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(glob, scope, globs=[str(tree / "**" / "*.txt")])
    assert sorted(row["FullPath"] for row in rows) == sorted(
        str(tree / p) for p in ("a.txt", "sub/c.txt", "sub/deeper/d.txt")
    )


async def test_glob_relative_to_root_with_several_patterns_reports_each_file_once(
    tree: Path,
) -> None:
    scope, _ = make_scope()
    patterns = ["sub/**", "sub/*/d.txt", "*.{log,txt}"]
    rows = await rows_of(glob, scope, globs=patterns, root=str(tree))
    paths = sorted(row["FullPath"] for row in rows)
    assert paths == sorted(
        str(tree / p)
        for p in ("a.txt", "b.log", "sub/c.txt", "sub/deeper", "sub/deeper/d.txt",
                  "sub/deeper/e.bin")
    )
    directory = next(row for row in rows if row["Name"] == "deeper")
    assert directory["IsDir"] is True and directory["Mode"].startswith("d")


async def test_glob_question_mark_and_character_class(tree: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(glob, scope, globs=["?.t[xy]t", "[!a].log"], root=str(tree))
    assert sorted(row["Name"] for row in rows) == ["a.txt", "b.log"]


async def test_glob_does_not_loop_through_symlinked_directories(tree: Path) -> None:
    (tree / "sub" / "back").symlink_to(tree, target_is_directory=True)
    scope, _ = make_scope()
    rows = await rows_of(glob, scope, globs="**/d.txt", root=str(tree))
    assert [row["FullPath"] for row in rows] == [str(tree / "sub" / "deeper" / "d.txt")]
    # A component that names the link does follow it, once.
    rows = await rows_of(glob, scope, globs="sub/back/*.log", root=str(tree))
    assert [row["FullPath"] for row in rows] == [str(tree / "sub" / "back" / "b.log")]
    link = await rows_of(glob, scope, globs="sub/back", root=str(tree))
    assert link[0]["IsLink"] is True and link[0]["IsDir"] is True
    assert link[0]["Data"] == {"Link": str(tree)}  # Velociraptor's Data.Link


async def test_glob_streams_a_large_tree(tmp_path: Path) -> None:
    for directory in range(20):
        folder = tmp_path / f"dir{directory:02d}"
        folder.mkdir()
        for number in range(100):
            (folder / f"f{number:03d}.dat").write_bytes(b"x")
    scope, _ = make_scope()
    rows = await rows_of(glob, scope, globs="**/*.dat", root=str(tmp_path))
    assert len(rows) == 2000
    assert len({row["FullPath"] for row in rows}) == 2000


async def test_glob_with_a_missing_root_or_bad_globs_logs_an_error(tmp_path: Path) -> None:
    scope, logs = make_scope()
    assert await rows_of(glob, scope, globs="*", root=str(tmp_path / "nowhere")) == []
    assert await rows_of(glob, scope, globs=42) == []
    errors = logs.errors()
    assert any("glob()" in e and "nowhere" in e for e in errors)
    assert any("glob()" in e and "42" in e for e in errors)


async def test_glob_that_matches_nothing_is_quiet(tmp_path: Path) -> None:
    scope, logs = make_scope()
    assert await rows_of(glob, scope, globs=str(tmp_path / "none" / "*.txt")) == []
    assert logs == []


def test_brace_alternatives_expand_in_order() -> None:
    assert expand_braces("/a/*.{exe,dll}") == ["/a/*.exe", "/a/*.dll"]
    assert expand_braces("{x,y}/{1,2}") == ["x/1", "x/2", "y/1", "y/2"]
    assert expand_braces("plain{}") == ["plain{}"]


def test_go_file_modes() -> None:
    assert go_file_mode(0o100644) == "-rw-r--r--"
    assert go_file_mode(0o040755) == "drwxr-xr-x"
    assert go_file_mode(0o120777) == "Lrwxrwxrwx"
    assert go_file_mode(0o104755) == "urwxr-xr-x"
    assert go_file_mode(0o041777) == "dtrwxrwxrwx"


# stat, hash, read_file, parse_lines -----------------------------------------------------------


async def test_stat_of_a_file(tree: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(stat, scope, filename=str(tree / "sub" / "c.txt"))
    assert len(rows) == 1
    assert rows[0]["FullPath"] == str(tree / "sub" / "c.txt")
    assert rows[0]["Size"] == len("charlie\n")
    assert rows[0]["Mode"].startswith("-")


async def test_stat_of_a_missing_file_logs_an_error_and_gives_no_row(tmp_path: Path) -> None:
    scope, logs = make_scope()
    missing = tmp_path / "missing.txt"
    assert await rows_of(stat, scope, filename=str(missing)) == []
    assert logs.errors() == [f"stat(): {missing}: No such file or directory"]


async def test_hash_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    scope, _ = make_scope()
    assert await hash_(scope, path=str(target)) == {
        "MD5": hashlib.md5(data).hexdigest(),
        "SHA1": hashlib.sha1(data).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }


async def test_hash_of_an_unreadable_path_is_null_with_an_error(tmp_path: Path) -> None:
    scope, logs = make_scope()
    assert await hash_(scope, path=str(tmp_path / "gone")) is None
    assert await hash_(scope, path=str(tmp_path)) is None  # a directory
    errors = logs.errors()
    assert len(errors) == 2 and all(e.startswith("hash(): ") for e in errors)
    assert str(tmp_path / "gone") in errors[0]


async def test_read_file_with_offset_and_length(tmp_path: Path) -> None:
    target = tmp_path / "text.txt"
    target.write_bytes("héllo world\n".encode() + b"\xff tail")
    scope, logs = make_scope()
    assert await read_file(scope, filename=str(target)) == "héllo world\n\ufffd tail"
    assert await read_file(scope, filename=str(target), offset=7, length=5) == "world"
    assert await read_file(scope, filename=str(target), offset=1000) == ""
    assert await read_file(scope, filename=str(target), length=-1) is None
    assert await read_file(scope, filename=str(tmp_path / "nope")) is None
    assert len(logs.errors()) == 2


async def test_parse_lines_gives_one_row_per_line_without_newlines(tmp_path: Path) -> None:
    target = tmp_path / "lines.txt"
    target.write_bytes(b"first\r\nsecond\n\nlast without newline")
    scope, logs = make_scope()
    rows = await rows_of(parse_lines, scope, filename=str(target))
    assert rows == [
        {"Line": "first"}, {"Line": "second"}, {"Line": ""}, {"Line": "last without newline"},
    ]
    assert await rows_of(parse_lines, scope, filename=str(tmp_path / "nope")) == []
    assert logs.errors() == [f"parse_lines(): {tmp_path / 'nope'}: No such file or directory"]


async def test_parse_lines_streams_many_lines(tmp_path: Path) -> None:
    target = tmp_path / "many.txt"
    target.write_text("".join(f"line {n}\n" for n in range(5000)))
    scope, _ = make_scope()
    rows = await rows_of(parse_lines, scope, filename=str(target))
    assert len(rows) == 5000 and rows[-1] == {"Line": "line 4999"}


# info -----------------------------------------------------------------------------------------


async def test_info_describes_this_machine() -> None:
    scope, _ = make_scope()
    rows = await rows_of(info, scope)
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == list(INFO_COLUMNS)
    expected_os = {"linux": "linux", "win32": "windows", "darwin": "darwin"}.get(sys.platform)
    assert row["OS"] == expected_os
    assert row["Architecture"] in {"amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64"}
    assert row["Hostname"] and row["Fqdn"]
    assert row["Procs"] > 1
    assert row["CWD"] == os.getcwd()
    assert row["Uptime"] > 0 and row["BootTime"] > 0
    if sys.platform.startswith("linux") and os.path.exists("/etc/os-release"):
        release = Path("/etc/os-release").read_text()
        assert f"ID={row['Platform']}" in release or f'ID="{row["Platform"]}"' in release


async def test_info_with_simulated_facts_reports_them_over_the_real_row() -> None:
    facts = {"Hostname": "FIN-WKS-0007", "OS": "windows", "Architecture": "arm64",
             "Custom": 5, "Labels": ["Finance"]}
    registry = client_registry(facts=facts)
    scope, _ = make_scope(registry)
    rows = await rows_of(registry.lookup_plugin("info").impl, scope)
    row = rows[0]
    assert row["Hostname"] == "FIN-WKS-0007"
    assert row["OS"] == "windows"
    assert row["Architecture"] == "arm64"
    assert row["Custom"] == 5
    assert "Labels" not in row  # labels belong to config
    assert row["CWD"] == os.getcwd()  # the rest stays real
    assert set(INFO_COLUMNS) <= set(row)


# pslist, users, interfaces --------------------------------------------------------------------


async def test_pslist_contains_this_process_with_its_command_line() -> None:
    scope, _ = make_scope()
    rows = await rows_of(pslist, scope)
    mine = [row for row in rows if row["Pid"] == os.getpid()]
    assert len(mine) == 1
    assert mine[0]["CommandLine"] == " ".join(sys.orig_argv)
    assert mine[0]["Ppid"] == os.getppid()
    assert mine[0]["MemoryInfo"]["RSS"] > 0
    assert len(rows) > 1


async def test_pslist_filtered_by_pid() -> None:
    scope, logs = make_scope()
    rows = await rows_of(pslist, scope, pid=os.getpid())
    assert [row["Pid"] for row in rows] == [os.getpid()]
    assert rows[0]["Exe"] and Path(rows[0]["Exe"]).name.startswith("python")
    assert await rows_of(pslist, scope, pid="not a pid") == []
    assert logs.errors() and "pslist()" in logs.errors()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/etc/passwd is Linux's")
async def test_users_lists_root_on_linux() -> None:
    scope, _ = make_scope()
    rows = await rows_of(users, scope)
    root = next(row for row in rows if row["User"] == "root")
    assert root == {
        "User": "root", "Description": root["Description"], "Uid": 0, "Gid": 0,
        "Homedir": "/root", "Shell": root["Shell"],
    }


async def test_interfaces_include_loopback() -> None:
    scope, _ = make_scope()
    rows = await rows_of(interfaces, scope)
    assert rows and all(
        set(row) == {"Index", "MTU", "Name", "HardwareAddr", "Flags", "Addrs"} for row in rows
    )
    loopback = [row for row in rows if "127.0.0.1/8" in row["Addrs"]]
    assert len(loopback) == 1
    assert "loopback" in loopback[0]["Flags"].split("|")


# upload ---------------------------------------------------------------------------------------


class FolderUploader:
    """An Uploader that stores each upload in a folder, as the server would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def upload(self, path: str, name: str | None) -> dict[str, Any]:
        data = Path(path).read_bytes()
        stored = self.folder / f"upload-{len(list(self.folder.iterdir()))}"
        stored.write_bytes(data)
        return {
            "Path": name or path,
            "Size": len(data),
            "StoredPath": str(stored),
            "sha256": hashlib.sha256(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest(),
        }


async def test_upload_sends_the_file_through_the_uploader(tmp_path: Path) -> None:
    source = tmp_path / "evidence.bin"
    source.write_bytes(b"evidence" * 1000)
    store = tmp_path / "store"
    store.mkdir()
    uploader = FolderUploader(store)
    assert isinstance(uploader, Uploader)
    scope, logs = make_scope(services={"uploader": uploader})
    result = await upload(scope, file=str(source), name="case/evidence.bin")
    assert result is not None
    assert result["Path"] == "case/evidence.bin"
    assert result["Size"] == 8000
    assert result["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert Path(result["StoredPath"]).read_bytes() == source.read_bytes()
    assert await upload(scope, file=str(tmp_path / "nope")) is None
    assert logs.errors() == [f"upload(): {tmp_path / 'nope'}: No such file or directory"]


async def test_upload_without_an_uploader_is_null_with_an_error(tmp_path: Path) -> None:
    source = tmp_path / "evidence.bin"
    source.write_bytes(b"x")
    scope, logs = make_scope()
    assert await upload(scope, file=str(source)) is None
    assert logs.errors() == ["upload(): nowhere to send files here (velotui artifacts collect"
                             " keeps them with --output DIR)"]


# simulated facts ------------------------------------------------------------------------------


def test_simulated_facts_are_reproducible_and_varied() -> None:
    assert simulated_facts(7) == simulated_facts(7)
    assert simulated_facts(7, seed=1) != simulated_facts(7)
    fleet = [simulated_facts(index) for index in range(200)]
    assert all(a != b for a, b in itertools.pairwise(fleet))
    assert len({facts["Hostname"] for facts in fleet}) == 200
    assert {facts["OS"] for facts in fleet} == {"windows", "linux", "darwin"}
    architectures = [facts["Architecture"] for facts in fleet]
    assert architectures.count("amd64") > architectures.count("arm64") > 0
    assert len({facts["Fqdn"].split(".", 1)[1] for facts in fleet}) > 1
    assert {"Finance", "Servers", "Workstations"} <= {
        label for facts in fleet for label in facts["Labels"]
    }
    for facts in fleet:
        assert facts["Fqdn"].startswith(facts["Hostname"] + ".")
        assert facts["BootTime"] + facts["Uptime"] == fleet[0]["BootTime"] + fleet[0]["Uptime"]
        assert set(facts) - {"Labels"} <= set(INFO_COLUMNS)


def test_facts_file_entries_are_taken_modulo_the_list(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([
        {"Hostname": "one", "OS": "linux", "Labels": ["Servers"]},
        {"Hostname": "two", "OS": "windows"},
    ]))
    entries = load_facts_file(path)
    assert [facts_for(index, entries)["Hostname"] for index in range(5)] == [
        "one", "two", "one", "two", "one",
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"Hostname": "x"}', "expected a JSON list of objects, found dict"),
        ("[]", "the list is empty"),
        ('[{"Hostname": "x"}, 3]', "entry 1 is int, not an object"),
        ('[{"Labels": "Finance"}]', "entry 0: Labels must be a list of strings"),
        ('[{"OS": 3}]', "entry 0: OS must be a string"),
    ],
)
def test_bad_facts_files_are_refused_with_the_problem_named(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "facts.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as raised:
        load_facts_file(path)
    assert str(path) in str(raised.value)


def test_a_missing_facts_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        load_facts_file(tmp_path / "absent.json")
