"""A hunt's life past start and stop, against a real server with agents on real websockets: a
schedule (kept, started early, cancelled, never reviving a stopped hunt), a pause that lets the
collections running finish, a rate changed mid-hunt seen in recruitment (the recruiter's
monotonic clock frozen, so only the new rate can let anyone through), the pause at the error
limit (a count, and a share), and guarded settings. Scripted agents hold collections open as
long as a test needs; real agents fail for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import open_datastore
from tests.fleet import SEED_FACTS, SEED_SERVER_CONDITION, Fleet, until
from tests.scripted_agent import ScriptedAgent
from velotui.server import failpoints
from velotui.server.data import HuntRecord
from velotui.server.datastore import Datastore
from velotui.server.errors import ServiceError
from velotui.server.server import Server
from velotui.server.service import Service
from velotui.wire import protocol

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Fqdn": "a.example", "Hostname": "a", "Labels": []}
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _no_failpoints_left() -> Any:
    yield
    failpoints.disarm()


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


async def scripted(server: Server, root: Path, count: int) -> list[ScriptedAgent]:
    return [await ScriptedAgent(server, root / f"scripted-{n}",
                                {**LINUX, "Hostname": f"host-{n}"}).connect()
            for n in range(count)]


@pytest.fixture
async def agents(server: Server, tmp_path: Path) -> AsyncIterator[list[ScriptedAgent]]:
    connected = await scripted(server, tmp_path, 2)
    yield connected
    for agent in connected:
        await agent.close()


def counts(server: Server, hunt_id: str) -> dict[str, int]:
    return {queue: n for queue, n in server.hunts.get(hunt_id).counts.items() if n}


def state(server: Server, hunt_id: str) -> str:
    return server.hunts.get(hunt_id).state


# Schedules ---------------------------------------------------------------------------------------

async def test_a_scheduled_hunt_waits_then_starts_at_its_time(server: Server, api: Service,
                                                              agents: list[ScriptedAgent]
                                                              ) -> None:
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", start_at="+1h")
    hunt_id = hunt["hunt_id"]
    assert hunt["state"] == "scheduled"
    assert hunt["start_at"] == pytest.approx(time.time() + HOUR, abs=60)
    await server.hunts.start_due()
    assert state(server, hunt_id) == "scheduled"
    assert not any(agent.flows_received() for agent in agents)  # nobody checked yet

    # An hour later, by the hunt manager's wall clock: the recruiter's next tick starts it.
    server.hunts.wall_clock = lambda: time.time() + 2 * HOUR
    server.hunts.wake()
    await until(lambda: state(server, hunt_id) == "running", 10, "the scheduled start")
    started = server.hunts.get(hunt_id)
    assert started.start_at is None and started.stop_reason is None
    for agent in agents:
        collection = await agent.next_collection()
        await agent.status(collection.flow_id, final_rows=[{"One": 1}])
    await until(lambda: counts(server, hunt_id) == {"results": 2}, 10, "both results")


async def test_a_scheduled_hunt_can_start_early(server: Server, api: Service,
                                                agents: list[ScriptedAgent]) -> None:
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()",
                                 start_at=time.time() + 2 * HOUR)
    started = await api.start_hunt(hunt["hunt_id"])
    assert started["state"] == "running" and started["start_at"] is None
    await agents[0].next_collection()


async def test_cancelling_a_schedule_stops_the_hunt_and_its_time_never_revives_it(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    cancelled = await api.create_hunt(query="SELECT 1 FROM scope()", start_at="+1h")
    stopped = await api.stop_hunt(cancelled["hunt_id"])
    assert stopped["state"] == "stopped"
    assert stopped["stop_reason"] == "cancelled before its start by tester"
    assert stopped["start_at"] is None
    paused = await api.create_hunt(query="SELECT 1 FROM scope()", start_at="+1h")
    assert (await api.pause_hunt(paused["hunt_id"]))["state"] == "paused"

    server.hunts.wall_clock = lambda: time.time() + 2 * HOUR
    assert await server.hunts.start_due() == []
    assert state(server, cancelled["hunt_id"]) == "stopped"
    assert state(server, paused["hunt_id"]) == "paused"
    assert not any(agent.flows_received() for agent in agents)


async def test_the_scheduled_start_is_guarded_by_the_stored_state(server: Server,
                                                                  api: Service) -> None:
    """Memory may still say scheduled (a start read before a stop committed), and a record may
    keep an old schedule: the statement itself runs only a hunt still scheduled and due."""
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", start_at="+1h")
    hunt_id = hunt["hunt_id"]
    assert await server.db.hunts.start_scheduled(hunt_id, time.time(), 1) is None  # not due
    for leave in ("stop_hunt", "pause_hunt"):
        hunt_id = (await api.create_hunt(query="SELECT 1 FROM scope()",
                                         start_at="+1h"))["hunt_id"]
        await getattr(api, leave)(hunt_id)
        await server.db.store.write(lambda tx, hunt_id=hunt_id: tx.execute(
            "UPDATE hunts SET start_at = ? WHERE hunt_id = ?", (time.time() - 60, hunt_id)))
        assert await server.db.hunts.start_scheduled(hunt_id, time.time(), 2) is None
        [stored] = [h for h in await server.db.hunts.load() if h.hunt_id == hunt_id]
        assert stored.state in ("stopped", "paused")


async def test_a_schedule_past_expiry_stops_the_hunt_expired(server: Server,
                                                             api: Service) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", start_at="+1h", expires="2h")
    server.hunts.wall_clock = lambda: time.time() + 3 * HOUR
    await server.hunts.start_due()
    stored = server.hunts.get(hunt["hunt_id"])
    assert (stored.state, stored.stop_reason) == ("stopped", "expired")


@pytest.mark.parametrize(("start_at", "expires", "reason"), [
    ("-1", "7d", "start at: "),
    ("+2h", "1h", "after the hunt expires"),
    ("tomorrow", "7d", "is not a time"),
    ("+5x", "7d", "start at: "),
])
async def test_a_bad_start_time_is_refused_in_one_line(api: Service, start_at: str,
                                                       expires: str, reason: str) -> None:
    written = str(time.time() - 10) if start_at == "-1" else start_at
    with pytest.raises(ServiceError) as refused:
        await api.create_hunt(query="SELECT 1 FROM scope()", start_at=written, expires=expires)
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert await api.list_hunts() == []


async def test_start_at_takes_iso_8601_with_and_without_a_zone(api: Service) -> None:
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 2 * HOUR))
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", start_at=local)
    assert hunt["start_at"] == pytest.approx(time.time() + 2 * HOUR, abs=2)
    utc = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3 * HOUR))
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", start_at=utc)
    assert hunt["start_at"] == pytest.approx(time.time() + 3 * HOUR, abs=2)


# Pause, resume, stop -----------------------------------------------------------------------------

async def test_pause_lets_running_collections_finish_and_stop_cancels(
    server: Server, api: Service, agents: list[ScriptedAgent], tmp_path: Path
) -> None:
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", start=True)
    hunt_id = hunt["hunt_id"]
    first, second = [await agent.next_collection() for agent in agents]
    paused = await api.pause_hunt(hunt_id)
    assert (paused["state"], paused["stop_reason"]) == ("paused", "paused by tester")
    # A client connecting now is not checked for the paused hunt.
    [late] = await scripted(server, tmp_path / "late", 1)
    try:
        await agents[0].status(first.flow_id, final_rows=[{"One": 1}])
        await until(lambda: counts(server, hunt_id) == {"results": 1, "running": 1}, 10,
                    "the first collection to finish while paused")
        assert not agents[0].cancels_received() and not agents[1].cancels_received()
        assert not late.flows_received()

        stopped = await api.stop_hunt(hunt_id)
        assert stopped["state"] == "stopped"
        await agents[1].wait_for(lambda m: isinstance(m, protocol.Cancel)
                                 and m.flow_id == second.flow_id, 10)
        await until(lambda: counts(server, hunt_id) == {"results": 1, "errors": 1}, 10,
                    "the second collection cancelled")
    finally:
        await late.close()


async def test_resuming_a_paused_hunt_checks_the_clients_that_came_meanwhile(
    server: Server, api: Service, agents: list[ScriptedAgent], tmp_path: Path
) -> None:
    hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", start=True)
    hunt_id = hunt["hunt_id"]
    for agent in agents:
        await agent.next_collection()
    await api.pause_hunt(hunt_id)
    [late] = await scripted(server, tmp_path / "late", 1)
    try:
        resumed = await api.start_hunt(hunt_id)
        assert resumed["state"] == "running" and resumed["stop_reason"] is None
        await late.next_collection()
    finally:
        await late.close()


async def test_pause_is_refused_unless_running_or_scheduled(api: Service) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()")
    with pytest.raises(ServiceError, match="only a running or scheduled hunt can be paused"):
        await api.pause_hunt(hunt["hunt_id"])


async def test_a_paused_hunts_collections_survive_a_restart(tmp_path: Path,
                                                             database_url: str | None) -> None:
    """Loading hunts cancels the flows a stopped hunt left in flight, never a paused one's."""
    datastore = tmp_path / "datastore"
    server = Server(open_datastore(datastore, database_url), "127.0.0.1:0")
    await server.start()
    [agent] = await scripted(server, tmp_path, 1)
    try:
        api = server.service("tester")
        hunt = await api.create_hunt(query="SELECT 1 FROM scope()", start=True)
        collection = await agent.next_collection()
        await api.pause_hunt(hunt["hunt_id"])
    finally:
        await agent.close()
        await server.stop()
    server = Server(Datastore.open(datastore), "127.0.0.1:0")
    await server.start()
    try:
        flow = await server.flows.get(agent.client_id, collection.flow_id)
        assert flow.state == "running"
        assert server.hunts.get(hunt["hunt_id"]).counts["running"] == 1
    finally:
        await server.stop()


