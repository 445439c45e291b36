"""Hunts against a real server and real agents: conditions, queues, rate, limit, stop, expiry,
late clients, relaunch, and counts that match the durable state."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import SEED_FACTS, SEED_MATCHES, SEED_SERVER_CONDITION, Fleet, until
from velotui.server.errors import ServiceError
from velotui.server.hunt_manager import RecruitmentBudget
from velotui.server.server import Server
from velotui.server.service import Service

pytestmark = pytest.mark.both_backends


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


async def seed_fleet(fleet: Fleet) -> dict[str, str]:
    """The six seed hosts online; hostname -> client ID."""
    ids = {facts["Hostname"]: fleet.start(facts["Hostname"], facts) for facts in SEED_FACTS}
    await fleet.online(*ids.values())
    return ids


async def settled(api: Service, hunt_id: str, total: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until ``total`` clients are in final queues with nothing in flight."""
    def done() -> dict[str, Any] | None:
        hunt = api.server.hunts.get(hunt_id).describe()
        counts = hunt["counts"]
        finished = sum(counts[q] for q in ("not_matched", "completed", "results", "errors"))
        return hunt if finished >= total and not counts["running"] and not hunt["checking"] \
            else None

    return await until(done, timeout, "the hunt to settle")


async def durable_counts(server: Server, hunt_id: str) -> dict[str, int]:
    rows = await server.db.store.fetch_all(
        "SELECT queue, COUNT(*) AS n FROM hunt_clients WHERE hunt_id = ? GROUP BY queue",
        (hunt_id,))
    counts = {q: 0 for q in ("not_matched", "pending", "running", "completed", "results",
                             "errors")}
    counts.update({row["queue"]: row["n"] for row in rows if row["queue"] in counts})
    return counts


async def test_the_seed_scenario_schedules_exactly_the_matching_clients(
    server: Server, fleet: Fleet, api: Service
) -> None:
    ids = await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT Hostname FROM info()",
                                 server_condition=SEED_SERVER_CONDITION, start=True)
    final = await settled(api, hunt["hunt_id"], 6)
    assert final["counts"] == {"not_matched": 4, "pending": 0, "running": 0, "completed": 0,
                               "results": 2, "errors": 0}
    assert final["counts"] == await durable_counts(server, hunt["hunt_id"])
    rows = [row async for event in api.hunt_results(hunt["hunt_id"]) for row in event["rows"]]
    assert {row["Hostname"] for row in rows} == SEED_MATCHES
    assert {row["ClientId"] for row in rows} == {ids[h] for h in SEED_MATCHES}
    assert all(row["FlowId"] == f"F.{hunt['hunt_id'][2:]}.H" for row in rows)
    # Only the matching clients ever had the collection scheduled.
    collections = await server.db.store.fetch_all(
        "SELECT client_id FROM flows WHERE hunt_id = ?"
        " AND (kind = 'collection' OR stage = 'collect')",
        (hunt["hunt_id"],))
    assert {row["client_id"] for row in collections} == {ids[h] for h in SEED_MATCHES}


async def test_the_server_condition_never_reaches_an_agent(server: Server, fleet: Fleet,
                                                          api: Service) -> None:
    await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()",
                                 server_condition=SEED_SERVER_CONDITION, start=True)
    await settled(api, hunt["hunt_id"], 6)
    sent = await server.db.store.fetch_all("SELECT query FROM flows WHERE hunt_id = ?",
                                        (hunt["hunt_id"],))
    assert sent and all("MY_LABEL" not in row["query"] for row in sent)


async def test_the_server_condition_sees_the_servers_own_labels(
    server: Server, fleet: Fleet, api: Service
) -> None:
    ids = await seed_fleet(fleet)
    await api.label_client(ids["otherhost"], add=["Triage"])
    hunt = await api.create_hunt(query="SELECT Hostname FROM info()", start=True,
                                 server_condition="SELECT * FROM rows WHERE 'Triage' IN"
                                 " client.Labels")
    final = await settled(api, hunt["hunt_id"], 6)
    assert final["counts"]["results"] == 1
    [row] = [r async for e in api.hunt_results(hunt["hunt_id"]) for r in e["rows"]]
    assert row["ClientId"] == ids["otherhost"]


def test_a_rate_of_60_per_minute_lets_one_client_through_a_second() -> None:
    budget = RecruitmentBudget(rate=60)
    assert budget.take(now=100.0, wanted=5) == 1
    assert budget.take(now=100.5, wanted=4) == 0
    assert budget.take(now=101.0, wanted=4) == 1
    assert budget.take(now=104.0, wanted=3) == 1  # idle time does not pile up a burst
    assert RecruitmentBudget(rate=600).take(now=0.0, wanted=50) == 10
    assert RecruitmentBudget(rate=0).take(now=0.0, wanted=50) == 50


