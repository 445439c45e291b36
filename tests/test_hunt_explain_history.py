"""A client's history (every hunt that looked at it and its own collections), and the command
line of explain: ``velotui hunt explain`` and ``velotui clients show``, run against a real
server with scripted agents over real websockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import until
from tests.scripted_agent import ScriptedAgent
from velotui.cli import main
from velotui.server.errors import ServiceError
from velotui.server.server import Server
from velotui.server.service import Service

pytestmark = pytest.mark.both_backends

QUICK = "SELECT 1 AS One FROM scope()"
WEB = {"OS": "linux", "Hostname": "web-1", "Fqdn": "web-1.example"}
NOT_WINDOWS = "SELECT * FROM rows WHERE OS = 'windows'"


@pytest.fixture
def api(server: Server) -> Service:
    return server.service("tester")


@pytest.fixture
async def web(server: Server, tmp_path: Path) -> AsyncIterator[ScriptedAgent]:
    agent = await ScriptedAgent(server, tmp_path / "web", WEB).connect()
    yield agent
    await agent.close()


async def collect_once(agent: ScriptedAgent, rows: list[dict[str, Any]], upload: bool) -> str:
    """The agent's next collection, answered with ``rows`` (and a file); its flow ID."""
    request = await agent.next_collection()
    if rows:
        await agent.rows(request.flow_id, rows)
    if upload:
        await agent.upload(request.flow_id, 1, b"evidence")
    await agent.status(request.flow_id)
    return request.flow_id


def queue_of(server: Server, hunt_id: str, queue: str) -> bool:
    return server.hunts.get(hunt_id).counts[queue] == 1


async def history_fixture(server: Server, api: Service, web: ScriptedAgent, tmp_path: Path
                          ) -> dict[str, Any]:
    """The web agent in three hunts (results; not matched by a hunt flow; not matched by a
    condition flow) and with one collection of its own; another agent with one of its own."""
    first = await api.create_hunt(query=QUICK, start=True, description="first")
    await collect_once(web, [{"One": 1}, {"One": 2}], upload=True)
    await until(lambda: queue_of(server, first["hunt_id"], "results"), 10)
    second = await api.create_hunt(query=QUICK, start=True, description="second",
                                   server_condition=NOT_WINDOWS)
    await until(lambda: queue_of(server, second["hunt_id"], "not_matched"), 10)
    third = await api.create_hunt(query=QUICK, start=True, description="third", rate=600,
                                  server_condition=NOT_WINDOWS)
    await until(lambda: queue_of(server, third["hunt_id"], "not_matched"), 10)
    flow = await api.schedule_collection(web.client_id, QUICK)
    await collect_once(web, [{"One": 1}], upload=True)
    other = await ScriptedAgent(server, tmp_path / "other", {**WEB, "Hostname": "db"}).connect()
    try:
        await api.schedule_collection(other.client_id, QUICK)
        await collect_once(other, [{"One": 1}], upload=False)
    finally:
        await other.close()
    await until(lambda: server.flows.active.get((web.client_id, flow["flow_id"])) is None, 10)
    return {"hunts": [third["hunt_id"], second["hunt_id"], first["hunt_id"]],
            "flow_id": flow["flow_id"]}


async def test_client_history_lists_its_hunts_and_its_own_collections_newest_first(
    server: Server, api: Service, web: ScriptedAgent, tmp_path: Path,
) -> None:
    made = await history_fixture(server, api, web, tmp_path)
    history = await api.client_history(web.client_id)
    [listed] = [c for c in await api.list_clients() if c["client_id"] == web.client_id]
    assert set(history["client"]) == set(listed)
    assert history["client"]["hostname"] == "web-1"
    third, second, first = made["hunts"]
    assert [h["hunt_id"] for h in history["hunts"]] == [third, second, first]
    by_id = {h["hunt_id"]: h for h in history["hunts"]}
    for hunt in by_id.values():
        assert set(hunt) == {"hunt_id", "description", "hunt_state", "queue", "flow_id",
                             "state", "rows", "uploads", "error", "updated"}
    assert {k: by_id[first][k] for k in ("description", "hunt_state", "queue", "flow_id",
                                        "state", "rows", "uploads", "error")} == {
        "description": "first", "hunt_state": "running", "queue": "results",
        "flow_id": f"F.{first[2:]}.H", "state": "finished", "rows": 2, "uploads": 1,
        "error": None}
    # Not matched by its hunt flow, or by a separate condition check: no rows of a collection
    # (the condition's rows are not the hunt's).
    assert (by_id[second]["queue"], by_id[second]["flow_id"], by_id[second]["rows"]) == (
        "not_matched", f"F.{second[2:]}.H", 0)
    assert (by_id[third]["queue"], by_id[third]["flow_id"], by_id[third]["rows"]) == (
        "not_matched", f"F.{third[2:]}.C", 0)
    # Its own collection, as flow() gives it; the other client's is not there.
    assert history["collections"] == [await api.flow(web.client_id, made["flow_id"])]
    assert history["collections"][0]["rows"] == 1
    assert len(history["collections"][0]["uploads"]) == 1