# Tuning a running hunt ---------------------------------------------------------------------------

async def test_a_new_rate_is_used_by_the_recruiter_at_once(server: Server, api: Service,
                                                           tmp_path: Path) -> None:
    """The recruiter's monotonic clock stands still: at 1 a minute, one client goes (the
    bucket's one token) and the rest wait for ever; only the new rate lets them through."""
    server.hunts.clock = lambda: 1000.0
    connected = await scripted(server, tmp_path, 4)
    try:
        hunt = await api.create_hunt(query="SELECT 1 AS One FROM scope()", rate=1, start=True)
        hunt_id = hunt["hunt_id"]
        await until(lambda: counts(server, hunt_id) == {"pending": 3, "running": 1}, 10,
                    "one client recruited, three waiting")
        server.hunts.wake()
        await asyncio.sleep(0)
        assert counts(server, hunt_id) == {"pending": 3, "running": 1}

        changed = await api.set_hunt(hunt_id, rate=6000)
        assert changed["changed"] == {"rate": [1.0, 6000.0]}
        await until(lambda: counts(server, hunt_id) == {"running": 4}, 10,
                    "the rest recruited at the new rate")
    finally:
        for agent in connected:
            await agent.close()


async def test_a_rate_set_while_held_flows_are_judged_sends_matches_to_pending(
    server: Server, api: Service, fleet: Fleet
) -> None:
    """With no rate and no limit a hunt's clients get hunt flows (check and collection in one);
    a rate set before they are judged holds the matches in pending, recruited at the rate."""
    server.hunts.clock = lambda: 1000.0
    ids = [fleet.start(facts["Hostname"], facts) for facts in SEED_FACTS]
    await fleet.online(*ids)
    held = failpoints.hold("condition.after_judge")
    hunt = await api.create_hunt(query="SELECT Hostname FROM info()",
                                 server_condition=SEED_SERVER_CONDITION, start=True)
    hunt_id = hunt["hunt_id"]
    await asyncio.wait_for(held.reached.wait(), 30)
    await api.set_hunt(hunt_id, rate=1)
    held.release()
    # Two clients match: the rate's one token recruits one, the other waits.
    final = await until(lambda: (c := counts(server, hunt_id)).get("not_matched") == 4
                        and c.get("results") == 1 and c.get("pending") == 1 and c, 30,
                        "one match collected, one waiting for the rate")
    assert final == {"not_matched": 4, "results": 1, "pending": 1}


