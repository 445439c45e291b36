"""Hunts end to end: `velotui serve`, `velotui-agent --simulate 6 --facts`, and the command line;
exports landing on the operator's side, over a real remote connection and through a proxy that
corrupts them in transit; then the server killed mid-hunt and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.fleet import SEED_FACTS, SEED_MATCHES, SEED_SERVER_CONDITION
from tests.processes import (
    VELOTUI,
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for,
    wait_for_clients,
    write_agent_config,
)
from velotui.server import tls
from velotui.server.datastore import Datastore
from velotui.wire.tls import pinned_client_ssl_context

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

    operator = server.datastore.parent / "operator"
    operator.mkdir()
    archive = operator / "seed.zip"
    exported = cli(server, "hunt", "export", hunt_id, "-o", str(archive), "--format", "both")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"wrote {archive}: 2 clients, 2 rows")
    assert exported.stdout.strip().endswith(
        f"SHA-256 {hashlib.sha256(archive.read_bytes()).hexdigest()}")
    assert list((server.datastore / "exports").iterdir()) == []  # nothing kept on the server
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
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("create", "allowed"), ("start", "allowed"), ("export", "allowed"),
        ("stop", "allowed"), ("stop", "refused"), ("label", "allowed")]  # the refused stop too
    assert {a["actor"] for a in audit} == {"admin"}


def test_an_export_over_a_remote_connection_lands_on_the_operators_side(seed_fleet,
                                                                        tmp_path: Path) -> None:
    server, ids = seed_fleet
    created = cli(server, "hunt", "create", "--query", "SELECT Hostname, OS FROM info()",
                  "--server-condition", SEED_SERVER_CONDITION, "--start")
    hunt_id = created.stdout.strip()
    wait_settled(server, hunt_id, 6)
    # The operator's machine: the token and the CA copied there, the zip written there.
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "api_token").write_text((server.datastore / "api_token").read_text())
    (operator / "ca.pem").write_text((server.datastore / "ca.pem").read_text())
    archive = operator / "cases" / "seed.zip"
    archive.parent.mkdir()

    exported = velotui("hunt", "export", hunt_id, "--server", server.url, "--token-file",
                       str(operator / "api_token"), "-o", str(archive), "--format", "csv")

    assert exported.returncode == 0, exported.stderr
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert exported.stdout.splitlines() == [
        f"wrote {archive}: 2 clients, 2 rows, {len(zipfile.ZipFile(archive).namelist())} entries,"
        f" {archive.stat().st_size} bytes, SHA-256 {digest}"
    ]
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.testzip() is None
        table = list(csv.reader(io.StringIO(zipped.read("results/All.csv").decode())))
        assert table[0] == ["ClientId", "Fqdn", "FlowId", "Hostname", "OS"]
        assert sorted(row[3] for row in table[1:]) == sorted(SEED_MATCHES)
        assert {row[0] for row in table[1:]} == {ids[h] for h in SEED_MATCHES}
    assert sorted(p.name for p in archive.parent.iterdir()) == ["seed.zip"]  # no part file left
    assert list((server.datastore / "exports").iterdir()) == []
    audit = [json.loads(line) for line in cli(server, "audit", "--json").stdout.splitlines()]
    assert audit[-1]["action"] == "export" and audit[-1]["details"]["sha256"] == digest


class TamperingProxy:
    """Between the command line and a real server: a TLS websocket relay, with a CA of its own
    that the command line is told to trust, which flips one bit of the first binary frame (an
    export's chunk) on its way to the operator. What TLS rules out on a real link, and what the
    operator's SHA-256 check must catch whatever else goes wrong."""

    def __init__(self, server: ServerProcess, folder: Path) -> None:
        self.upstream = server.url
        self.upstream_ca = (server.datastore / "ca.pem").read_text()
        ca_cert, ca_key = tls.create_certificate_authority("tampering proxy")
        cert, key = tls.create_server_certificate(ca_cert, ca_key, [], ["127.0.0.1"])
        self.ca_file = folder / "proxy-ca.pem"
        self.ca_file.write_bytes(ca_cert)
        (folder / "proxy.pem").write_bytes(cert)
        (folder / "proxy.key").write_bytes(key)
        self.context = tls.server_ssl_context(folder / "proxy.pem", folder / "proxy.key")
        self.tampered = 0
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TamperingProxy]:
        async with serve(self._relay, "127.0.0.1", 0, ssl=self.context, max_size=None,
                         compression=None) as listener:
            self.url = f"wss://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
            yield self

    async def _relay(self, downstream: ServerConnection) -> None:
        assert downstream.request is not None
        headers = {"Authorization": downstream.request.headers["Authorization"]}
        async with connect(self.upstream + downstream.request.path,
                           ssl=pinned_client_ssl_context(self.upstream_ca),
                           additional_headers=headers, max_size=None,
                           compression=None) as upstream:

            async def requests() -> None:
                async for frame in downstream:
                    await upstream.send(frame)

            async def replies() -> None:
                async for frame in upstream:
                    if isinstance(frame, bytes) and not self.tampered:
                        frame = frame[:-1] + bytes([frame[-1] ^ 0x01])
                        self.tampered += 1
                    await downstream.send(frame)

            relays = [asyncio.create_task(requests()), asyncio.create_task(replies())]
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)


async def test_an_export_corrupted_in_transit_leaves_no_file_and_exits_1(tmp_path: Path
                                                                          ) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    with running(server):
        created = cli(server, "hunt", "create", "--query", "SELECT * FROM info()")
        hunt_id = created.stdout.strip()
        operator = tmp_path / "operator"
        operator.mkdir()
        archive = operator / "case.zip"
        proxy = TamperingProxy(server, tmp_path)
        async with proxy.running():
            exporting = await asyncio.create_subprocess_exec(
                VELOTUI, "hunt", "export", hunt_id, "--server", proxy.url, "--token-file",
                str(datastore / "api_token"), "--ca-file", str(proxy.ca_file), "-o",
                str(archive), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(exporting.communicate(), 120)

    assert list(operator.iterdir()) == []  # no zip, no part file
    assert exporting.returncode == 1
    message = stderr.decode()
    assert message.count("\n") == 1, message
    assert message.startswith("velotui hunt export: the zip received does not match the"
                              " server's SHA-256")
    assert stdout == b""
    assert proxy.tampered == 1


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

    database = server.datastore / "velotui.db"
    nowhere = cli(server, "hunt", "export", "H.NOSUCHHUNT")
    assert nowhere.returncode == 2 and "-o FILE.zip" in nowhere.stderr
    onto_database = cli(server, "hunt", "export", "H.NOSUCHHUNT", "-o", str(database))
    assert onto_database.returncode == 1 and onto_database.stderr.count("\n") == 1
    assert "exists and is not a zip" in onto_database.stderr
    hunt_id = cli(server, "hunt", "create", "--query", "SELECT * FROM info()").stdout.strip()
    outside = cli(server, "hunt", "export", hunt_id, "--keep-on-server", "../velotui.db")
    assert outside.returncode == 1 and outside.stderr.count("\n") == 1
    assert "cannot name an export: give a file name, not a path" in outside.stderr
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert cli(server, "hunt", "show", hunt_id).returncode == 0


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
                    " WHERE f.hunt_id = ? AND f.kind IN ('collection', 'hunt')",
                    (hunt_id,)).fetchone()
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
