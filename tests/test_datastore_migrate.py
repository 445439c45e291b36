"""`velotui datastore migrate --to postgresql://...` end to end: a datastore made by a real
`velotui serve` on SQLite with real agents (a finished hunt with rows and uploaded files,
operators, audit records), migrated into a real PostgreSQL, its SQLite file then removed, and
served again: the same hunts, rows, counts, clients, operators and audit chain, from
PostgreSQL. A target that holds data is refused in one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

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
from velotui.server.data.migrate import TABLE_NAMES
from velotui.server.datastore import Datastore

pytestmark = pytest.mark.slow

AGENTS = 3


def cli(datastore: Path, *args: str) -> str:
    result = velotui(*args, "--datastore", str(datastore))
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def finished_hunt(datastore: Path, query: str) -> str:
    hunt_id = cli(datastore, "hunt", "create", "--query", query, "--start").strip()

    def finished() -> bool:
        counts = json.loads(cli(datastore, "hunt", "show", hunt_id, "--json"))["counts"]
        assert counts["errors"] == 0, counts
        return counts["results"] == AGENTS

    wait_for(finished, timeout=90, interval=0.3, what=f"hunt {hunt_id} to finish")
    cli(datastore, "hunt", "stop", hunt_id)
    return hunt_id


def what_operators_see(datastore: Path, hunt_ids: list[str]) -> dict[str, Any]:
    """Everything the command line shows of the datastore, in a form to compare."""
    clients = json_lines(cli(datastore, "clients", "--json"))
    return {
        "hunts": json_lines(cli(datastore, "hunt", "list", "--all", "--json")),
        "shown": [json.loads(cli(datastore, "hunt", "show", h, "--json")) for h in hunt_ids],
        "rows": [sorted(json.dumps(row, sort_keys=True)
                        for row in json_lines(cli(datastore, "hunt", "results", h)))
                 for h in hunt_ids],
        "clients": sorted(({k: v for k, v in c.items() if k != "online"} for c in clients),
                          key=lambda c: c["client_id"]),
        "operators": json_lines(cli(datastore, "operator", "list", "--json")),
    }


def audit_records(datastore: Path) -> list[dict[str, Any]]:
    return json_lines(cli(datastore, "audit", "--json", "--limit", "100000"))


def test_a_served_datastore_migrated_to_postgresql_serves_the_same_from_there(
    tmp_path: Path, postgres_url: str
) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    evidence = tmp_path / "evidence.bin"
    evidence.write_bytes(bytes(range(256)) * 1000)
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json", "Finance")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", str(AGENTS)).start()
    with running(server, agents):
        wait_for_clients(datastore, AGENTS)
        hunt_ids = [
            finished_hunt(datastore, "SELECT _value AS N, format(format='row %d', args=_value)"
                                     " AS Text FROM range(end=1500)"),
            finished_hunt(datastore, f"SELECT upload(file='{evidence}') AS Upload"
                                     " FROM scope()"),
        ]
        cli(datastore, "operator", "add", "alice", "--role", "analyst", "-o",
            str(tmp_path / "alice.token"))
        # Gone before the snapshot: a client's last sight of it is when it left.
        agents.stop()
        wait_for(lambda: not any(c["online"] for c in json_lines(cli(datastore, "clients",
                                                                      "--json"))),
                 what="the agents gone")
        before = what_operators_see(datastore, hunt_ids)
        audit_before = audit_records(datastore)
        # A server writing the datastore would write past the copy.
        busy = velotui("datastore", "migrate", "--to", postgres_url, "--datastore",
                       str(datastore))
        assert busy.returncode == 1
        assert busy.stderr.splitlines() == [
            f"velotui datastore migrate: a server is running on {datastore} (process"
            f" {server.process.pid}): stop it first"]
    assert before["shown"][0]["counts"]["results"] == AGENTS
    assert sum(len(rows) for rows in before["rows"]) == AGENTS * 1501
    assert len(audit_before) >= 6

    migrated = velotui("datastore", "migrate", "--to", postgres_url, "--datastore",
                       str(datastore))

    assert migrated.returncode == 0, migrated.stderr
    lines = migrated.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:len(TABLE_NAMES)]] == list(TABLE_NAMES)
    copied = dict(line.split(": ") for line in lines[:len(TABLE_NAMES)])
    assert copied["hunts"] == "2 rows" and copied["clients"] == f"{AGENTS} rows"
    assert copied["uploads"] == f"{AGENTS} rows" and copied["operators"] == "2 rows"
    assert copied["audit"] == f"{len(audit_before)} rows"
    assert lines[len(TABLE_NAMES)].endswith(
        f"audit chain intact ({len(audit_before)} records)")
    assert len(lines) == len(TABLE_NAMES) + 2
    assert Datastore.open(datastore).database_url() == postgres_url
    # Whatever is served now comes from PostgreSQL: the SQLite file is gone.
    for suffix in ("", "-wal", "-shm"):
        (datastore / f"velotui.db{suffix}").unlink(missing_ok=True)

    server.start()
    with running(server):
        assert what_operators_see(datastore, hunt_ids) == before
        assert audit_records(datastore) == audit_before
        assert cli(datastore, "audit", "verify").strip() == (
            f"audit chain intact: {len(audit_before)} records")
        # The copied files' records still find them, and ids go on after the copied ones.
        archive = tmp_path / "uploads.zip"
        cli(datastore, "hunt", "export", hunt_ids[1], "-o", str(archive))
        with zipfile.ZipFile(archive) as zipped:
            uploaded = [n for n in zipped.namelist() if "/uploads/" in n]
            assert len(uploaded) == AGENTS
            assert all(zipped.read(name) == evidence.read_bytes() for name in uploaded)
        cli(datastore, "hunt", "create", "--query", "SELECT 1 FROM scope()")
        after = audit_records(datastore)
        assert [entry["id"] for entry in after[len(audit_before):]] == [
            audit_before[-1]["id"] + 1, audit_before[-1]["id"] + 2]
        assert cli(datastore, "audit", "verify").strip() == (
            f"audit chain intact: {len(after)} records")

    # The database holds a datastore now: another is not copied over it.
    other = Datastore.open(tmp_path / "other")
    refused = velotui("datastore", "migrate", "--to", postgres_url, "--datastore",
                      str(other.root))
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("velotui datastore migrate: the target database is not empty: ")
    assert line.endswith("; give an empty database")
    assert refused.stdout == ""
    assert other.database_url() is None
