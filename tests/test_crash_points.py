"""Crash safety, proven in the real process: `velotui serve` is made to stop dead (os._exit, as
a SIGKILL leaves it) at each named failpoint while real agents run a hunt, then restarted. After
it: the counts equal what the flows say, no row is lost or stored twice, and no flow of a
stopped hunt is ever delivered or left in flight."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
from velotui.server.datastore import Datastore

pytestmark = pytest.mark.slow

AGENTS = 4
ROWS = 500
# Rows arrive over a second or so, in several batches, so points inside a collection are met.
COLLECTION = ("SELECT N FROM foreach(row={SELECT _value AS B, sleep(time=0.1) AS P"
              f" FROM range(end={ROWS // 50})}},"
              " query={SELECT B * 50 + _value AS N FROM range(end=50)})")
LONG_COLLECTION = "SELECT sleep(time=300) AS Slept FROM scope()"
SECRET = "zz-hidden-7731"
HIDDEN = f"SELECT * FROM rows WHERE OS != '{SECRET}'"  # matches everyone, says a secret
QUEUES = ("not_matched", "pending", "running", "completed", "results", "errors")


class Deployment:
    """A datastore, a `velotui serve` that can be killed and restarted at the same address,
    and a simulated fleet of agents."""

    def __init__(self, root: Path) -> None:
        self.datastore = root / "datastore"
        Datastore.open(self.datastore)
        self.server = ServerProcess(self.datastore)
        self.root = root
        self.agents: AgentProcess | None = None
        # Every message the agents receive from the server, one JSON line each.
        self.trace_path = root / "frames.jsonl"

    def start(self, failpoints: str = "") -> None:
        self.server.start(failpoints)
        if self.agents is None:
            config = write_agent_config(self.datastore, self.server.url,
                                        self.root / "agent.json")
            document = json.loads(config.read_text())
            document["max_backoff"] = 1.0  # back soon after the restart
            config.write_text(json.dumps(document))
            self.agents = AgentProcess(config, self.root / "fleet", "--simulate",
                                       str(AGENTS), "--trace-frames",
                                       str(self.trace_path)).start()
            wait_for_clients(self.datastore, AGENTS)

    def cli(self, *args: str) -> Any:
        return velotui(*args, "--datastore", str(self.datastore))

    def create_hunt(self, query: str, *options: str) -> str:
        created = self.cli("hunt", "create", "--query", query, *options)
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()

    def hunt(self, hunt_id: str) -> dict[str, Any]:
        shown = self.cli("hunt", "show", hunt_id, "--json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)

    def all_running(self, hunt_id: str) -> None:
        wait_for(lambda: self.hunt(hunt_id)["counts"]["running"] == AGENTS, timeout=60,
                 what="every collection running")

    def settled(self, hunt_id: str, timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            hunt = self.hunt(hunt_id)
            finished = sum(hunt["counts"][q] for q in ("not_matched", "completed", "results",
                                                       "errors"))
            in_flight = hunt["counts"]["running"] + hunt["checking"]
            return hunt if finished == AGENTS and not in_flight else None

        return wait_for(done, timeout=timeout, interval=0.3, what="the hunt to settle")

    def frames(self, since: int = 0) -> list[dict[str, Any]]:
        """The messages the agents received, from byte ``since`` of the trace on."""
        with open(self.trace_path, "rb") as trace:
            trace.seek(since)
            return [json.loads(line) for line in trace.read().splitlines() if line.strip()]

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.datastore / 'velotui.db'}?mode=ro",
                             uri=True) as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path)
    try:
        yield deployed
    finally:
        with running(*(p for p in (deployed.server, deployed.agents) if p is not None)):
            pass


def assert_consistent(deployment: Deployment, hunt_id: str) -> dict[str, int]:
    """The hunt's counts as the server reports them equal its clients' rows, and each client's
    queue agrees with its flow; every flow's row count is what is stored. Returns the counts."""
    hunt = deployment.hunt(hunt_id)
    durable = dict(deployment.query(
        "SELECT queue, COUNT(*) FROM hunt_clients WHERE hunt_id = ? GROUP BY queue", hunt_id))
    assert hunt["counts"] == {q: durable.get(q, 0) for q in QUEUES}
    assert hunt["checking"] == durable.get("checking", 0)
    for client_id, queue, state, rows in deployment.query(
        "SELECT hc.client_id, hc.queue, f.state, f.rows FROM hunt_clients hc LEFT JOIN flows f"
        " ON f.client_id = hc.client_id AND f.flow_id = hc.flow_id WHERE hc.hunt_id = ?",
        hunt_id,
    ):
        expected = {"running": ("queued", "running"), "results": ("finished",),
                    "completed": ("finished",), "errors": ("error", "timeout", "cancelled")}
        if queue in expected and state is not None:
            assert state in expected[queue], (client_id, queue, state)
        if queue == "results":
            assert rows > 0
    for flow_id, client_id, rows, stored in deployment.query(
        "SELECT f.flow_id, f.client_id, f.rows, COALESCE(SUM(r.row_count), 0) FROM flows f"
        " LEFT JOIN flow_rows r ON r.client_id = f.client_id AND r.flow_id = f.flow_id"
        " WHERE f.hunt_id = ? GROUP BY f.client_id, f.flow_id", hunt_id,
    ):
        assert rows == stored, (client_id, flow_id)
    return hunt["counts"]