async def test_a_slow_rate_keeps_the_rest_pending(server: Server, fleet: Fleet,
                                                  api: Service) -> None:
    await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", rate=1, start=True)
    # Every client judged and the recruiter's first pass done (pending alone may reach 5 while
    # the sixth is still being checked and nobody has been recruited yet).
    def judged_and_recruiting() -> bool:
        counts = api.server.hunts.get(hunt["hunt_id"]).counts
        recruited = counts["running"] + counts["completed"] + counts["results"]
        return recruited >= 1 and counts["pending"] + recruited == 6

    await until(judged_and_recruiting, 30, "six clients judged, the first recruited")
    counts = api.server.hunts.get(hunt["hunt_id"]).counts
    assert counts["running"] + counts["results"] == 1  # one a minute: the next in 60 s
    assert counts["pending"] == 5


async def test_the_client_limit_is_respected(server: Server, fleet: Fleet, api: Service) -> None:
    await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", limit=2, start=True)
    stopped = await until(
        lambda: (h := api.server.hunts.get(hunt["hunt_id"])).state == "stopped"
        and not h.counts["running"] and not h.counts["checking"] and h.describe(),
        30, "the limit to stop the hunt")
    assert stopped["stop_reason"] == "client limit reached"
    assert stopped["counts"]["results"] == 2
    assert stopped["counts"]["pending"] == 4
    assert stopped["counts"] == await durable_counts(server, hunt["hunt_id"])


async def test_stop_cancels_collections_in_flight(server: Server, fleet: Fleet,
                                                  api: Service) -> None:
    ids = await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT sleep(time=300) AS Slept FROM scope()",
                                 start=True)
    await until(lambda: api.server.hunts.get(hunt["hunt_id"]).counts["running"] == 6, 30,
                "six collections running")
    await until(lambda: all(fleet.sessions[c]._flows for c in ids.values()), 30,
                "the agents to be running them")
    stopped = await api.stop_hunt(hunt["hunt_id"])
    assert stopped["state"] == "stopped"
    final = await until(
        lambda: (h := api.server.hunts.get(hunt["hunt_id"])).counts["errors"] == 6
        and h.describe(), 30, "the cancelled collections")
    assert final["counts"]["running"] == 0
    clients = await api.hunt_clients(hunt["hunt_id"])
    assert {c["state"] for c in clients} == {"cancelled"}
    # The agents stopped too: nothing of the hunt is still running on them.
    await until(lambda: not any(fleet.sessions[c]._flows for c in ids.values()), 30,
                "the agents to stop the collections")


async def test_expiry_stops_a_hunt(server: Server, fleet: Fleet, api: Service) -> None:
    await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT sleep(time=300) AS Slept FROM scope()",
                                 expires="2s", start=True)
    stopped = await until(
        lambda: (h := api.server.hunts.get(hunt["hunt_id"])).state == "stopped" and h.describe(),
        30, "expiry")
    assert stopped["stop_reason"] == "expired"
    await until(lambda: api.server.hunts.get(hunt["hunt_id"]).counts["running"] == 0, 30)
    with pytest.raises(ServiceError, match="expired"):
        await api.start_hunt(hunt["hunt_id"])


async def test_a_client_connecting_after_the_start_is_checked(server: Server, fleet: Fleet,
                                                              api: Service) -> None:
    first = fleet.start("early", {"Hostname": "early", "Fqdn": "early.example"})
    await fleet.online(first)
    hunt = await api.create_hunt(query="SELECT Hostname FROM info()", start=True)
    await settled(api, hunt["hunt_id"], 1)
    late = fleet.start("late", {"Hostname": "late", "Fqdn": "late.example"})
    final = await settled(api, hunt["hunt_id"], 2)
    assert final["counts"]["results"] == 2
    rows = [r async for e in api.hunt_results(hunt["hunt_id"]) for r in e["rows"]]
    assert {r["ClientId"] for r in rows} == {first, late}


async def test_a_client_is_never_checked_twice_even_with_its_state_wiped(
    server: Server, fleet: Fleet, api: Service, tmp_path: Path
) -> None:
    client = fleet.start("host", {"Hostname": "host"})
    hunt = await api.create_hunt(query="SELECT Hostname FROM info()", start=True)
    await settled(api, hunt["hunt_id"], 1)
    await fleet.stop(client)
    # The agent forgets its checkpoint (if it had saved one yet).
    (tmp_path / "agents" / "host" / "state.json").unlink(missing_ok=True)
    fleet.start("host", {"Hostname": "host"})
    await fleet.online(client)
    # A collection run to its end after the reconnect: the check-in came before it.
    events = [e async for e in api.collect(client, "SELECT 1 AS One FROM scope()")]
    assert events[-1]["state"] == "finished"
    flows = await server.db.store.fetch_all("SELECT flow_id FROM flows WHERE hunt_id = ?",
                                         (hunt["hunt_id"],))
    assert len(flows) == 1  # one hunt flow, its check and its collection: nothing ran twice


