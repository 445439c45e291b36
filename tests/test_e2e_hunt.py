"""Hunts end to end: `velotui serve`, `velotui-agent --simulate 6 --facts`, and the command line;
then the server killed mid-hunt and restarted."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import SEED_FACTS, SEED_MATCHES, SEED_SERVER_CONDITION
from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for,
    wait_for_clients,
    write_agent_config,
)
from velotui.server.datastore import Datastore

pytestmark = pytest.mark.slow


@pytest.fixture
def seed_fleet(tmp_path: Path):
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(SEED_FACTS))
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", "6", "--facts",
                          str(facts)).start()
    with running(server, agents):
        clients = wait_for_clients(datastore, 6)
        yield server, {c["hostname"]: c["client_id"] for c in clients}


def cli(server: ServerProcess, *args: str):
    return velotui(*args, "--datastore", str(server.datastore))


def hunt_show(server: ServerProcess, hunt_id: str) -> dict[str, Any]:
    result = cli(server, "hunt", "show", hunt_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_settled(server: ServerProcess, hunt_id: str, total: int, timeout: float = 90
                 ) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        hunt = hunt_show(server, hunt_id)
        counts = hunt["counts"]
        done = sum(counts[q] for q in ("not_matched", "completed", "results", "errors"))
        return hunt if done == total and not counts["running"] and not hunt["checking"] \
            else None

    return wait_for(settled, timeout=timeout, interval=0.3, what="the hunt to settle")


def test_the_seed_scenario_from_the_command_line(seed_fleet) -> None:
    server, ids = seed_fleet
    estimate = cli(server, "hunt", "estimate", "--server-condition", SEED_SERVER_CONDITION)
    assert estimate.stdout.strip() == "matches 2 of 6 known clients"

    created = cli(server, "hunt", "create", "--query", "SELECT Hostname, OS FROM info()",
                  "--server-condition", SEED_SERVER_CONDITION, "--description", "seed",
                  "--start")
    assert created.returncode == 0, created.stderr
    hunt_id = created.stdout.strip()
    assert hunt_id.startswith("H.")

    hunt = wait_settled(server, hunt_id, 6)
    for key in ("hunt_id", "state", "description", "created", "started", "expires", "rate",
                "limit", "counts"):
        assert key in hunt
    assert hunt["counts"] == {"not_matched": 4, "pending": 0, "running": 0, "completed": 0,
                              "results": 2, "errors": 0}

    rows = [json.loads(line) for line in cli(server, "hunt", "results", hunt_id).stdout
            .splitlines()]
    assert sorted(row["Hostname"] for row in rows) == sorted(SEED_MATCHES)
    assert {row["ClientId"] for row in rows} == {ids[h] for h in SEED_MATCHES}
    assert all(list(row)[:3] == ["ClientId", "Fqdn", "FlowId"] for row in rows)

    table = list(csv.reader(io.StringIO(cli(server, "hunt", "results", hunt_id, "--format",
                                            "csv").stdout)))
    assert table[0] == ["ClientId", "Fqdn", "FlowId", "Hostname", "OS"]
    assert len(table) == 3

    listed = cli(server, "hunt", "list", "--json")
    assert [json.loads(line)["hunt_id"] for line in listed.stdout.splitlines()] == [hunt_id]
    shown = cli(server, "hunt", "show", hunt_id)
    assert "results 2" in shown.stdout and "not matched 4" in shown.stdout

    archive = server.datastore.parent / "seed.zip"
    exported = cli(server, "hunt", "export", hunt_id, "-o", str(archive), "--format", "both")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"wrote {archive}: 2 clients, 2 rows")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        assert {"hunt.json", "results/All.jsonl", "results/All.csv"} <= names
        folders = {name.split("/")[0] for name in names if "/" in name} - {"results"}
        assert folders == {f"{host}-{ids[host]}" for host in SEED_MATCHES}
        assert json.loads(zipped.read("hunt.json"))["counts"]["results"] == 2

    stopped = cli(server, "hunt", "stop", hunt_id, "--json")
    assert json.loads(stopped.stdout)["state"] == "stopped"
    again = cli(server, "hunt", "stop", hunt_id)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "is not running" in again.stderr

    labelled = cli(server, "clients", "label", ids["otherhost"], "+Triage", "-Nothing")
    assert labelled.returncode == 0, labelled.stderr
    assert "Triage" in labelled.stdout
    audit = [json.loads(line) for line in cli(server, "audit", "--json").stdout.splitlines()]
    assert [a["action"] for a in audit] == ["create", "start", "export", "stop", "label"]
    assert {a["actor"] for a in audit} == {"operator"}


def test_cli_refusals_and_usage_errors(seed_fleet) -> None:
    server, _ids = seed_fleet
    bad = cli(server, "hunt", "create", "--query", "SELECT * FROM info()",
              "--server-condition", "SELECT * FROM rows\nWHERE Fqdn =~ 'x' AND")
    assert bad.returncode == 1
    assert bad.stderr.startswith("velotui hunt: the server-side condition does not parse: "
                                 "line 2, col")
    assert cli(server, "hunt", "list").stdout.strip() == "no hunts yet"
    usage = velotui("hunt", "create")
    assert usage.returncode == 2
    missing = cli(server, "hunt", "show", "H.NOSUCHHUNT")
    assert missing.returncode == 1 and "no hunt 'H.NOSUCHHUNT'" in missing.stderr
    label = cli(server, "clients", "label", "C.0000000000000000", "Finance")
    assert label.returncode == 2 and "+LABEL" in label.stderr


def test_server_killed_mid_hunt_keeps_exact_counts_and_every_row_once(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", "6").start()
    with running(server, agents):
        wait_for_clients(datastore, 6)
        # 4,000 rows a client, over a couple of seconds, so the kill lands mid-hunt.
        query = ("SELECT N FROM foreach(row={SELECT _value AS B, sleep(time=0.05) AS P"
                 " FROM range(end=40)}, query={SELECT B * 100 + _value AS N"
                 " FROM range(end=100)})")
        created = cli(server, "hunt", "create", "--query", query, "--start")
        assert created.returncode == 0, created.stderr
        hunt_id = created.stdout.strip()
        database = datastore / "velotui.db"

        def stored_rows() -> int:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                (count,) = connection.execute(
                    "SELECT COALESCE(SUM(r.row_count), 0) FROM flow_rows r JOIN flows f"
                    " ON f.client_id = r.client_id AND f.flow_id = r.flow_id"
                    " WHERE f.hunt_id = ? AND f.kind = 'collection'", (hunt_id,)).fetchone()
                return count

        wait_for(lambda: stored_rows() > 0, what="the first rows")
        server.kill()
        assert stored_rows() < 6 * 4000, "the kill came too late to test anything"
        server.start()

        hunt = wait_settled(server, hunt_id, 6)
        assert hunt["counts"] == {"not_matched": 0, "pending": 0, "running": 0, "completed": 0,
                                  "results": 6, "errors": 0}
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            durable = dict(connection.execute(
                "SELECT queue, COUNT(*) FROM hunt_clients WHERE hunt_id = ? GROUP BY queue",
                (hunt_id,)).fetchall())
        assert durable == {"results": 6}

        rows = [json.loads(line) for line in cli(server, "hunt", "results", hunt_id).stdout
                .splitlines()]
        per_client: dict[str, list[int]] = {}
        for row in rows:
            per_client.setdefault(row["ClientId"], []).append(row["N"])
        assert len(per_client) == 6
        for numbers in per_client.values():
            assert sorted(numbers) == list(range(4000))


def test_revoke_from_the_command_line(seed_fleet) -> None:
    server, ids = seed_fleet
    revoked = cli(server, "clients", "revoke", ids["otherhost"])
    assert revoked.returncode == 0, revoked.stderr
    assert "is revoked" in revoked.stdout

    def listed() -> dict[str, Any] | None:
        result = cli(server, "clients", "--json")
        clients = {c["client_id"]: c for c in map(json.loads, result.stdout.splitlines())}
        client = clients[ids["otherhost"]]
        return clients if client["revoked"] and not client["online"] else None

    clients = wait_for(listed, what="the revoked client to be cut off")
    assert sum(c["online"] for c in clients.values()) == 5  # the others carry on
    unknown = cli(server, "clients", "revoke", "C.0000000000000000")
    assert unknown.returncode == 1 and "no client" in unknown.stderr