def assert_every_row_once(deployment: Deployment, hunt_id: str) -> None:
    result = deployment.cli("hunt", "results", hunt_id)
    assert result.returncode == 0, result.stderr
    per_client: dict[str, list[int]] = {}
    for line in result.stdout.splitlines():
        row = json.loads(line)
        per_client.setdefault(row["ClientId"], []).append(row["N"])
    assert len(per_client) == AGENTS
    for numbers in per_client.values():
        assert sorted(numbers) == list(range(ROWS))


# With no rate, each client's check and collection are one hunt flow; at a rate, a condition
# flow then a collection the recruiter starts: both ways are crashed at every point they pass.
AT_A_RATE = ("--rate", "60000")


@pytest.mark.parametrize(("failpoint", "pace"), [
    ("recruit.before_write=exit", AT_A_RATE),
    ("ingest.before_commit=3*off->exit", ()),
    ("ingest.after_commit=6*off->exit", ()),
    ("ingest.after_commit=6*off->exit", AT_A_RATE),
    ("finish.after_commit=2*off->exit", ()),
    ("finish.after_commit=2*off->exit", AT_A_RATE),
    ("condition.after_judge=exit", ()),
    ("condition.after_judge=exit", AT_A_RATE),
])
def test_a_crash_at_any_point_of_a_hunt_loses_and_doubles_nothing(
    deployment: Deployment, failpoint: str, pace: tuple[str, ...]
) -> None:
    name = failpoint.split("=")[0]
    deployment.start(failpoint)
    hunt_id = deployment.create_hunt(COLLECTION, "--start", "--server-condition", HIDDEN, *pace)
    deployment.server.died_at(name)
    deployment.server.start()
    deployment.settled(hunt_id)
    assert assert_consistent(deployment, hunt_id)["results"] == AGENTS
    assert_every_row_once(deployment, hunt_id)
    # Nothing of the hidden condition reached any agent, before or after the crash.
    frames = deployment.trace_path.read_text()
    assert hunt_id[2:] in frames and SECRET not in frames


def test_a_crash_right_after_a_stop_commits_leaves_the_hunt_stopped(
    deployment: Deployment,
) -> None:
    deployment.start("stop.after_commit=exit")
    hunt_id = deployment.create_hunt(LONG_COLLECTION, "--start")
    deployment.all_running(hunt_id)
    stop = deployment.cli("hunt", "stop", hunt_id)
    assert stop.returncode == 1  # the server died before answering
    deployment.server.died_at("stop.after_commit")
    restarted_at = deployment.trace_path.stat().st_size
    deployment.server.start()
    hunt = deployment.hunt(hunt_id)
    assert hunt["state"] == "stopped"
    counts = assert_consistent(deployment, hunt_id)
    assert counts["errors"] == AGENTS and counts["running"] == 0
    assert deployment.query("SELECT COUNT(*) FROM flows WHERE hunt_id = ? AND state IN"
                            " ('queued', 'running')", hunt_id) == [(0,)]
    # The agents come back reporting the collections they still run: each is told to stop it,
    # and nothing of the hunt is ever delivered again.
    collections = {row[0] for row in deployment.query(
        "SELECT flow_id FROM flows WHERE hunt_id = ?"
        " AND (kind = 'collection' OR stage = 'collect')", hunt_id)}

    def cancelled_everywhere() -> bool:
        cancels = {(f["client_id"], f["flow_id"]) for f in deployment.frames(restarted_at)
                   if f["type"] == "cancel" and f["flow_id"] in collections}
        return len(cancels) == AGENTS

    wait_for(cancelled_everywhere, timeout=60, what="each agent told to stop its collection")
    assert [f for f in deployment.frames(restarted_at)
            if f["type"] == "flow" and hunt_id[2:] in f["flow_id"]] == []


