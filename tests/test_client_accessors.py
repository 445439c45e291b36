"""accessor= on the agent's file plugins, and the arguments Velociraptor's file plugins take:
run as VQL against the client registry, on files each test writes into a temporary folder."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.plugins import client_registry
from velotui.vql import collect


async def query(
    text: str, *, env: dict[str, Any] | None = None, services: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of ``text`` and the errors it logged."""
    errors: list[str] = []
    rows = await collect(
        text,
        registry=client_registry(),
        env=env or {},
        services=services,
        on_log=lambda level, message: errors.append(message) if level == "error" else None,
    )
    return rows, errors


class RecordingUploader:
    """An Uploader that keeps what each upload sent, read from the path while it is given."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str | None, bytes, str]] = []

    async def upload(self, path: str, name: str | None) -> dict[str, Any]:
        data = Path(path).read_bytes()
        self.uploads.append((name, data, path))
        return {"Path": name or path, "Size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_bytes(b"first line\r\nsecond line\nthird")
    return path


# refusals -------------------------------------------------------------------------------------

REFUSED_CALLS = [
    "SELECT * FROM glob(globs='*', root=P, accessor='ntfs')",
    "SELECT * FROM stat(filename=P, accessor='ntfs')",
    "SELECT stat(filename=P, accessor='ntfs') AS S FROM scope()",
    "SELECT read_file(filename=P, accessor='ntfs') AS S FROM scope()",
    "SELECT * FROM read_file(filenames=P, accessor='ntfs')",
    "SELECT hash(path=P, accessor='ntfs') AS S FROM scope()",
    "SELECT upload(file=P, accessor='ntfs') AS S FROM scope()",
    "SELECT * FROM parse_lines(filename=P, accessor='ntfs')",
]


@pytest.mark.parametrize("text", REFUSED_CALLS)
async def test_an_unsupported_accessor_is_refused_by_name(text: str, sample: Path) -> None:
    rows, errors = await query(text, env={"P": str(sample)},
                               services={"uploader": RecordingUploader()})
    assert rows in ([], [{"S": None}])
    assert len(errors) == 1
    assert "accessor 'ntfs' is not supported (supported: " in errors[0]
    assert "\n" not in errors[0]


async def test_glob_refuses_the_data_accessor_with_a_reason(tmp_path: Path) -> None:
    rows, errors = await query("SELECT * FROM glob(globs='*', accessor='data')")
    assert rows == []
    assert errors == ["glob(): accessor 'data' has no directories to search (use file or auto)"]


# auto and file --------------------------------------------------------------------------------


async def test_auto_and_file_read_the_local_file(sample: Path) -> None:
    for accessor in ("auto", "file"):
        rows, errors = await query(
            "SELECT read_file(filename=P, accessor=A) AS Text, hash(path=P, accessor=A).MD5 AS MD5,"
            " stat(filename=P, accessor=A).Size AS Size FROM scope()",
            env={"P": str(sample), "A": accessor},
        )
        assert errors == []
        assert rows == [{"Text": sample.read_bytes().decode(), "Size": sample.stat().st_size,
                         "MD5": hashlib.md5(sample.read_bytes()).hexdigest()}]
    rows, errors = await query("SELECT Name FROM glob(globs='*.txt', root=R, accessor='auto')",
                               env={"R": str(sample.parent)})
    assert (rows, errors) == ([{"Name": "sample.txt"}], [])


# data -----------------------------------------------------------------------------------------


async def test_the_data_accessor_reads_the_argument_itself() -> None:
    rows, errors = await query(
        "SELECT read_file(filename='hello world', accessor='data', offset=6) AS Tail,"
        " hash(path='abc', accessor='data') AS Hash,"
        " stat(filename='abcd', accessor='data').Size AS Size FROM scope()"
    )
    assert errors == []
    assert rows == [{
        "Tail": "world",
        "Hash": {"MD5": hashlib.md5(b"abc").hexdigest(), "SHA1": hashlib.sha1(b"abc").hexdigest(),
                 "SHA256": hashlib.sha256(b"abc").hexdigest()},
        "Size": 4,
    }]
    rows, errors = await query(
        "SELECT Line FROM parse_lines(filename='one\\r\\ntwo\\n\\nthree', accessor='data')"
    )
    assert errors == []
    assert [row["Line"] for row in rows] == ["one", "two", "", "three"]


async def test_the_data_accessor_needs_a_string() -> None:
    rows, errors = await query("SELECT hash(path=42, accessor='data') AS H FROM scope()")
    assert rows == [{"H": None}]
    assert errors == ["hash(): with accessor 'data', path must be the content as a string, "
                      "not int"]


async def test_upload_with_the_data_accessor_sends_the_bytes_under_the_name() -> None:
    uploader = RecordingUploader()
    rows, errors = await query(
        "SELECT upload(file='some evidence', accessor='data', name='notes/evidence.txt') AS U"
        " FROM scope()",
        services={"uploader": uploader},
    )
    assert errors == []
    assert rows[0]["U"]["Path"] == "notes/evidence.txt"
    assert rows[0]["U"]["Size"] == len("some evidence")
    [(name, data, spooled)] = uploader.uploads
    assert (name, data) == ("notes/evidence.txt", b"some evidence")
    assert not os.path.exists(spooled)  # the temporary copy is gone once uploaded
    rows, errors = await query(
        "SELECT upload(file='x', accessor='data') AS U FROM scope()",
        services={"uploader": uploader},
    )
    assert rows == [{"U": None}]
    assert errors == ["upload(): with accessor 'data', name= must say what to call the upload"]


async def test_upload_accepts_the_times_velociraptor_records(sample: Path) -> None:
    uploader = RecordingUploader()
    rows, errors = await query(
        "SELECT upload(file=P, name='s.txt', mtime=1, atime=2, ctime=3, btime=4).Size AS Size"
        " FROM scope()",
        env={"P": str(sample)}, services={"uploader": uploader},
    )
    assert (rows, errors) == ([{"Size": sample.stat().st_size}], [])


# hash -----------------------------------------------------------------------------------------


async def test_hash_selects_digests_and_stops_at_max_size(sample: Path) -> None:
    content = sample.read_bytes()
    rows, errors = await query(
        "SELECT hash(path=P, hashselect='sha1') AS One,"
        " hash(path=P, hashselect=['SHA256', 'MD5']) AS Two,"
        " hash(path=P, max_size=5) AS Prefix FROM scope()",
        env={"P": str(sample)},
    )
    assert errors == []
    [row] = rows
    assert row["One"] == {"SHA1": hashlib.sha1(content).hexdigest()}
    assert row["Two"] == {"MD5": hashlib.md5(content).hexdigest(),
                          "SHA256": hashlib.sha256(content).hexdigest()}
    assert row["Prefix"]["SHA256"] == hashlib.sha256(content[:5]).hexdigest()
    rows, errors = await query("SELECT hash(path=P, hashselect='CRC32') AS H FROM scope()",
                               env={"P": str(sample)})
    assert rows == [{"H": None}]
    assert errors == ["hash(): hashselect 'CRC32' is not one of MD5, SHA1, SHA256"]


# stat -----------------------------------------------------------------------------------------


async def test_stat_as_a_function_gives_the_plugins_row(sample: Path) -> None:
    rows, errors = await query(
        "SELECT stat(filename=P) AS Function, stat(filename=Missing) AS Missing FROM scope()",
        env={"P": str(sample), "Missing": str(sample.parent / "missing")},
    )
    plugin_rows, _ = await query("SELECT * FROM stat(filename=P)", env={"P": str(sample)})
    [row] = rows
    assert row["Function"] == plugin_rows[0]
    assert row["Function"]["OSPath"] == str(sample)
    assert row["Function"]["Size"] == sample.stat().st_size
    assert row["Missing"] is None
    assert errors == [f"stat(): {sample.parent / 'missing'}: No such file or directory"]


# read_file ------------------------------------------------------------------------------------


async def test_read_file_plugin_gives_chunks_with_offsets(tmp_path: Path) -> None:
    path = tmp_path / "chunks.bin"
    path.write_bytes(b"abcdefghij")
    rows, errors = await query(
        "SELECT * FROM read_file(filenames=[P, 'xyz'], chunk=4, max_length=9)",
        env={"P": str(path)},
    )
    assert errors == ["read_file(): xyz: No such file or directory"]
    assert rows == [
        {"data": "abcd", "offset": 0, "filename": str(path)},
        {"data": "efgh", "offset": 4, "filename": str(path)},
        {"data": "i", "offset": 8, "filename": str(path)},
    ]


# parse_lines ----------------------------------------------------------------------------------


async def test_parse_lines_reads_several_files_and_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "plain.log"
    plain.write_text("a\nb\n")
    packed = tmp_path / "old.log.gz"
    packed.write_bytes(gzip.compress(b"c\nd\n"))
    rows, errors = await query("SELECT Line FROM parse_lines(filename=[A, B])",
                               env={"A": str(plain), "B": str(packed)})
    assert errors == []
    assert [row["Line"] for row in rows] == ["a", "b", "c", "d"]


async def test_parse_lines_of_corrupt_gzip_is_one_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"line\n" * 1000)[:40])
    _, errors = await query("SELECT Line FROM parse_lines(filename=P)",
                            env={"P": str(broken)})
    assert len(errors) == 1 and errors[0].startswith(f"parse_lines(): {broken}: ")


# glob -----------------------------------------------------------------------------------------


async def test_glob_nosymlink_enters_no_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "inside.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    text = "SELECT OSPath FROM glob(globs=['link/*', 'real/*'], root=R, nosymlink=N)"
    followed, errors = await query(text, env={"R": str(tmp_path), "N": False})
    assert errors == []
    assert sorted(row["OSPath"] for row in followed) == [
        str(tmp_path / "link" / "inside.txt"), str(tmp_path / "real" / "inside.txt")]
    kept_out, errors = await query(text, env={"R": str(tmp_path), "N": True})
    assert errors == []
    assert [row["OSPath"] for row in kept_out] == [str(tmp_path / "real" / "inside.txt")]


async def test_glob_one_filesystem_stays_off_proc() -> None:
    if os.stat("/").st_dev == os.stat("/proc").st_dev:
        pytest.skip("/proc is on the root file system here")
    text = "SELECT OSPath FROM glob(globs='/*/self/status', one_filesystem=O)"
    crossing, _ = await query(text, env={"O": False})
    assert [row["OSPath"] for row in crossing] == ["/proc/self/status"]
    staying, errors = await query(text, env={"O": True})
    assert (staying, errors) == ([], [])


def test_the_client_registry_offers_the_file_plugins_with_velociraptors_arguments() -> None:
    registry = client_registry()
    plugins = {callee.name: callee for callee in registry.plugins()}
    functions = {callee.name: callee for callee in registry.functions()}
    expected_plugins = {
        "glob": {"globs", "root", "accessor", "nosymlink", "one_filesystem",
                 "recursion_callback"},
        "stat": {"filename", "accessor"},
        "read_file": {"filenames", "chunk", "max_length", "accessor"},
        "parse_lines": {"filename", "accessor", "buffer_size"},
        "parse_csv": {"filename", "accessor", "auto_headers", "separator", "comment", "columns"},
        "parse_jsonl": {"filename", "accessor"},
        "parse_records_with_regex": {"file", "regex", "accessor", "buffer_size"},
        "split_records": {"filenames", "accessor", "regex", "columns", "first_row_is_headers",
                          "count", "record_regex", "buffer_size"},
        "sqlite": {"file", "accessor", "query", "args"},
        "unzip": {"filename", "accessor", "filename_filter", "output_directory", "type"},
    }
    expected_functions = {
        "stat": {"filename", "accessor"},
        "read_file": {"filename", "accessor", "offset", "length"},
        "hash": {"path", "accessor", "hashselect", "max_size"},
        "upload": {"file", "name", "accessor", "mtime", "atime", "ctime", "btime"},
        "parse_yaml": {"filename", "accessor", "schema"},
        "tempfile": {"data", "extension", "permissions", "remove_last"},
        "tempdir": {"remove_last"},
    }
    for name, arguments in expected_plugins.items():
        assert set(plugins[name].parameters) == arguments, name
    for name, arguments in expected_functions.items():
        assert set(functions[name].parameters) == arguments, name


async def test_glob_recursion_callback_decides_which_directories_are_entered(
    tmp_path: Path,
) -> None:
    for folder in ("keep/inner", "skip/inner"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "f.txt").write_text("x")
    text = ("SELECT OSPath FROM glob(globs='**/*.txt', root=R, recursion_callback=CB)"
            " ORDER BY OSPath")
    rows, errors = await query(text, env={"R": str(tmp_path), "Skip": "skip$",
                                          "CB": "x => NOT x.OSPath =~ Skip"})
    assert errors == []
    assert [row["OSPath"] for row in rows] == [str(tmp_path / "keep" / "inner" / "f.txt")]
    rows, errors = await query(text, env={"R": str(tmp_path), "CB": ""})
    assert len(rows) == 2 and errors == []
    rows, errors = await query(text, env={"R": str(tmp_path), "CB": "not a lambda"})
    assert rows == []
    assert errors == ["glob(): recursion_callback must be VQL like \"x => NOT x.Name =~ 'proc'\","
                      " not 'not a lambda'"]
