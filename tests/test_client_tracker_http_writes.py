"""process_tracker_*() on real processes, http_client() against a real HTTP server on loopback,
copy() and rm() on real files."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.plugins import client_registry
from velotui.vql import collect


async def _rows(query: str, **env: object) -> tuple[list[dict], list[str]]:
    errors: list[str] = []
    rows = await collect(query, registry=client_registry(), env=env,
                         on_log=lambda level, message: errors.append(message)
                         if level.upper() == "ERROR" else None)
    return rows, errors


@pytest.fixture
def family() -> Iterator[tuple[int, int]]:
    """A real parent process with one child: (parent pid, child pid)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "child = subprocess.Popen(['sleep', '60'])\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        yield parent.pid, child
    finally:
        parent.kill()
        parent.wait()
        os.system(f"kill {child} 2>/dev/null")


async def test_the_tracker_answers_from_the_running_processes(family) -> None:
    parent, child = family
    rows, errors = await _rows(
        "SELECT process_tracker_get(id=Child).Data.Name AS Name, "
        "process_tracker_get(id=Child).ParentId AS ParentId, "
        "process_tracker_children(id=Parent).Data.Pid AS Children, "
        "process_tracker_callchain(id=Child).Data.Pid AS Chain, "
        "process_tracker_tree(id=Parent) AS Tree, "
        "process_tracker_get(id=999999999) AS Gone FROM scope()",
        Parent=parent, Child=child)
    assert errors == []
    row = rows[0]
    assert row["Name"] == "sleep"
    assert row["ParentId"] == str(parent)
    assert row["Children"] == [child]
    assert row["Chain"][-2:] == [parent, child]  # from the oldest ancestor down
    assert row["Tree"]["id"] == str(parent)
    assert [c["id"] for c in row["Tree"]["children"]] == [str(child)]
    assert row["Gone"] is None
    listed, _ = await _rows("SELECT Pid, StartTime, EndTime FROM process_tracker_pslist() "
                            "WHERE Pid = Child", Child=child)
    assert len(listed) == 1 and listed[0]["StartTime"] is not None
    assert listed[0]["EndTime"] is None


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"path={self.path} agent={self.headers['User-Agent']} " \
            f"x={self.headers.get('X-Test')}".encode()
        self.send_response(404 if "missing" in self.path else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_http_client_gets_posts_chunks_and_reports_status(web: str) -> None:
    rows, errors = await _rows(
        "SELECT Url, Content, Response, Headers.`Content-Type` AS Type FROM http_client("
        "url=Base + '/a', params=dict(q='1 2'), headers=dict(`X-Test`='yes'))", Base=web)
    assert errors == []
    assert rows == [{"Url": f"{web}/a", "Content": "path=/a?q=1+2 agent=velotui x=yes",
                     "Response": 200, "Type": "text/plain"}]
    posted, _ = await _rows("SELECT Content, Response FROM http_client(url=Base, data='hello', "
                            "chunk_size=2)", Base=web)
    assert posted == [{"Content": "he", "Response": 201}, {"Content": "ll", "Response": 201},
                      {"Content": "o", "Response": 201}]
    missing, _ = await _rows("SELECT Response FROM http_client(url=Base + '/missing')",
                             Base=web)
    assert missing == [{"Response": 404}]
    saved, _ = await _rows("SELECT read_file(filename=Content) AS Body FROM http_client("
                           "url=Base + '/file', tempfile_extension='.txt')", Base=web)
    assert saved[0]["Body"].startswith("path=/file")
    refused, _ = await _rows("SELECT Response, Content FROM http_client(url='http://127.0.0.1:1/')")
    assert refused[0]["Response"] == 500 and refused[0]["Content"]
    _, errors = await _rows("SELECT * FROM http_client(url='file:///etc/passwd')")
    assert errors == ["http_client(): 'file:///etc/passwd' is not an http or https URL"]


async def test_copy_writes_content_or_a_file_and_rm_removes_only_files(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("original")
    rows, errors = await _rows(
        "SELECT copy(filename=Source, dest=Folder + '/a/copy.txt', create_directories=TRUE) "
        "AS Copied, copy(filename='made here', accessor='data', dest=Folder + '/data.txt', "
        "permissions='0640') AS Data FROM scope()", Source=str(source), Folder=str(tmp_path))
    assert errors == []
    assert (tmp_path / "a" / "copy.txt").read_text() == "original"
    assert (tmp_path / "data.txt").read_text() == "made here"
    assert oct((tmp_path / "data.txt").stat().st_mode & 0o777) == "0o640"
    assert rows == [{"Copied": str(tmp_path / "a" / "copy.txt"),
                     "Data": str(tmp_path / "data.txt")}]
    rows, errors = await _rows("SELECT rm(filename=Target) AS File, rm(filename=Folder) AS Dir, "
                               "rm(filename=Target) AS Again FROM scope()",
                               Target=str(tmp_path / "data.txt"), Folder=str(tmp_path / "a"))
    assert rows == [{"File": True, "Dir": False, "Again": False}]
    assert not (tmp_path / "data.txt").exists() and (tmp_path / "a" / "copy.txt").exists()
    assert any("Is a directory" in e for e in errors) and any("No such file" in e
                                                               for e in errors)


async def test_parse_xml_gives_velociraptors_shape_and_refuses_what_is_not_xml(
        tmp_path: Path) -> None:
    document = tmp_path / "packages.xml"
    document.write_text('<stream><list><item name="a" version="1"/>'
                        '<item name="b" version="2">note</item></list></stream>')
    rows, errors = await _rows(
        "LET xml = parse_xml(file=Path)\n"
        "SELECT Attrname AS Name, Attrversion AS Version, get(field='#text') AS Text "
        "FROM foreach(row=xml.stream.list.item)", Path=str(document))
    assert errors == []
    assert rows == [{"Name": "a", "Version": "1", "Text": None},
                    {"Name": "b", "Version": "2", "Text": "note"}]
    rows, _ = await _rows("SELECT parse_xml(file='<a><b>x</b></a>', accessor='data') AS X "
                          "FROM scope()")
    assert rows == [{"X": {"a": {"b": "x"}}}]
    rows, errors = await _rows("SELECT parse_xml(file='<a>', accessor='data') AS X FROM scope()")
    assert rows == [{"X": None}] and "is not XML" in errors[0]


async def test_host_resolves_through_the_system_resolver() -> None:
    rows, errors = await _rows("SELECT host(name='localhost', type='ip4') AS V4, "
                               "host(name='localhost', server='8.8.8.8:53') AS Refused "
                               "FROM scope()")
    assert rows == [{"V4": ["127.0.0.1"], "Refused": None}]
    assert errors == ["host(): server= is not supported here; the system's resolver is used"]
