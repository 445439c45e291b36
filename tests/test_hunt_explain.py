"""Explain: where one client stands in one hunt and why, against a real server with agents over
real websockets. Scripted agents hold a client at the step each case needs (its condition sent
and unanswered, its collection running with rows so far, its collection failing); failpoints
hold the foreman and the recruiter where a real one would move on by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.fleet import Fleet, until
from tests.protocol_client import open_socket, receive
from tests.scripted_agent import ScriptedAgent
from velotui.server import failpoints
from velotui.server.errors import ServiceError
from velotui.server.server import Server
from velotui.server.service import Service
from velotui.wire import protocol

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Hostname": "web-1", "Fqdn": "web-1.example"}
QUICK = "SELECT 1 AS One FROM scope()"


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


@pytest.fixture
async def agents(server: Server, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Connects scripted agents (closed at the end): ``await agents(name, facts)``."""
    opened: list[ScriptedAgent] = []

    async def connect(name: str, facts: dict[str, Any] | None = None) -> ScriptedAgent:
        agent = await ScriptedAgent(server, tmp_path / name,
                                    {**LINUX, "Hostname": name, **(facts or {})}).connect()
        opened.append(agent)
        return agent

    yield connect
    for agent in opened:
        await agent.close()
    failpoints.disarm()


