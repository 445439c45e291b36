"""Uploads behind one interface: FolderUploads on real files in a temporary folder, the datastore's
record of where uploads live, and a served hunt whose uploads land in a shared folder given to
`velotui serve --uploads`, export from there and leave it when the hunt is deleted."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for,
    wait_for_clients,
    write_agent_config,
)
from velotui.server.datastore import Datastore, DatastoreError
from velotui.server.upload_store import FolderUploads, upload_key

# FolderUploads ------------------------------------------------------------------------------------


def test_chunks_land_at_their_offsets_and_a_resent_chunk_cuts_what_was_never_recorded(
    tmp_path: Path,
) -> None:
    store = FolderUploads(tmp_path / "uploads")
    key = upload_key("C.abc", "F.1", 0)
    store.write_chunk(key, 0, b"first-")
    store.write_chunk(key, 6, b"second-and-more")
    # The server crashed before recording the second chunk; the agent sends a shorter one again.
    store.write_chunk(key, 6, b"again")
    assert store.path(key) == tmp_path / "uploads" / "C.abc" / "F.1" / "0"
    assert store.size(key) == 11
    assert store.finish(key) == hashlib.sha256(b"first-again").hexdigest()
    with store.open(key) as stream:
        assert stream.read() == b"first-again"
    store.cut(key, 6)  # a chunk written but refused by the database
    assert store.size(key) == 6


def test_nothing_stored_is_told_apart_from_an_empty_file(tmp_path: Path) -> None:
    store = FolderUploads(tmp_path)
    key = upload_key("C.abc", "F.1", 3)
    assert store.size(key) is None
    with pytest.raises(FileNotFoundError):
        store.open(key)
    store.write_chunk(key, 0, b"")
    assert store.size(key) == 0


@pytest.mark.parametrize("key", ["../../etc/passwd", "C.a/F.1/../../x", "/etc/passwd",
                                 "C.a/F.1", "C.a/F.1/0/1", "C.a/./0", "C.a\\..\\0", ""])
def test_a_key_that_could_leave_the_folder_is_refused(tmp_path: Path, key: str) -> None:
    store = FolderUploads(tmp_path / "uploads")
    with pytest.raises(ValueError):
        store.path(key)
    with pytest.raises(ValueError):
        store.write_chunk(key, 0, b"x")
    assert not any(tmp_path.rglob("*"))


@pytest.mark.parametrize("client_id, flow_id", [("..", "F.1"), ("C.a", "F/1"), ("C a", "F.1")])
def test_only_plain_identifiers_make_a_key(client_id: str, flow_id: str) -> None:
    with pytest.raises(ValueError, match="unsafe identifier"):
        upload_key(client_id, flow_id, 0)


def test_a_key_recorded_on_windows_finds_its_file(tmp_path: Path) -> None:
    store = FolderUploads(tmp_path)
    store.write_chunk("C.a/F.1/0", 0, b"bytes")
    assert store.size("C.a\\F.1\\0") == 5


def test_remove_counts_files_and_bytes_and_keeps_other_flows_files(tmp_path: Path) -> None:
    store = FolderUploads(tmp_path / "uploads")
    gone = [upload_key("C.a", "F.1", 0), upload_key("C.a", "F.1", 1), upload_key("C.b", "F.2", 0)]
    kept = upload_key("C.a", "F.9", 0)
    for n, key in enumerate([*gone, kept]):
        store.write_chunk(key, 0, b"x" * (10 + n))
    missing = upload_key("C.c", "F.3", 0)  # recorded but never written (or removed already)

    assert store.remove([*gone, missing]) == (3, 10 + 11 + 12)

    assert all(store.size(key) is None for key in gone)
    assert store.size(kept) == 13
    # The folders the removed files left empty went too; the client with other files stays.
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == [
        "C.a", "C.a/F.9", "C.a/F.9/0"]
    assert store.remove(gone) == (0, 0)


# Where the datastore keeps them ----------------------------------------------------------------


def test_uploads_are_in_the_datastore_unless_recorded_elsewhere(tmp_path: Path) -> None:
    datastore = Datastore.open(tmp_path / "datastore")
    assert datastore.uploads_location() == datastore.root / "uploads"
    assert not datastore.settings_path.exists()  # nothing recorded: the defaults

    shared = tmp_path / "shared" / "uploads"
    assert datastore.record_uploads_location(shared) == shared
    assert shared.is_dir()
    assert Datastore.open(datastore.root).uploads_location() == shared
    assert json.loads(datastore.settings_path.read_text()) == {"uploads": str(shared)}


def test_recording_the_uploads_keeps_the_other_settings(tmp_path: Path) -> None:
    datastore = Datastore.open(tmp_path / "datastore")
    datastore.write_settings({"database": "postgresql://velotui@db:5432/velotui"})
    datastore.record_uploads_location(tmp_path / "shared")
    assert datastore.read_settings() == {"database": "postgresql://velotui@db:5432/velotui",
                                         "uploads": str(tmp_path / "shared")}


@pytest.mark.parametrize("text", ["{not json", "[]", '{"uploads": 5}', '{"uploads": ""}'])
def test_damaged_settings_are_an_error_not_a_default(tmp_path: Path, text: str) -> None:
    datastore = Datastore.open(tmp_path / "datastore")
    datastore.settings_path.write_text(text)
    with pytest.raises(DatastoreError, match=r"datastore\.json"):
        datastore.uploads_location()


def test_serve_refuses_in_one_line_when_the_recorded_uploads_folder_is_not_there(
    tmp_path: Path,
) -> None:
    datastore = Datastore.open(tmp_path / "datastore")
    datastore.write_settings({"uploads": str(tmp_path / "unmounted")})
    result = velotui("serve", "--datastore", str(datastore.root), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"velotui serve: the uploads folder {tmp_path / 'unmounted'} is not there (mount it, or"
        " give --uploads)"]
    assert not (tmp_path / "unmounted").exists()


# A served hunt ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_served_hunts_uploads_live_in_the_shared_folder_export_and_delete_from_there(
    tmp_path: Path,
) -> None:
    datastore = tmp_path / "datastore"
    shared = tmp_path / "shared-uploads"
    Datastore.open(datastore)
    server = ServerProcess(datastore, args=["--uploads", str(shared)]).start()
    payload = tmp_path / "evidence.bin"
    payload.write_bytes(bytes(range(256)) * 5000)  # 1.3 MB: several chunks
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agent = AgentProcess(config, tmp_path / "agent").start()

    def cli(*args: str):
        result = velotui(*args, "--datastore", str(datastore))
        assert result.returncode == 0, result.stderr
        return result.stdout

    with running(server, agent):
        [client] = wait_for_clients(datastore, 1)
        hunt_id = cli("hunt", "create", "--query",
                      f"SELECT upload(file='{payload}') AS Upload FROM scope()",
                      "--start").strip()

        def finished() -> bool:
            counts = json.loads(cli("hunt", "show", hunt_id, "--json"))["counts"]
            assert counts["errors"] == 0, counts
            return counts["results"] == 1

        wait_for(finished, timeout=90, interval=0.3, what="the hunt's collection")
        stored = [path for path in shared.rglob("*") if path.is_file()]
        assert [p.relative_to(shared).parts[0] for p in stored] == [client["client_id"]]
        assert stored[0].read_bytes() == payload.read_bytes()
        assert not any((datastore / "uploads").iterdir())

        archive = tmp_path / "hunt.zip"
        cli("hunt", "export", hunt_id, "-o", str(archive))
        with zipfile.ZipFile(archive) as zipped:
            [entry] = [name for name in zipped.namelist() if "/uploads/" in name]
            assert entry.endswith("evidence.bin")
            assert zipped.read(entry) == payload.read_bytes()
        cli("hunt", "stop", hunt_id)

        # The location is the datastore's: a restart without --uploads keeps using it.
        server.stop()
        server.args = []
        server.start()
        deleted = json.loads(cli("hunt", "delete", hunt_id, "--yes", "--json"))
        assert deleted["files"] == 1
        assert deleted["bytes_freed"] >= len(payload.read_bytes())
        assert not any(shared.iterdir())
