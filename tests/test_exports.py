"""Hunt export: one zip of the hunt, every client's rows, logs and uploads, streamed and safe.

The data is made as the server makes it: every hunt, check, collection, row batch, log line and
upload through the data layer's own statements into a real SQLite file, uploads as files where
the server keeps them (tests/data_builder.py).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import os
import sqlite3
import time
import tracemalloc
import unicodedata
import zipfile
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.data_builder import DataBuilder
from velotui.server.data import Database
from velotui.server.data.flows import Ending
from velotui.server.data.records import DEFAULT_LIMITS, FlowLimits
from velotui.server.datastore import Datastore
from velotui.server.exports import (
    ExportChunk,
    ExportError,
    ExportProgress,
    ExportResult,
    export_destination,
    export_hunt,
    is_reserved_name,
    safe_component,
    safe_upload_name,
    stream_hunt,
)
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION, QUEUES
from velotui.server.ids import hunt_flow_id
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.server import Server
from velotui.server.upload_store import FolderUploads, upload_key

HUNT_ID = "H.0000000000ABC"
FLOW = hunt_flow_id(HUNT_ID)
FLOW_2 = hunt_flow_id(HUNT_ID, 2)
NOW = 1_800_000_000.0

ALPHA_ROWS = [
    [{"Pid": 1, "Name": "init", "Args": ["--a", "-b"]}, {"Pid": 2, "Name": "sshd", "Args": []}],
    [{"Pid": 3, "Name": "bash", "Args": None}],
]
BETA_ROWS = [[{"Path": "/etc/hosts", "Size": 120, "Pid": 9}]]
BETA_OLD_ROWS = [[{"Stale": True}]]  # the first attempt, before a relaunch
HOSTILE_NAMES = [
    "../../etc/passwd",
    "C:\\Windows\\System32\\config\\SAM",
    "/abs/olute",
    "nul\x00byte\x07name\x1b[31m",
    "A" * 10_000 + ".txt",
    "..",
    "",
    "report.txt",
    "REPORT.txt",
    "report.txt",
    "CON",
    "rtl\u202etxt.exe",
    "ünïcødé/名前.log",
]


# Making the data the way the server does --------------------------------------------------------


HUNT_LIMITS = replace(DEFAULT_LIMITS, max_rows=5000, max_upload_bytes=1_000_000)


def upload_bytes(index: int) -> bytes:
    return f"upload {index}\n".encode() * (index + 1) + bytes(range(256))


ALPHA_UPLOADS = [(upload_id, name, upload_bytes(upload_id))
                 for upload_id, name in enumerate(HOSTILE_NAMES)]


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    opened = await Database.open(database_url or tmp_path / "velotui.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def uploads(tmp_path: Path) -> FolderUploads:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return FolderUploads(folder)


async def the_hunt(build: DataBuilder, limits: FlowLimits = HUNT_LIMITS) -> None:
    await build.hunt(HUNT_ID, "SELECT * FROM pslist()", created=NOW, started=NOW + 1,
                     description="processes everywhere", rate=60.0, limit=100,
                     server_condition="SELECT * FROM rows WHERE OS = 'linux'",
                     expires=NOW + 7 * 86400, creator="alice", limits=limits)


async def build_fleet(db: Database, uploads: FolderUploads, *,
                      alpha_extra: list[tuple[int, str, bytes]] | None = None,
                      limits: FlowLimits = HUNT_LIMITS) -> Database:
    """A hunt over five clients: alpha (rows, logs, hostile uploads), beta (relaunched, other
    columns, no Fqdn), a client with no facts and no rows, one not matched, one pending."""
    build = DataBuilder(db, uploads)
    await the_hunt(build, limits)
    for client_id, facts, labels in (
        ("C.alpha1", {"Hostname": "alpha", "Fqdn": "alpha.corp.example", "OS": "linux"},
         ["ir"]),
        ("C.beta22", {"Hostname": "be/ta\\..", "OS": "windows"}, []),
        ("C.nofact", {}, []),
        ("C.nomatch", {"Hostname": "gamma"}, []),
        ("C.pending", {"Hostname": "delta"}, []),
    ):
        await build.client(client_id, facts, first_seen=NOW - 1000, last_seen=NOW + 50,
                           agent_labels=["agent-label"], operator_labels=labels)
        await build.check(HUNT_ID, client_id, matched=client_id != "C.nomatch", at=NOW + 1,
                          row=facts)
    await build.collect(
        HUNT_ID, "C.alpha1", created=NOW + 2, started=NOW + 3, finished=NOW + 10,
        batches=ALPHA_ROWS, logs=[(NOW + 3, "info", "starting"), (NOW + 4, "info", "done")],
        uploads=ALPHA_UPLOADS + (alpha_extra or []),
    )
    await build.collect(HUNT_ID, "C.beta22", created=NOW + 2, started=NOW + 3,
                        finished=NOW + 5, batches=BETA_OLD_ROWS,
                        end=Ending("error", "timed out"))
    await build.relaunch(HUNT_ID, "C.beta22", NOW + 6)
    await build.collect(HUNT_ID, "C.beta22", attempt=2, created=NOW + 7, started=NOW + 8,
                        finished=NOW + 30, batches=BETA_ROWS,
                        uploads=[(0, "gone.bin", b"lost")])
    await build.collect(HUNT_ID, "C.nofact", created=NOW + 2, started=NOW + 3,
                        finished=NOW + 20)
    # The file of one upload went missing after it was recorded.
    uploads.path(upload_key("C.beta22", FLOW_2, 0)).unlink()
    return db


@pytest.fixture
async def fleet(store: Database, uploads: FolderUploads) -> Database:
    return await build_fleet(store, uploads)


def client_entries(folder: str, kinds: tuple[str, ...], uploads: list[str] = ()) -> set[str]:
    names = {f"{folder}/client.json", f"{folder}/log.jsonl", f"{folder}/uploads.json"}
    names |= {f"{folder}/results.{kind}" for kind in kinds}
    names |= {f"{folder}/uploads/{name}" for name in uploads}
    return names


def read_jsonl(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in archive.read(name).decode().splitlines()]


def read_csv(archive: zipfile.ZipFile, name: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(archive.read(name).decode(), newline="")))


def uploaded_names(archive: zipfile.ZipFile, folder: str) -> list[str]:
    prefix = f"{folder}/uploads/"
    return [name[len(prefix):] for name in archive.namelist() if name.startswith(prefix)]


# Layout -----------------------------------------------------------------------------------------


@pytest.mark.both_backends
@pytest.mark.parametrize(
    ("fmt", "kinds"), [("json", ("jsonl",)), ("csv", ("csv",)), ("both", ("jsonl", "csv"))]
)
async def test_the_zip_holds_exactly_the_specified_entries(
    fleet: Database, uploads: FolderUploads, tmp_path: Path, fmt: str, kinds: tuple[str, ...]
) -> None:
    destination = tmp_path / "export.zip"
    result = await export_hunt(fleet, uploads, HUNT_ID, destination, fmt=fmt)

    with zipfile.ZipFile(destination) as archive:
        names = archive.namelist()
        alpha_uploads = uploaded_names(archive, "alpha-C.alpha1")
        expected = {"hunt.json"} | {f"results/All.{kind}" for kind in kinds}
        expected |= client_entries("alpha-C.alpha1", kinds, alpha_uploads)
        expected |= client_entries("be_ta_-C.beta22", kinds)  # its one upload file is gone
        expected |= client_entries("unknown-C.nofact", kinds)
        assert archive.testzip() is None
    assert len(names) == len(set(names))  # no entry written twice
    assert set(names) == expected
    assert len(alpha_uploads) == len(HOSTILE_NAMES)
    assert result.path == destination
    assert result.entries == len(names)
    assert result.clients == 3  # the not-matched and pending clients have no collection
    assert result.rows == 3 + 1
    assert result.bytes == destination.stat().st_size


@pytest.mark.both_backends
@pytest.mark.parametrize(("fmt", "kinds"), [("json", ("jsonl",)), ("both", ("jsonl", "csv"))])
async def test_a_summary_has_no_client_folders(
    fleet: Database, uploads: FolderUploads, tmp_path: Path, fmt: str, kinds: tuple[str, ...]
) -> None:
    destination = tmp_path / "summary.zip"
    result = await export_hunt(fleet, uploads, HUNT_ID, destination, fmt=fmt, summary=True)

    with zipfile.ZipFile(destination) as archive:
        assert set(archive.namelist()) == {"hunt.json"} | {f"results/All.{k}" for k in kinds}
        assert len(read_jsonl(archive, "results/All.jsonl")) == 4
        assert json.loads(archive.read("hunt.json"))["export"]["summary"] is True
    assert (result.clients, result.rows, result.entries) == (3, 4, 1 + len(kinds))


@pytest.mark.both_backends
async def test_a_hunt_without_collections_exports_its_description_and_empty_results(
    store: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    await the_hunt(DataBuilder(store, uploads))
    destination = tmp_path / "empty.zip"
    result = await export_hunt(store, uploads, HUNT_ID, destination, fmt="both")

    with zipfile.ZipFile(destination) as archive:
        assert set(archive.namelist()) == {"hunt.json", "results/All.jsonl", "results/All.csv"}
        assert archive.read("results/All.jsonl") == b""
        assert read_csv(archive, "results/All.csv") == [["ClientId", "Fqdn", "FlowId"]]
        assert json.loads(archive.read("hunt.json"))["counts"] == dict.fromkeys(QUEUES, 0)
    assert (result.clients, result.rows) == (0, 0)


# Contents ---------------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_hunt_json_describes_the_hunt_its_counts_timings_and_the_export(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    before = time.time()
    await export_hunt(fleet, uploads, HUNT_ID, destination, fmt="csv")

    with zipfile.ZipFile(destination) as archive:
        hunt = json.loads(archive.read("hunt.json"))
    assert hunt["hunt_id"] == HUNT_ID
    assert hunt["description"] == "processes everywhere"
    assert hunt["state"] == "running"
    assert hunt["queries"] == {
        "collection": "SELECT * FROM pslist()",
        "client_condition": DEFAULT_CLIENT_CONDITION,
        "server_condition": "SELECT * FROM rows WHERE OS = 'linux'",
    }
    assert (hunt["rate"], hunt["limit"], hunt["expires"]) == (60.0, 100, NOW + 7 * 86400)
    assert hunt["limits"] == {**asdict(DEFAULT_LIMITS), "max_rows": 5000,
                              "max_upload_bytes": 1_000_000}
    # Every queue is there, zero when empty, from the hunt_clients rows themselves.
    assert hunt["counts"] == {"not_matched": 1, "pending": 1, "running": 0, "completed": 1,
                              "results": 2, "errors": 0}
    # The condition flow has no finish time; beta's failed first attempt finished first.
    assert hunt["timings"] == {"created": NOW, "started": NOW + 1, "stopped": None,
                               "first_finished": NOW + 5, "last_finished": NOW + 30}
    assert hunt["export"]["format"] == "csv"
    assert hunt["export"]["summary"] is False
    assert hunt["export"]["clients"] == 3
    assert before <= hunt["export"]["time"] <= time.time()


@pytest.mark.both_backends
async def test_all_jsonl_carries_client_fqdn_and_flow_first_then_the_stored_rows(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    await export_hunt(fleet, uploads, HUNT_ID, destination)

    with zipfile.ZipFile(destination) as archive:
        rows = read_jsonl(archive, "results/All.jsonl")
        alpha = read_jsonl(archive, "alpha-C.alpha1/results.jsonl")
        beta = read_jsonl(archive, "be_ta_-C.beta22/results.jsonl")
        assert archive.read("unknown-C.nofact/results.jsonl") == b""
    assert [list(row)[:3] for row in rows] == [["ClientId", "Fqdn", "FlowId"]] * 4
    expected = [
        {"ClientId": "C.alpha1", "Fqdn": "alpha.corp.example", "FlowId": FLOW, **row}
        for batch in ALPHA_ROWS for row in batch
    ] + [
        # No Fqdn in its facts: the hostname stands in. Only the latest attempt's rows.
        {"ClientId": "C.beta22", "Fqdn": "be/ta\\..", "FlowId": FLOW_2, **BETA_ROWS[0][0]}
    ]
    assert rows == expected
    # Each client's own results are its rows as stored, without the added columns.
    assert alpha == [row for batch in ALPHA_ROWS for row in batch]
    assert beta == BETA_ROWS[0]


@pytest.mark.both_backends
async def test_csv_header_is_the_union_of_every_clients_columns_in_first_seen_order(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    await export_hunt(fleet, uploads, HUNT_ID, destination, fmt="csv")

    with zipfile.ZipFile(destination) as archive:
        table = read_csv(archive, "results/All.csv")
        alpha = read_csv(archive, "alpha-C.alpha1/results.csv")
        beta = read_csv(archive, "be_ta_-C.beta22/results.csv")
    assert table[0] == ["ClientId", "Fqdn", "FlowId", "Pid", "Name", "Args", "Path", "Size"]
    assert table[1] == ["C.alpha1", "alpha.corp.example", FLOW, "1", "init", '["--a","-b"]',
                        "", ""]
    assert table[3] == ["C.alpha1", "alpha.corp.example", FLOW, "3", "bash", "", "", ""]
    assert table[4] == ["C.beta22", "be/ta\\..", FLOW_2, "9", "", "", "/etc/hosts", "120"]
    assert len(table) == 1 + 4
    # A client's own CSV has its own columns only.
    assert alpha[0] == ["Pid", "Name", "Args"]
    assert beta == [["Path", "Size", "Pid"], ["/etc/hosts", "120", "9"]]


@pytest.mark.both_backends
async def test_client_json_and_log_describe_the_client_and_its_flow(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    await export_hunt(fleet, uploads, HUNT_ID, destination)

    with zipfile.ZipFile(destination) as archive:
        alpha = json.loads(archive.read("alpha-C.alpha1/client.json"))
        beta = json.loads(archive.read("be_ta_-C.beta22/client.json"))
        nofact = json.loads(archive.read("unknown-C.nofact/client.json"))
        log = read_jsonl(archive, "alpha-C.alpha1/log.jsonl")
    assert alpha["client_id"] == "C.alpha1"
    assert (alpha["hostname"], alpha["fqdn"], alpha["os"]) == ("alpha", "alpha.corp.example",
                                                               "linux")
    assert alpha["labels"] == ["agent-label", "ir"]
    assert (alpha["first_seen"], alpha["last_seen"]) == (NOW - 1000, NOW + 50)
    assert alpha["hunt"]["queue"] == "results"
    uploaded = sum(len(data) for _id, _name, data in ALPHA_UPLOADS)
    assert alpha["flow"] == {"flow_id": FLOW, "state": "finished", "rows": 3, "bytes": uploaded,
                             "error": None, "created": NOW + 2, "started": NOW + 3,
                             "finished": NOW + 10, "duration": 7.0}
    assert alpha["export"]["rows"] == 3
    assert beta["flow"]["flow_id"] == FLOW_2
    assert beta["hunt"]["attempt"] == 2
    assert (nofact["hostname"], nofact["hunt"]["queue"]) == ("", "completed")
    assert log == [{"time": NOW + 3, "level": "info", "message": "starting"},
                   {"time": NOW + 4, "level": "info", "message": "done"}]


# Hostile names ----------------------------------------------------------------------------------


def assert_safe_entry(name: str) -> None:
    assert not name.startswith("/"), name
    assert "\\" not in name, name
    assert ":" not in name, name
    parts = name.split("/")
    assert all(part not in ("", ".", "..") for part in parts), name
    assert ".." not in name, name
    assert all(unicodedata.category(ch) not in ("Cc", "Cf") for ch in name), name
    assert all(len(part.encode()) <= 200 for part in parts), name
    assert not any(is_reserved_name(part) for part in parts), name


@pytest.mark.both_backends
async def test_hostile_upload_names_are_made_safe_and_the_bytes_kept(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    await export_hunt(fleet, uploads, HUNT_ID, destination)

    with zipfile.ZipFile(destination) as archive:
        for name in archive.namelist():
            assert_safe_entry(name)
        index = json.loads(archive.read("alpha-C.alpha1/uploads.json"))
        stored = {item["entry"]: archive.read(f"alpha-C.alpha1/{item['entry']}")
                  for item in index}
        beta_index = json.loads(archive.read("be_ta_-C.beta22/uploads.json"))

    # The index maps every stored entry back to the agent's own name, size and hash.
    assert [item["name"] for item in index] == HOSTILE_NAMES
    for upload_id, item in enumerate(index):
        data = upload_bytes(upload_id)
        assert stored[item["entry"]] == data
        assert item["size"] == len(data)
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["error"] is None
    # Same names, even differing only in case, got distinct entries.
    entries = [item["entry"] for item in index]
    assert len({entry.casefold() for entry in entries}) == len(entries)
    assert entries[0] == "uploads/etc_passwd"
    assert entries[7] == "uploads/report.txt"
    assert entries[8] == "uploads/REPORT (2).txt"
    assert entries[9] == "uploads/report (3).txt"
    assert entries[4].endswith("AAAA.txt")  # a long name keeps its end, where the extension is
    # A recorded upload whose file is gone is listed, with why it is not in the zip.
    assert beta_index == [{"entry": None, "name": "gone.bin", "upload_id": 0, "size": 0,
                           "sha256": hashlib.sha256(b"lost").hexdigest(), "complete": True,
                           "error": "the stored file is missing"}]


@given(st.text(max_size=300))
def test_any_upload_name_becomes_one_safe_component(name: str) -> None:
    safe = safe_upload_name(name)
    assert safe
    assert "/" not in safe
    assert_safe_entry(safe)


@given(st.text(max_size=300))
def test_any_hostname_becomes_one_safe_component(name: str) -> None:
    safe = safe_component(name, "unknown", 64)
    assert "/" not in safe
    assert len(safe.encode()) <= 64
    assert_safe_entry(safe)


WINDOWS_DEVICE_NAMES = ["CON", "con", "CON.txt", "COM1.tar.gz", "LPT9", "CON.", "CON ", "nul.",
                        "AUX .log", "PRN..txt", "COM\u00b9", "lpt\u00b3.txt", "COM\u00b2.log",
                        "CONIN$", "conout$.log", "COM0", "LPT0.txt"]


@pytest.mark.parametrize("name", WINDOWS_DEVICE_NAMES)
def test_windows_device_names_never_become_entry_names(name: str) -> None:
    assert is_reserved_name(name)
    for safe in (safe_component(name), safe_upload_name(name)):
        assert safe.startswith("_"), safe
        assert not is_reserved_name(safe)
    assert not is_reserved_name(safe_upload_name(f"C:\\x\\{name}"))


@pytest.mark.parametrize("name", ["CONSOLE", "COM10", "com", "LPT", "NULL.txt", "xCON",
                                  "AUXILIARY.log", "COM\u2074"])
def test_names_that_only_look_like_device_names_are_kept(name: str) -> None:
    assert not is_reserved_name(name)
    assert safe_component(name) == name


# Where exports may be kept ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason"), [
    ("/var/lib/velotui/velotui.db", "not a path"),
    ("../velotui.db", "not a path"),
    ("velotui.db", "must end in .zip"),
    ("cases/H.1.zip", "not a path"),
    ("cases\\H.1.zip", "not a path"),
    ("H..zip", "'..'"),
    (".H.1.zip", "starts with a dot"),
    ("H.1\x07.zip", "control"),
    ("H.1\u202e.zip", "control"),
    ("", "empty"),
    ("CON.zip", "portable"),
    ("H:1.zip", "portable"),
    ("A" * 200 + ".zip", "longer than"),
])
def test_an_export_name_that_is_not_a_plain_zip_file_name_is_refused(
    tmp_path: Path, name: str, reason: str
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(ExportError, match=reason) as refused:
        export_destination(exports, name)
    assert "\n" not in str(refused.value)
    assert list(exports.iterdir()) == []


async def test_an_existing_file_is_replaced_only_when_it_is_an_earlier_export(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    database = tmp_path / "velotui.db"
    (exports / "notes.zip").write_text("not a zip")
    (exports / "linked.zip").symlink_to(database)
    (exports / "folder.zip").mkdir()
    with zipfile.ZipFile(exports / "other.zip", "w") as other:
        other.writestr("readme.txt", "a zip, but not an export")
    for name in ("notes.zip", "linked.zip", "folder.zip", "other.zip"):
        with pytest.raises(ExportError, match="exists and is not an earlier export"):
            export_destination(exports, name)
        with pytest.raises(ExportError, match="exists and is not an earlier export"):
            await export_hunt(fleet, uploads, HUNT_ID, exports / name)
    with pytest.raises(ExportError, match="exists and is not an earlier export"):
        await export_hunt(fleet, uploads, HUNT_ID, database)
    assert (exports / "notes.zip").read_text() == "not a zip"
    assert (exports / "linked.zip").is_symlink()

    first = await export_hunt(fleet, uploads, HUNT_ID, exports / "H.zip", summary=True)
    assert export_destination(exports, "H.zip") == exports / "H.zip"
    second = await export_hunt(fleet, uploads, HUNT_ID, exports / "H.zip", fmt="both")
    assert second.entries > first.entries
    assert hashlib.sha256((exports / "H.zip").read_bytes()).hexdigest() == second.sha256


# Streaming --------------------------------------------------------------------------------------


async def collect_stream(parts: AsyncIterator[Any]) -> tuple[list[ExportChunk],
                                                             list[ExportProgress],
                                                             ExportResult]:
    chunks, reports, results = [], [], []
    async for part in parts:
        {ExportChunk: chunks, ExportProgress: reports, ExportResult: results}[type(part)].append(
            part)
    [result] = results
    return chunks, reports, result


@pytest.mark.both_backends
async def test_a_streamed_export_is_the_whole_zip_in_order_with_its_sha256(
    store: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    big = os.urandom(1_500_000)  # random, so the zip is several chunks whatever the compression
    fleet = await build_fleet(store, uploads, alpha_extra=[(99, "memory.raw", big)],
                              limits=DEFAULT_LIMITS)
    kept = tmp_path / "kept.zip"
    chunks, reports, result = await collect_stream(
        stream_hunt(fleet, uploads, HUNT_ID, fmt="both", keep=kept)
    )

    data = b"".join(chunk.data for chunk in chunks)
    assert len(chunks) > 4
    assert [chunk.offset for chunk in chunks] == list(
        itertools.accumulate([0] + [len(chunk.data) for chunk in chunks[:-1]]))
    assert result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert kept.read_bytes() == data  # the copy kept is byte for byte what was sent
    assert result.path == kept
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.read("alpha-C.alpha1/uploads/memory.raw") == big
        assert len(read_jsonl(archive, "results/All.jsonl")) == 4
        assert result.entries == len(archive.namelist())
    assert reports and reports[-1].clients_done == 3


async def test_a_streamed_export_that_keeps_nothing_writes_nothing(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    before = sorted(tmp_path.rglob("*"))
    chunks, _reports, result = await collect_stream(stream_hunt(fleet, uploads, HUNT_ID))
    assert result.path is None
    assert zipfile.ZipFile(io.BytesIO(b"".join(c.data for c in chunks))).testzip() is None
    assert sorted(tmp_path.rglob("*")) == before


async def test_a_stream_closed_early_keeps_nothing(
    store: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    fleet = await build_fleet(store, uploads, limits=DEFAULT_LIMITS,
                              alpha_extra=[(99, "memory.raw", os.urandom(3_000_000))])
    kept = tmp_path / "kept.zip"
    parts = stream_hunt(fleet, uploads, HUNT_ID, keep=kept)
    async for part in parts:
        if isinstance(part, ExportChunk):
            break
    await parts.aclose()
    assert not kept.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Errors -----------------------------------------------------------------------------------------


async def test_an_unknown_hunt_raises_export_error(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    with pytest.raises(ExportError, match=r"H\.NOSUCHHUNT"):
        await export_hunt(fleet, uploads, "H.NOSUCHHUNT", destination)
    assert list(tmp_path.glob("*.zip")) == []


async def test_an_unknown_format_raises_value_error(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="xml"):
        await export_hunt(fleet, uploads, HUNT_ID, tmp_path / "export.zip", fmt="xml")
    assert not (tmp_path / "export.zip").exists()


async def test_a_destination_folder_that_does_not_exist_raises_export_error(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="not a folder"):
        await export_hunt(fleet, uploads, HUNT_ID, tmp_path / "missing" / "export.zip")


async def test_an_interrupted_export_leaves_the_destination_as_it_was(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    await export_hunt(fleet, uploads, HUNT_ID, destination, summary=True)
    previous = destination.read_bytes()
    seen: list[ExportProgress] = []

    def fail_after_first_client(progress: ExportProgress) -> None:
        seen.append(progress)
        if progress.clients_done >= 1:
            raise RuntimeError("operator pulled the plug")

    with pytest.raises(RuntimeError, match="pulled the plug"):
        await export_hunt(fleet, uploads, HUNT_ID, destination,
                          progress=fail_after_first_client)
    assert seen  # it did get under way
    assert destination.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip", "uploads",
                                                          "velotui.db", "velotui.db-shm",
                                                          "velotui.db-wal"]


async def test_a_cancelled_export_leaves_no_file(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    destination = tmp_path / "export.zip"
    first_client = asyncio.Event()

    def on_progress(progress: ExportProgress) -> None:
        if progress.clients_done >= 1:
            first_client.set()

    task = asyncio.create_task(
        export_hunt(fleet, uploads, HUNT_ID, destination, fmt="both", progress=on_progress)
    )
    await first_client.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not destination.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Progress and scale -----------------------------------------------------------------------------


async def test_progress_is_reported_per_client_and_ends_with_the_result(
    fleet: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    reports: list[ExportProgress] = []
    result = await export_hunt(fleet, uploads, HUNT_ID, tmp_path / "export.zip",
                               fmt="both", progress=reports.append)

    assert {report.clients_total for report in reports} == {3}
    assert {1, 2, 3} <= {report.clients_done for report in reports}
    for earlier, later in itertools.pairwise(reports):
        assert earlier.entries_written <= later.entries_written
        assert earlier.rows_written <= later.rows_written
        assert earlier.bytes_written <= later.bytes_written
        assert earlier.clients_done <= later.clients_done
    assert reports[-1] == ExportProgress(
        entries_written=result.entries, rows_written=result.rows, bytes_written=result.bytes,
        clients_done=result.clients, clients_total=3,
    )


BIG_CLIENTS = 8
BIG_ROWS_PER_CLIENT = 25_000
BIG_BATCH = 1000


async def test_a_big_export_completes_in_flat_memory(
    store: Database, uploads: FolderUploads, tmp_path: Path
) -> None:
    filler = "x" * 200

    build = DataBuilder(store, uploads)
    await the_hunt(build, DEFAULT_LIMITS)
    for number in range(BIG_CLIENTS):
        client_id = f"C.big{number:04d}"
        await build.client(client_id, {"Hostname": f"host{number}"}, first_seen=NOW,
                           last_seen=NOW)
        await build.check(HUNT_ID, client_id, matched=True, at=NOW + 1)
        batches = [[{"Index": start + i, "Client": number, "Filler": filler,
                     f"Extra{number}": i} for i in range(BIG_BATCH)]
                   for start in range(0, BIG_ROWS_PER_CLIENT, BIG_BATCH)]
        await build.collect(HUNT_ID, client_id, created=NOW + 2, started=NOW + 3,
                            finished=NOW + 10, batches=batches)
    total_rows = BIG_CLIENTS * BIG_ROWS_PER_CLIENT
    stored = await store.store.fetch_one("SELECT SUM(LENGTH(data)) AS n FROM flow_rows")
    stored_bytes = stored["n"]
    destination = tmp_path / "big.zip"

    tracemalloc.start()
    try:
        # CSV: the path with two passes over the rows. A summary: the folders' rows go the
        # same way, and tracing every allocation makes each pass slow.
        result = await export_hunt(store, uploads, HUNT_ID, destination, fmt="csv",
                                   summary=True)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.rows == total_rows
    # The rows are over 40 MB packed and several times that as Python objects; the export holds
    # a few batches at a time (measured: under 8 MB at its peak).
    assert stored_bytes > 40_000_000
    assert peak < stored_bytes / 4
    with zipfile.ZipFile(destination) as archive:
        with archive.open("results/All.csv") as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            header = next(reader)
            counted = sum(1 for _ in reader)
        assert counted == total_rows
        assert header[:6] == ["ClientId", "Fqdn", "FlowId", "Index", "Client", "Filler"]
        assert header[6:] == [f"Extra{n}" for n in range(BIG_CLIENTS)]


# Through the operator API -------------------------------------------------------------------------


def database_state(datastore: Datastore) -> tuple[str, list[tuple[str, str]]]:
    with sqlite3.connect(f"file:{datastore.database_path}?mode=ro", uri=True) as connection:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        hunts = connection.execute("SELECT hunt_id, description FROM hunts").fetchall()
    return integrity, hunts


@pytest.fixture
async def operator(server: Server) -> AsyncIterator[tuple[RemoteService, str]]:
    """An operator connected over the operator API, and a hunt of the server's."""
    hunt = await server.service("operator").create_hunt(query="SELECT * FROM info()",
                                                        description="kept safe")
    datastore = server.datastore
    remote = await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())
    try:
        yield remote, hunt["hunt_id"]
    finally:
        await remote.close()