async def test_client_history_refuses_bad_and_unknown_clients(api: Service) -> None:
    with pytest.raises(ServiceError, match="client ID must look like"):
        await api.client_history("C.nope")
    with pytest.raises(ServiceError, match=r"no client 'C.0123456789abcdef' \(see: velotui"
                                           r" clients\)"):
        await api.client_history("C.0123456789abcdef")
    with pytest.raises(ServiceError, match="limit must be"):
        await api.client_history("C.0123456789abcdef", limit=0)


# The command line -------------------------------------------------------------------------------


async def velotui(server: Server, capsys: pytest.CaptureFixture[str], *args: str
                  ) -> tuple[int, str, str]:
    """Run the ``velotui`` command against ``server``: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, [*args, "--datastore", str(server.datastore.root)])
    out, err = capsys.readouterr()
    return status, out, err


async def test_hunt_explain_prints_the_summary_and_the_condition_rows(
    server: Server, api: Service, web: ScriptedAgent, capsys: pytest.CaptureFixture[str],
) -> None:
    hunt = await api.create_hunt(query=QUICK, start=True)
    flow_id = await collect_once(web, [{"One": 1}], upload=False)
    await until(lambda: queue_of(server, hunt["hunt_id"], "results"), 10)
    status, out, err = await velotui(server, capsys, "hunt", "explain", hunt["hunt_id"],
                                     web.client_id)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{hunt['hunt_id']}  {web.client_id}: results"
    assert lines[1].startswith("finished at ")
    assert lines[1].endswith(f" with 1 row (collection {flow_id})")
    assert lines[2].endswith(": the client condition returned 1 row (no server condition)")
    assert lines[3] == "the client condition's rows:"
    assert lines[4].split() == ["OS", "Hostname", "Fqdn"]
    assert lines[6].split() == ["linux", "web-1", "web-1.example"]

    status, out, err = await velotui(server, capsys, "hunt", "explain", hunt["hunt_id"],
                                     web.client_id, "--json")
    assert (status, err) == (0, "")
    printed = json.loads(out)
    expected = await api.explain_hunt_client(hunt["hunt_id"], web.client_id)
    for found in (printed, expected):
        found["details"].pop("last_seen")  # online: now, each time it is asked
    assert printed == expected
    assert printed["status"] == "results"


async def test_hunt_explain_refuses_bad_ids_in_one_line(
    server: Server, api: Service, capsys: pytest.CaptureFixture[str],
) -> None:
    hunt = await api.create_hunt(query=QUICK)
    status, out, err = await velotui(server, capsys, "hunt", "explain", "H.nope",
                                     "C.0123456789abcdef")
    assert (status, out) == (1, "")
    assert err == ("velotui hunt: hunt ID must look like H.0123456789ABC (see: velotui hunt"
                   " list)\n")
    status, out, err = await velotui(server, capsys, "hunt", "explain", hunt["hunt_id"],
                                     "C.0123456789abcdef")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"{hunt['hunt_id']}  C.0123456789abcdef: unknown client",
        "C.0123456789abcdef is not a client this server knows (see: velotui clients)"]


async def test_clients_show_prints_the_clients_hunts_and_collections(
    server: Server, api: Service, web: ScriptedAgent, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    made = await history_fixture(server, api, web, tmp_path)
    status, out, err = await velotui(server, capsys, "clients", "show", web.client_id)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{web.client_id}  web-1  linux  online now"
    hunts_at = lines.index("hunts:")
    assert lines[hunts_at + 1].split()[:6] == ["Hunt", "Description", "Hunt", "state", "Queue",
                                               "FlowId"]
    rows = [line.split() for line in lines[hunts_at + 3:hunts_at + 6]]
    third, second, first = made["hunts"]
    assert [row[:5] for row in rows] == [
        [third, "third", "running", "not", "matched"],
        [second, "second", "running", "not", "matched"],
        [first, "first", "running", "results", f"F.{first[2:]}.H"]]
    assert rows[2][5:8] == ["finished", "2", "1"]  # state, rows, uploads
    collections_at = lines.index("collections:")
    assert lines[collections_at + 1].split()[:5] == ["Flow", "Created", "State", "Rows",
                                                     "Uploads"]
    [row] = [line.split() for line in lines[collections_at + 3:]]
    assert row[0] == made["flow_id"]
    assert row[3:6] == ["finished", "1", "1"]

    status, out, err = await velotui(server, capsys, "clients", "show", web.client_id, "--json")
    assert (status, err) == (0, "")
    printed = json.loads(out)
    expected = await api.client_history(web.client_id)
    for found in (printed, expected):
        found["client"].pop("last_seen")  # online: now, each time it is asked
    assert printed == expected


async def test_clients_show_refuses_an_unknown_client_in_one_line(
    server: Server, capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = await velotui(server, capsys, "clients", "show", "C.0123456789abcdef")
    assert (status, out) == (1, "")
    assert err == "velotui clients: no client 'C.0123456789abcdef' (see: velotui clients)\n"