async def test_settings_change_at_once_and_are_audited_with_old_and_new(
    server: Server, api: Service
) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", rate=10, limit=5,
                                 description="first")
    hunt_id = hunt["hunt_id"]
    changed = await api.set_hunt(hunt_id, rate=5, limit="8", expires="12h",
                                 max_errors="10%", description="second")
    assert changed["rate"] == 5 and changed["limit"] == 8
    assert changed["max_errors"] == 0 and changed["max_errors_percent"] == 10
    assert changed["expires"] == pytest.approx(time.time() + 12 * HOUR, abs=5)
    assert changed["changed"]["rate"] == [10.0, 5.0]
    assert changed["changed"]["limit"] == [5, 8]
    assert changed["changed"]["max_errors"] == [0, "10%"]
    assert changed["changed"]["description"] == ["first", "second"]
    assert changed["changed"]["expires"][1] == changed["expires"]
    [entry] = [e for e in await api.audit_log() if e["action"] == "set"]
    assert entry["target"] == hunt_id
    assert entry["details"]["changed"]["rate"] == [10.0, 5.0]
    again = await api.set_hunt(hunt_id, rate=5)
    assert again["changed"] == {}
    cleared = await api.set_hunt(hunt_id, max_errors=0)
    assert cleared["changed"] == {"max_errors": ["10%", 0]}