@pytest.mark.parametrize("name", ["{datastore}/velotui.db", "../velotui.db", "velotui.db",
                                  "../../elsewhere.zip", "cases/H.zip", ".H.zip"])
async def test_the_server_keeps_exports_only_in_its_exports_folder(
    server: Server, operator: tuple[RemoteService, str], name: str
) -> None:
    remote, hunt_id = operator
    datastore = server.datastore
    name = name.format(datastore=datastore.root)
    before = database_state(datastore)
    files_before = sorted(datastore.root.rglob("*"))

    # The old shape of the call, a path on the server's machine, is refused.
    with pytest.raises(RemoteError, match="path"):
        async for _event in remote.export_hunt(hunt_id=hunt_id, path=name):
            pass
    with pytest.raises(RemoteError, match="cannot name an export") as refused:
        async for _event in remote.export_hunt(hunt_id=hunt_id, keep_on_server=name):
            pass

    assert "\n" not in str(refused.value)
    assert database_state(datastore) == before == ("ok", [(hunt_id, "kept safe")])
    assert sorted(datastore.root.rglob("*")) == files_before
    assert list(datastore.exports_dir.iterdir()) == []
    assert await remote.get_hunt(hunt_id=hunt_id)  # the server carries on


async def test_an_export_kept_on_the_server_is_in_its_exports_folder_and_is_what_was_sent(
    server: Server, operator: tuple[RemoteService, str]
) -> None:
    remote, hunt_id = operator
    chunks: list[bytes] = []
    done: dict[str, Any] = {}
    async for event in remote.export_hunt(hunt_id=hunt_id, format="both",
                                          keep_on_server="case-42.zip"):
        if event["event"] == "chunk":
            assert isinstance(event["data"], bytes)  # a binary frame, not base64
            chunks.append(event["data"])
        elif event["event"] == "done":
            done = event
    kept = server.datastore.exports_dir / "case-42.zip"
    data = b"".join(chunks)
    assert done["kept"] == str(kept)
    assert kept.read_bytes() == data
    assert done["sha256"] == hashlib.sha256(data).hexdigest() and done["bytes"] == len(data)
    with zipfile.ZipFile(kept) as archive:
        assert json.loads(archive.read("hunt.json"))["hunt_id"] == hunt_id

    # Kept only: nothing is sent. The earlier export under that name is replaced.
    events = [event async for event in remote.export_hunt(
        hunt_id=hunt_id, keep_on_server="case-42.zip", send=False, summary=True)]
    assert {event["event"] for event in events} <= {"progress", "done"}
    assert events[-1]["sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert sorted(p.name for p in server.datastore.exports_dir.iterdir()) == ["case-42.zip"]
    audit = await remote.audit_log()
    assert [(entry["action"], entry["details"]["kept"]) for entry in audit[-2:]] == [
        ("export", str(kept)), ("export", str(kept))]


async def test_a_reader_that_stops_holds_the_export_up_instead_of_filling_memory(
    tmp_path: Path,
) -> None:
    """The server makes the zip only as fast as the operator takes it: while the reader stops,
    neither side gathers the zip in memory, and the export resumes when it reads again."""
    datastore = Datastore.open(tmp_path / "datastore")
    uploads = [os.urandom(6_000_000) for _ in range(8)]  # random: the zip is as big, 48 MB

    store = await Database.open(datastore.database_path)
    build = DataBuilder(store, FolderUploads(datastore.uploads_location()))
    await the_hunt(build, DEFAULT_LIMITS)
    await build.client("C.big", {"Hostname": "big"}, first_seen=NOW, last_seen=NOW)
    await build.check(HUNT_ID, "C.big", matched=True, at=NOW + 1)
    await build.collect(HUNT_ID, "C.big", created=NOW + 2, started=NOW + 3, finished=NOW + 10,
                        uploads=[(upload_id, f"disk{upload_id}.img", data)
                                 for upload_id, data in enumerate(uploads)])
    await store.close()
    server = Server(datastore, "127.0.0.1:0")
    await server.start()
    remote = await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())
    tracemalloc.start()
    try:
        events = remote.export_hunt(hunt_id=HUNT_ID)
        received = hashlib.sha256()
        size = 0
        async for event in events:
            if event["event"] == "chunk":
                received.update(event["data"])
                size += len(event["data"])
                break
        held_from = tracemalloc.get_traced_memory()[0]

        # The reader stops. With every queue bounded the export soon waits for it; were any
        # unbounded, the server would go on making the zip into memory. Nothing is timed here:
        # the check only looks, for a while, for growth that must never come.
        deadline = time.monotonic() + 3
        grown = 0
        while time.monotonic() < deadline and grown < 24_000_000:
            await asyncio.sleep(0.05)
            grown = tracemalloc.get_traced_memory()[0] - held_from
        assert grown < 24_000_000

        done: dict[str, Any] = {}
        async for event in events:
            if event["event"] == "chunk":
                received.update(event["data"])
                size += len(event["data"])
            elif event["event"] == "done":
                done = event
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await remote.close()
        await server.stop()
    assert size == done["bytes"] > sum(map(len, uploads))
    assert done["sha256"] == received.hexdigest()
    # Both sides in this process: a few chunks in each queue, never a sizeable part of the zip.
    assert peak < 24_000_000