async def explained(api: Service, hunt_id: str, client_id: str, status: str,
                    until_true: Callable[[dict[str, Any]], bool] = lambda _e: True,
                    timeout: float = 20) -> dict[str, Any]:
    """The explanation, once it has ``status`` (and ``until_true`` holds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await api.explain_hunt_client(hunt_id, client_id)
        if found["status"] == status and until_true(found):
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {status}: last {found}")
        await asyncio.sleep(0.02)


def counts(server: Server, hunt_id: str) -> dict[str, int]:
    return {q: n for q, n in server.hunts.get(hunt_id).counts.items() if n}


# Refusals and clients the hunt never looked at ----------------------------------------------------


async def test_bad_ids_are_refused_in_one_line_and_an_unknown_client_is_said_so(
    api: Service,
) -> None:
    hunt = await api.create_hunt(query=QUICK)
    for hunt_id, client_id, refusal in (
        ("nonsense", "C.0123456789abcdef", "hunt ID must look like"),
        ("H.0000000000000", "C.0123456789abcdef", "no hunt 'H.0000000000000'"),
        (hunt["hunt_id"], "C.nope", "client ID must look like"),
        (hunt["hunt_id"], 7, "client ID must look like"),
    ):
        with pytest.raises(ServiceError, match=refusal) as refused:
            await api.explain_hunt_client(hunt_id, client_id)
        assert "\n" not in str(refused.value)
    found = await api.explain_hunt_client(hunt["hunt_id"], "C.0123456789abcdef")
    assert found["status"] == "unknown_client"
    assert found["summary"] == ("C.0123456789abcdef is not a client this server knows (see:"
                                " velotui clients)")
    assert set(found) == {"hunt_id", "client_id", "status", "summary", "details"}


async def test_a_client_not_seen_since_the_hunt_started_never_connected(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("laptop")
    await agent.close()
    await until(lambda: not server.directory.is_online(agent.client_id), 10, "offline")
    hunt = await api.create_hunt(query=QUICK, start=True)
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "not_connected"
    details = found["details"]
    assert details["last_seen"] < details["hunt_started"]
    assert details["online"] is False
    first, second = found["summary"].splitlines()
    assert first.startswith(f"{agent.client_id} (laptop) has not connected since the hunt"
                            " started at ")
    assert "(last seen " in first
    assert second == "it is checked for the hunt when it connects"


async def test_a_hunt_never_started_has_checked_nobody(api: Service, agents: Any) -> None:
    agent = await agents("desk")
    hunt = await api.create_hunt(query=QUICK)
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "not_checked"
    assert found["details"]["reason"] == "paused"
    assert found["summary"] == (f"{agent.client_id} (desk) is not checked yet: the hunt has not"
                                " been started (it is paused); clients are checked once it runs")


async def test_a_stopped_hunt_checks_no_client_that_comes_after(api: Service,
                                                                agents: Any) -> None:
    hunt = await api.create_hunt(query=QUICK, start=True)
    await api.stop_hunt(hunt["hunt_id"])
    agent = await agents("late")
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "not_checked"
    assert found["details"]["reason"] == "stopped"
    assert found["summary"] == (f"{agent.client_id} (late) is not checked: the hunt is stopped"
                                " (stopped by tester) and checks no new client (it was last"
                                " seen now)")


async def test_an_online_client_of_a_running_hunt_is_checked_at_once_or_at_its_next_poll(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("web")
    held = failpoints.hold("check.before_write")  # the foreman, about to record its check
    hunt = await api.create_hunt(query=QUICK, start=True)
    await asyncio.wait_for(held.reached.wait(), 10)
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "not_checked"
    assert found["details"]["reason"] == "next_poll"
    assert found["summary"] == (f"{agent.client_id} (web) is not checked yet: the hunt runs and"
                                " it is online: the foreman checks it now, or at its next poll")
    held.release()
    await explained(api, hunt["hunt_id"], agent.client_id, "running")


async def hello_with_checkpoint(server: Server, state_dir: Path, checkpoint: int
                                ) -> ClientConnection:
    """An agent that says it was checked for every hunt up to ``checkpoint`` (as one whose
    state came from another machine would), connected and authenticated."""
    from agent.identity import AgentIdentity

    identity = AgentIdentity.load_or_create(state_dir)
    connection = await open_socket(server)
    await connection.send(protocol.encode(protocol.Hello(
        version=protocol.PROTOCOL_VERSION, public_key=identity.public_key_bytes,
        enrolment_secret=server.datastore.enrolment_secret(), facts={"Hostname": "cloned"},
        labels=[], last_hunt_timestamp=checkpoint)))
    challenge = await receive(connection)
    assert isinstance(challenge, protocol.Challenge)
    await connection.send(protocol.encode(protocol.Auth(
        signature=identity.sign(challenge.nonce))))
    assert isinstance(await receive(connection), protocol.Welcome)
    return connection


async def test_an_agent_whose_checkpoint_is_past_the_start_is_told_honestly(
    server: Server, api: Service, tmp_path: Path,
) -> None:
    hunt = await api.create_hunt(query=QUICK, start=True)
    started = server.hunts.get(hunt["hunt_id"]).start_timestamp
    connection = await hello_with_checkpoint(server, tmp_path / "cloned", started + 5_000_000)
    try:
        client_id = next(iter(server.directory.sessions))
        await until(lambda: server.directory.get(client_id).last_hunt_timestamp > started, 10)
        found = await api.explain_hunt_client(hunt["hunt_id"], client_id)
        assert found["status"] == "not_checked"
        assert found["details"]["reason"] == "agent_checkpoint_past_start"
        assert found["details"]["agent_checkpoint"] == (started + 5_000_000) / 1_000_000
        first, second = found["summary"].splitlines()
        assert first.startswith(f"{client_id} (cloned) is not checked: its agent reports it"
                                " was checked for every hunt up to ")
        assert first.endswith("yet the server holds no check of it for this hunt")
        assert second == "its polls will not check it; starting the hunt again would"
        assert counts(server, hunt["hunt_id"]) == {}  # truly never checked
    finally:
        await connection.close()


# The condition --------------------------------------------------------------------------------


async def test_a_condition_sent_and_unanswered_is_checking(server: Server, api: Service,
                                                           agents: Any) -> None:
    agent = await agents("silent")
    agent._reader.cancel()  # it reads nothing, so it answers nothing
    hunt = await api.create_hunt(query=QUICK, start=True)
    found = await explained(api, hunt["hunt_id"], agent.client_id, "checking",
                            lambda e: e["details"]["condition_sent"] is not None)
    details = found["details"]
    assert details["condition_flow_id"] == f"F.{hunt['hunt_id'][2:]}.H"
    assert details["condition_rows"] is None
    assert found["summary"].startswith("checking since ")
    assert found["summary"].endswith("no answer yet")
    assert ": condition sent at " in found["summary"]


async def test_condition_rows_waiting_for_the_server_condition_are_shown(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("judged")
    held = failpoints.hold("condition.after_judge")
    hunt = await api.create_hunt(query=QUICK, start=True,
                                 server_condition="SELECT * FROM rows WHERE OS = 'linux'")
    await asyncio.wait_for(held.reached.wait(), 10)
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "checking"
    assert found["details"]["condition_rows"] == [agent.facts]
    assert found["summary"].endswith(": the client condition returned 1 row; the server"
                                     " condition is being judged")
    held.release()
    await explained(api, hunt["hunt_id"], agent.client_id, "running")


@pytest.mark.parametrize("rate", [0, 600], ids=["hunt flow", "condition flow"])
async def test_not_matched_gives_the_client_conditions_rows_and_says_the_server_condition_said_no(
    server: Server, api: Service, agents: Any, rate: int,
) -> None:
    # With no rate the condition rows are kept with the client's place (a held hunt flow);
    # with one, as the rows of a separate condition flow.
    agent = await agents("web")
    hunt = await api.create_hunt(query=QUICK, start=True, rate=rate,
                                 server_condition="SELECT * FROM rows WHERE OS = 'windows'")
    found = await explained(api, hunt["hunt_id"], agent.client_id, "not_matched")
    details = found["details"]
    assert details["condition_rows"] == [agent.facts]
    assert details["condition_row_count"] == 1
    assert details["server_condition"] is True
    kind = "H" if rate == 0 else "C"
    assert details["condition_flow_id"] == f"F.{hunt['hunt_id'][2:]}.{kind}"
    assert found["summary"].startswith("not matched: checked at ")
    assert found["summary"].endswith(", the client condition returned 1 row and the server"
                                     " condition returned nothing")


async def test_not_matched_when_the_client_condition_returned_no_rows(
    server: Server, fleet: Fleet, api: Service,
) -> None:
    client_id = fleet.start("win", {"Hostname": "win", "OS": "windows"})
    await fleet.online(client_id)
    hunt = await api.create_hunt(query=QUICK, start=True,
                                 client_condition="SELECT OS FROM info() WHERE OS = 'linux'")
    found = await explained(api, hunt["hunt_id"], client_id, "not_matched")
    assert found["details"]["condition_rows"] == []
    assert found["details"]["condition_row_count"] == 0
    assert found["summary"].endswith(", the client condition returned no rows")


async def test_a_failing_server_condition_says_why(server: Server, api: Service,
                                                   agents: Any) -> None:
    agent = await agents("web")
    hunt = await api.create_hunt(query=QUICK, start=True, rate=600,
                                 server_condition="SELECT * FROM rows WHERE Hostnme = 'web'")
    found = await explained(api, hunt["hunt_id"], agent.client_id, "condition_failed")
    details = found["details"]
    assert details["side"] == "server"
    assert details["condition_rows"] == [agent.facts]
    assert details["error"].startswith("server condition: Hostnme is not a column of the client"
                                       " condition's rows")
    first, second = found["summary"].splitlines()
    assert "the client condition returned 1 row and the server condition failed: Hostnme is" \
        " not a column of the client condition's rows" in first
    assert second == f"to check it again: velotui hunt relaunch {hunt['hunt_id']}"


async def test_a_client_condition_failing_on_the_agent_says_why(
    server: Server, fleet: Fleet, api: Service,
) -> None:
    client_id = fleet.start("web", LINUX)
    await fleet.online(client_id)
    hunt = await api.create_hunt(query=QUICK, start=True,
                                 client_condition="SELECT _value FROM range(end=5000)")
    found = await explained(api, hunt["hunt_id"], client_id, "condition_failed")
    assert found["details"]["side"] == "client"
    assert found["details"]["error"].startswith("the client-side condition returned more than")
    first = found["summary"].splitlines()[0]
    assert first.startswith("the client condition failed on the agent (checked at ")
    assert first.endswith(f"): {found['details']['error']}")


# Pending ----------------------------------------------------------------------------------------


async def pending_hunt(server: Server, api: Service, agents: Any, count: int, **options: Any
                       ) -> tuple[dict[str, Any], list[ScriptedAgent]]:
    """A hunt on ``count`` agents (connected before it starts) once it has settled with the
    rest pending: one recruited at a rate of 1/min, or as many as its limit."""
    fleet = [await agents(f"host-{n}") for n in range(count)]
    hunt = await api.create_hunt(query=QUICK, start=True, **options)
    recruited = options.get("limit") or 1
    await until(lambda: counts(server, hunt["hunt_id"]).get("pending") == count - recruited,
                20, "the rest pending")
    return hunt, fleet


async def test_pending_gives_the_place_in_the_recruiters_order_and_the_eta(
    server: Server, api: Service, agents: Any,
) -> None:
    hunt, _fleet = await pending_hunt(server, api, agents, 4, rate=1)
    order = await server.db.hunts.pending(hunt["hunt_id"], 10)  # the recruiter's own read
    assert len(order) == 3
    for position, candidate in enumerate(order):
        found = await api.explain_hunt_client(hunt["hunt_id"], candidate.client_id)
        assert found["status"] == "pending"
        details = found["details"]
        assert (details["position"], details["rate"], details["waiting_for"]) == (
            position, 1.0, "rate")
        assert details["eta_seconds"] == position * 60.0
        assert details["condition_rows"] and details["condition_row_count"] == 1
        first, second = found["summary"].splitlines()
        if position == 0:
            assert first == "first in line at 1/min: recruited at the next free place"
        else:
            assert first == (f"pending behind {position} client{'s' if position > 1 else ''}"
                             f" at 1/min: recruited in about {position} min")
        assert second.startswith("checked at ")
        assert second.endswith(": the client condition returned 1 row (no server condition)")


async def test_pending_with_no_rate_is_recruited_at_the_next_recruiter_pass(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("next")
    held = failpoints.hold("recruit.before_write")  # the recruiter, about to take it
    hunt = await api.create_hunt(query=QUICK, start=True, limit=5)
    await asyncio.wait_for(held.reached.wait(), 10)
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "pending"
    assert found["details"]["eta_seconds"] == 0.0
    assert found["details"]["waiting_for"] == "recruiter"
    assert found["summary"].splitlines()[0] == (
        "pending behind 0 clients (no rate limit): recruited at the next recruiter pass")
    held.release()
    await explained(api, hunt["hunt_id"], agent.client_id, "running")


async def test_pending_behind_a_reached_client_limit(server: Server, api: Service,
                                                     agents: Any) -> None:
    hunt, fleet = await pending_hunt(server, api, agents, 3, limit=1)
    await until(lambda: server.hunts.get(hunt["hunt_id"]).state == "stopped", 10)
    waiting = [a for a in fleet
               if (await api.explain_hunt_client(hunt["hunt_id"], a.client_id))["status"]
               == "pending"]
    assert len(waiting) == 2
    found = await api.explain_hunt_client(hunt["hunt_id"], waiting[0].client_id)
    assert found["details"]["waiting_for"] == "stopped"
    assert found["summary"].splitlines()[0].endswith(
        "but the hunt stopped at its client limit of 1: it is recruited only if the limit is"
        " raised and the hunt runs again")


async def test_pending_in_a_stopped_hunt_waits_for_it_to_start_again(
    server: Server, api: Service, agents: Any,
) -> None:
    hunt, _fleet = await pending_hunt(server, api, agents, 2, rate=1)
    await api.stop_hunt(hunt["hunt_id"])
    [candidate] = await server.db.hunts.pending(hunt["hunt_id"], 10)
    found = await api.explain_hunt_client(hunt["hunt_id"], candidate.client_id)
    assert found["status"] == "pending"
    assert found["summary"].splitlines()[0] == (
        "pending behind 0 clients, but the hunt is stopped (stopped by tester): nobody is"
        " recruited until it is started again")


# The collection -------------------------------------------------------------------------------


async def test_a_running_collection_says_since_when_and_its_rows_so_far(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("busy")
    hunt = await api.create_hunt(query=QUICK, start=True)
    request = await agent.next_collection()
    await agent.rows(request.flow_id, [{"One": 1}, {"One": 2}])
    found = await explained(api, hunt["hunt_id"], agent.client_id, "running",
                            lambda e: e["details"]["rows"] == 2)
    details = found["details"]
    assert details["flow_id"] == request.flow_id == f"F.{hunt['hunt_id'][2:]}.H"
    assert details["flow_state"] == "running" and details["started"] is not None
    first, second = found["summary"].splitlines()
    assert first.startswith("running since ")
    assert first.endswith(f": collection {request.flow_id}, 2 rows so far")
    assert second.endswith(": the client condition returned 1 row (no server condition)")


async def test_finished_with_rows_and_uploads_or_with_none(server: Server, api: Service,
                                                           agents: Any) -> None:
    rich, empty = await agents("rich"), await agents("empty")
    hunt = await api.create_hunt(query=QUICK, start=True)
    request = await rich.next_collection()
    await rich.rows(request.flow_id, [{"One": 1}, {"One": 2}, {"One": 3}])
    await rich.upload(request.flow_id, 1, b"evidence")
    await rich.status(request.flow_id)
    request = await empty.next_collection()
    await empty.status(request.flow_id)

    found = await explained(api, hunt["hunt_id"], rich.client_id, "results")
    assert (found["details"]["rows"], found["details"]["uploads"]) == (3, 1)
    assert found["details"]["finished"] is not None
    first = found["summary"].splitlines()[0]
    assert first.startswith("finished at ")
    assert first.endswith(f" with 3 rows and 1 upload (collection {request.flow_id})")

    found = await explained(api, hunt["hunt_id"], empty.client_id, "completed")
    assert found["details"]["rows"] == 0
    assert found["summary"].splitlines()[0].endswith(
        f" with no rows (collection {request.flow_id})")


async def test_a_failed_collection_says_why_and_how_to_run_it_again(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("broken")
    hunt = await api.create_hunt(query=QUICK, start=True)
    request = await agent.next_collection()
    await agent.status(request.flow_id, state="error", error="disk on fire")
    found = await explained(api, hunt["hunt_id"], agent.client_id, "errors")
    assert found["details"]["stage"] == "collection"
    assert found["details"]["error"] == "disk on fire"
    first, _checked, last = found["summary"].splitlines()
    assert first.startswith(f"errors: the collection {request.flow_id} failed at ")
    assert first.endswith(": disk on fire")
    assert last == f"velotui hunt relaunch {hunt['hunt_id']}".join(["to run it again: ", ""])


# Scheduled and paused hunts -------------------------------------------------------------------


async def test_a_scheduled_hunt_has_checked_nobody_yet(api: Service, agents: Any) -> None:
    agent = await agents("desk")
    hunt = await api.create_hunt(query=QUICK, start_at="+2h")
    assert hunt["state"] == "scheduled"
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["status"] == "not_checked"
    assert found["details"]["reason"] == "scheduled"
    assert found["summary"].startswith(f"{agent.client_id} (desk) is not checked yet: the hunt"
                                       " is scheduled to start at ")
    assert found["summary"].endswith("; clients are checked once it runs")
    # Its schedule dropped by a pause, it still has not started.
    await api.pause_hunt(hunt["hunt_id"])
    found = await api.explain_hunt_client(hunt["hunt_id"], agent.client_id)
    assert found["summary"] == (f"{agent.client_id} (desk) is not checked yet: the hunt has not"
                                " been started (paused by tester); clients are checked once it"
                                " runs")


async def test_a_paused_hunt_checks_no_client_that_comes_after_and_waits_for_those_away(
    server: Server, api: Service, agents: Any,
) -> None:
    away = await agents("away")
    await away.close()
    await until(lambda: not server.directory.is_online(away.client_id), 10, "offline")
    hunt = await api.create_hunt(query=QUICK, start=True)
    await api.pause_hunt(hunt["hunt_id"])
    late = await agents("late")
    found = await api.explain_hunt_client(hunt["hunt_id"], late.client_id)
    assert found["status"] == "not_checked"
    assert found["summary"] == (f"{late.client_id} (late) is not checked: the hunt is paused"
                                " (paused by tester) and checks no new client (it was last seen"
                                " now)")
    found = await api.explain_hunt_client(hunt["hunt_id"], away.client_id)
    assert found["status"] == "not_connected"
    assert found["summary"].splitlines()[1] == (
        "the hunt is paused (paused by tester): it will not be checked until the hunt runs"
        " again")


async def test_pending_in_a_hunt_paused_by_the_operator_waits_for_it_to_resume(
    server: Server, api: Service, agents: Any,
) -> None:
    hunt, _fleet = await pending_hunt(server, api, agents, 2, rate=1)
    await api.pause_hunt(hunt["hunt_id"])
    [candidate] = await server.db.hunts.pending(hunt["hunt_id"], 10)
    found = await api.explain_hunt_client(hunt["hunt_id"], candidate.client_id)
    assert found["status"] == "pending"
    assert found["details"]["waiting_for"] == "paused"
    assert found["summary"].splitlines()[0] == (
        "pending behind 0 clients, but the hunt is paused (paused by tester): nobody is"
        " recruited until it is resumed")


async def test_pending_in_a_hunt_paused_at_its_error_limit_says_so(
    server: Server, api: Service, agents: Any,
) -> None:
    fleet = [await agents(f"host-{n}") for n in range(3)]
    hunt = await api.create_hunt(query=QUICK, start=True, rate=1, max_errors=1)
    hunt_id = hunt["hunt_id"]
    await until(lambda: counts(server, hunt_id).get("running") == 1, 20, "one recruited")
    [running] = await api.hunt_clients(hunt_id, queue="running")
    failing = next(a for a in fleet if a.client_id == running["client_id"])
    request = await failing.next_collection()
    await failing.status(request.flow_id, state="error", error="access denied")
    await until(lambda: server.hunts.get(hunt_id).state == "paused", 20, "the error limit")
    await until(lambda: counts(server, hunt_id).get("pending") == 2, 20, "the rest pending")
    order = await server.db.hunts.pending(hunt_id, 10)
    found = await api.explain_hunt_client(hunt_id, order[1].client_id)
    assert found["status"] == "pending"
    assert found["details"]["stop_reason"] == "error limit reached"
    assert found["summary"].splitlines()[0] == (
        "pending behind 1 client, but the hunt is paused (error limit reached): nobody is"
        " recruited until it is resumed")
    found = await api.explain_hunt_client(hunt_id, failing.client_id)
    assert found["status"] == "errors"
    assert found["summary"].splitlines()[0].endswith(": access denied")


async def test_a_condition_check_cancelled_by_a_stop_is_not_blamed_on_the_agent(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("silent")
    agent._reader.cancel()  # it never answers its condition
    hunt = await api.create_hunt(query=QUICK, start=True)
    await explained(api, hunt["hunt_id"], agent.client_id, "checking",
                    lambda e: e["details"]["condition_sent"] is not None)
    await api.stop_hunt(hunt["hunt_id"])
    found = await explained(api, hunt["hunt_id"], agent.client_id, "condition_failed")
    assert found["details"]["condition_state"] == "cancelled"
    first = found["summary"].splitlines()[0]
    assert first.startswith("the condition check was cancelled (checked at ")
    assert first.endswith("): the hunt was stopped: stopped by tester")


async def test_a_collection_running_when_its_hunt_is_paused_goes_on(
    server: Server, api: Service, agents: Any,
) -> None:
    agent = await agents("busy")
    hunt = await api.create_hunt(query=QUICK, start=True)
    request = await agent.next_collection()
    await agent.rows(request.flow_id, [{"One": 1}])
    await api.pause_hunt(hunt["hunt_id"])
    found = await explained(api, hunt["hunt_id"], agent.client_id, "running")
    assert found["details"]["hunt_state"] == "paused"
    assert found["summary"].splitlines()[2] == (
        "the hunt is paused (paused by tester): collections already running finish")
    await agent.status(request.flow_id)
    await explained(api, hunt["hunt_id"], agent.client_id, "results")