def test_a_crash_before_a_stop_commits_leaves_the_hunt_running_and_stoppable(
    deployment: Deployment,
) -> None:
    deployment.start("cancel.before_commit=exit")
    hunt_id = deployment.create_hunt(LONG_COLLECTION, "--start")
    deployment.all_running(hunt_id)
    assert deployment.cli("hunt", "stop", hunt_id).returncode == 1
    deployment.server.died_at("cancel.before_commit")
    deployment.server.start()
    assert deployment.hunt(hunt_id)["state"] == "running"  # nothing of the stop was written
    wait_for(lambda: wait_for_clients(deployment.datastore, AGENTS), what="agents back")
    assert assert_consistent(deployment, hunt_id)["running"] == AGENTS
    stopped = deployment.cli("hunt", "stop", hunt_id, "--json")
    assert stopped.returncode == 0, stopped.stderr
    counts = assert_consistent(deployment, hunt_id)
    assert counts["errors"] == AGENTS and counts["running"] == 0


def reached(server: ServerProcess, text: str) -> bool:
    return text in server.log_path.read_text(errors="replace")


def test_a_stop_while_the_recruiter_is_paused_before_its_write_recruits_nobody(
    deployment: Deployment,
) -> None:
    release = deployment.root / "release-recruiter"
    deployment.start(f"recruit.before_write=1*hold({release})")
    hunt_id = deployment.create_hunt(COLLECTION, "--start", *AT_A_RATE)
    wait_for(lambda: reached(deployment.server, "failpoint recruit.before_write: hold"),
             timeout=60, what="the recruiter held before its write")
    stopped = deployment.cli("hunt", "stop", hunt_id, "--json")
    assert stopped.returncode == 0, stopped.stderr
    # The stop came while the recruiter was held (else this test proves nothing).
    assert not reached(deployment.server, "failpoint recruit.before_write: resumed")
    release.touch()
    wait_for(lambda: reached(deployment.server, "failpoint recruit.before_write: resumed"),
             timeout=60, what="the recruiter to resume")
    # Its write, after the stop, found the hunt stopped: nobody recruited, no collection.
    deployment.cli("hunt", "show", hunt_id)  # a round trip after the resumed write
    counts = assert_consistent(deployment, hunt_id)
    assert counts["running"] == counts["results"] == counts["errors"] == 0
    assert deployment.query("SELECT COUNT(*) FROM flows WHERE hunt_id = ? AND kind <>"
                            " 'condition'", hunt_id) == [(0,)]


def test_rows_arriving_while_a_stop_is_paused_before_its_commit_never_revive_a_flow(
    deployment: Deployment,
) -> None:
    release = deployment.root / "release-cancel"
    deployment.start(f"cancel.before_commit=1*hold({release})")
    streaming = ("SELECT N FROM foreach(row={SELECT _value AS B, sleep(time=0.2) AS P"
                 " FROM range(end=600)}, query={SELECT B AS N FROM scope()})")
    hunt_id = deployment.create_hunt(streaming, "--start")
    deployment.all_running(hunt_id)
    stop = subprocess.Popen([VELOTUI, "hunt", "stop", hunt_id, "--datastore",
                             str(deployment.datastore)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_for(lambda: reached(deployment.server, "failpoint cancel.before_commit: hold"),
             timeout=60, what="the stop held before its commit")
    before = deployment.query("SELECT COALESCE(SUM(rows), 0) FROM flows WHERE hunt_id = ?",
                              hunt_id)[0][0]
    wait_for(lambda: deployment.query("SELECT COALESCE(SUM(rows), 0) FROM flows WHERE"
                                      " hunt_id = ?", hunt_id)[0][0] > before,
             timeout=30, what="rows stored while the stop is held")
    release.touch()
    assert stop.wait(timeout=60) == 0, stop.stderr.read()
    counts = assert_consistent(deployment, hunt_id)
    assert counts["errors"] == AGENTS and counts["running"] == 0
    cancelled = deployment.query("SELECT state, rows FROM flows WHERE hunt_id = ?", hunt_id)
    assert {state for state, _rows in cancelled} == {"cancelled"}
    # Rows keep arriving until the agents hear of the cancel: they are dropped, the flows stay
    # cancelled and their row counts stay what is stored.
    frozen = assert_consistent(deployment, hunt_id)
    assert frozen == counts
    assert deployment.query("SELECT state, rows FROM flows WHERE hunt_id = ?",
                            hunt_id) == cancelled