@pytest.mark.parametrize(("values", "reason"), [
    ({}, "nothing to change"),
    ({"rate": -1}, "rate must be between"),
    ({"rate": "fast"}, "rate must be a number"),
    ({"limit": 1.5}, "limit must be a whole number"),
    ({"expires": "yesterday"}, "expires: "),
    ({"expires": "2001-01-01T00:00"}, "already past"),
    ({"max_errors": "lots"}, "max errors must be a whole number"),
    ({"max_errors": "0%"}, "more than 0%"),
    ({"max_errors": "120%"}, "max errors must be between"),
])
async def test_nonsense_settings_are_refused_in_one_line(api: Service, values: dict[str, Any],
                                                         reason: str) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", rate=10)
    with pytest.raises(ServiceError) as refused:
        await api.set_hunt(hunt["hunt_id"], **values)
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert (await api.get_hunt(hunt["hunt_id"]))["rate"] == 10


async def test_a_limit_below_the_clients_recruited_is_refused(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", rate=6000, start=True)
    hunt_id = hunt["hunt_id"]
    await until(lambda: counts(server, hunt_id) == {"running": 2}, 10, "two recruited")
    with pytest.raises(ServiceError, match="a limit of 1 is below the 2 clients"):
        await api.set_hunt(hunt_id, limit=1)
    assert server.hunts.get(hunt_id).client_limit == 0
    assert (await api.set_hunt(hunt_id, limit=2))["limit"] == 2


# The error limit ---------------------------------------------------------------------------------

def test_the_error_share_is_judged_only_once_twenty_recruited_clients_finished() -> None:
    hunt = HuntRecord(hunt_id="H.X", query="", client_condition="", server_condition="",
                      description="", rate=0, client_limit=0, expires=0, timeout=0,
                      max_rows=0, max_upload_bytes=0, state="running", created=0,
                      max_errors_percent=10)
    hunt.counts.update(errors=5, running=10, results=9)  # 14 of 24 finished: too early
    assert not hunt.error_limit_reached
    hunt.counts.update(running=4, results=15)  # 20 finished, 5 errors of 24 recruited
    assert hunt.error_limit_reached
    hunt.counts.update(errors=2, results=18)  # 2 of 24: under 10%
    assert not hunt.error_limit_reached
    hunt.max_errors, hunt.max_errors_percent = 2, 0
    assert hunt.error_limit_reached


async def test_the_hunt_pauses_itself_at_its_error_count_and_running_collections_finish(
    server: Server, api: Service, fleet: Fleet, agents: list[ScriptedAgent]
) -> None:
    """Two real agents whose collection fails (too many rows); two scripted ones whose
    collections stay open until the test ends them, after the pause."""
    failing = [fleet.start(f"failing-{n}", {**LINUX, "Hostname": f"failing-{n}"})
               for n in range(2)]
    await fleet.online(*failing)
    hunt = await api.create_hunt(query="SELECT _value FROM range(end=50)", max_rows=10,
                                 max_errors=2, start=True)
    hunt_id = hunt["hunt_id"]
    open_collections = [await agent.next_collection() for agent in agents]
    paused = await until(lambda: state(server, hunt_id) == "paused"
                         and server.hunts.get(hunt_id), 20, "the pause at the error limit")
    assert paused.stop_reason == "error limit reached"
    assert counts(server, hunt_id) == {"errors": 2, "running": 2}
    for agent, collection in zip(agents, open_collections, strict=True):
        assert not agent.cancels_received()
        await agent.status(collection.flow_id, final_rows=[{"_value": 0}])
    await until(lambda: counts(server, hunt_id) == {"errors": 2, "results": 2}, 10,
                "the running collections to finish")

    with pytest.raises(ServiceError, match=r"at its error limit .* raise it .* relaunch"):
        await api.start_hunt(hunt_id)
    await api.set_hunt(hunt_id, max_errors=5)
    assert (await api.start_hunt(hunt_id))["state"] == "running"


async def test_relaunch_works_on_a_hunt_paused_at_its_error_limit(
    server: Server, api: Service, agents: list[ScriptedAgent]
) -> None:
    hunt = await api.create_hunt(query="SELECT 1 FROM scope()", max_errors=1, start=True)
    hunt_id = hunt["hunt_id"]
    first, second = [await agent.next_collection() for agent in agents]
    await agents[0].status(first.flow_id, state="error")
    await until(lambda: state(server, hunt_id) == "paused", 10, "the pause")
    await agents[1].status(second.flow_id, final_rows=[{"n": 1}])
    relaunched = await api.relaunch_hunt(hunt_id)
    assert relaunched["relaunched"] == 1 and relaunched["state"] == "running"
    again = await agents[0].next_collection()
    assert again.flow_id != first.flow_id
    await agents[0].status(again.flow_id, final_rows=[{"n": 1}])
    await until(lambda: counts(server, hunt_id) == {"results": 2}, 10, "both results")


async def test_the_hunt_pauses_itself_at_its_error_share(server: Server, api: Service,
                                                         tmp_path: Path) -> None:
    connected = await scripted(server, tmp_path, 22)
    try:
        hunt = await api.create_hunt(query="SELECT 1 FROM scope()", max_errors="10%",
                                     start=True)
        hunt_id = hunt["hunt_id"]
        collections = [await agent.next_collection() for agent in connected]
        await until(lambda: counts(server, hunt_id) == {"running": 22}, 10, "all recruited")
        # 3 errors of 22 recruited is over 10%, but only 3 finished: too early to judge.
        for agent, collection in zip(connected[:3], collections[:3], strict=True):
            await agent.status(collection.flow_id, state="error")
        for agent, collection in zip(connected[3:19], collections[3:19], strict=True):
            await agent.status(collection.flow_id, final_rows=[{"n": 1}])
        await until(lambda: counts(server, hunt_id) == {"errors": 3, "results": 16,
                                                        "running": 3}, 10, "19 finished")
        assert not server.hunts.get(hunt_id).error_limit_reached
        assert state(server, hunt_id) == "running"
        # The twentieth finishes: 3 of 22 in errors, the share judged and reached.
        await connected[19].status(collections[19].flow_id, final_rows=[{"n": 1}])
        await until(lambda: state(server, hunt_id) == "paused", 10, "the pause")
        assert server.hunts.get(hunt_id).stop_reason == "error limit reached"
        for agent, collection in zip(connected[20:], collections[20:], strict=True):
            await agent.status(collection.flow_id, final_rows=[{"n": 1}])
        await until(lambda: counts(server, hunt_id) == {"errors": 3, "results": 19}, 10,
                    "the last two collections to finish")
    finally:
        for agent in connected:
            await agent.close()