async def test_relaunch_re_runs_only_the_failed(server: Server, fleet: Fleet, api: Service,
                                                tmp_path: Path) -> None:
    markers = tmp_path / "fail"
    markers.mkdir()
    ids = await seed_fleet(fleet)
    for host in ("otherhost", "myhostname"):
        (markers / host).touch()
    # Fails (too many rows) on the clients whose hostname has a marker file.
    query = (f"LET me = SELECT Hostname FROM info() "
             f"LET marked = SELECT * FROM glob(globs='{markers}/' + me[0].Hostname) "
             "SELECT _value FROM range(end=if(condition=marked, then=50, else=1))")
    hunt = await api.create_hunt(query=query, max_rows=10, start=True)
    first = await settled(api, hunt["hunt_id"], 6)
    assert first["counts"]["errors"] == 2 and first["counts"]["results"] == 4

    for marker in markers.iterdir():
        marker.unlink()
    relaunched = await api.relaunch_hunt(hunt["hunt_id"])
    assert relaunched["relaunched"] == 2
    final = await settled(api, hunt["hunt_id"], 6)
    assert final["counts"]["results"] == 6 and final["counts"]["errors"] == 0
    clients = {c["client_id"]: c for c in await api.hunt_clients(hunt["hunt_id"])}
    for host, client_id in ids.items():
        expected = 2 if host in ("otherhost", "myhostname") else 1
        assert clients[client_id]["attempt"] == expected, host
    flows = await server.db.store.fetch_all(
        "SELECT client_id, COUNT(*) AS n FROM flows WHERE hunt_id = ?"
        " AND (kind = 'collection' OR stage = 'collect')"
        " GROUP BY client_id", (hunt["hunt_id"],))
    assert sorted(row["n"] for row in flows) == [1, 1, 1, 1, 2, 2]


async def test_counts_are_pushed_to_subscribers(server: Server, fleet: Fleet,
                                                api: Service) -> None:
    await seed_fleet(fleet)
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in api.watch_hunts():
            seen.append(event["hunt"])

    watcher = asyncio.create_task(watch())
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", start=True)
    await settled(api, hunt["hunt_id"], 6)
    await until(lambda: seen and seen[-1]["counts"]["results"] == 6, 10, "the final push")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    mine = [h for h in seen if h["hunt_id"] == hunt["hunt_id"]]
    assert mine[0]["state"] in ("paused", "running")
    assert len(mine) >= 2


async def test_invalid_vql_is_refused_at_create_time(api: Service) -> None:
    with pytest.raises(ServiceError, match=r"server-side condition does not parse: line 1, col"):
        await api.create_hunt(query="SELECT * FROM info()",
                              server_condition="SELECT * FROM rows WHERE 2-1")
    with pytest.raises(ServiceError, match="collection query does not parse"):
        await api.create_hunt(query="SELEKT 1")
    assert await api.list_hunts() == []


async def test_estimate_judges_known_clients_by_their_last_facts(server: Server, fleet: Fleet,
                                                                 api: Service) -> None:
    await seed_fleet(fleet)
    result = await api.estimate_hunt(server_condition=SEED_SERVER_CONDITION)
    assert result == {"matched": 2, "total": 6, "undetermined": 0, "errored": 0, "errors": [],
                      "excluded": 0}
    result = await api.estimate_hunt(server_condition="",
                                     client_condition="SELECT * FROM pslist()")
    assert result == {"matched": 0, "total": 6, "undetermined": 6, "errored": 0, "errors": [],
                      "excluded": 0}


async def test_every_operator_action_is_audited(server: Server, fleet: Fleet,
                                                api: Service) -> None:
    ids = await seed_fleet(fleet)
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", start=True)
    await settled(api, hunt["hunt_id"], 6)
    await api.label_client(ids["otherhost"], add=["X"], remove=["Y"])
    entries = await api.audit_log()
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("tester", "create", hunt["hunt_id"]),
        ("tester", "start", hunt["hunt_id"]),
        ("tester", "label", ids["otherhost"]),
    ]
    assert entries[2]["details"] == {"add": ["X"], "remove": ["Y"]}
