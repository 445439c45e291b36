"""Every operator action, over the real operator API (a real server, a real websocket and a
scripted agent on another), writes exactly one audit record; a refused action writes one with
outcome 'refused' and the reason; a read writes none. Hunt actions carry the specification's
hash. The chain holds over all of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.scripted_agent import ScriptedAgent
from velotui.server.audit import ACTIONS
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.server import Server
from velotui.server.service import Service

pytestmark = pytest.mark.both_backends

LINUX = {"OS": "linux", "Fqdn": "a.example", "Hostname": "a", "Labels": []}
QUERY = "SELECT 1 AS One FROM scope()"


@pytest.fixture
async def api(server: Server) -> AsyncIterator[RemoteService]:
    datastore = server.datastore
    async with await RemoteService.connect(server.url, datastore.api_token(),
                                           datastore.ca_pem()) as remote:
        yield remote


@pytest.fixture
async def agent(server: Server, tmp_path: Path) -> AsyncIterator[ScriptedAgent]:
    connected = await ScriptedAgent(server, tmp_path / "agent", LINUX).connect()
    yield connected
    await connected.close()


async def records(api: RemoteService) -> list[dict[str, Any]]:
    return await api.audit_log(limit=100_000)


async def one_record(api: RemoteService, act: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run ``act``; the one audit record it wrote (failing unless there is exactly one)."""
    before = await records(api)
    with contextlib.suppress(RemoteError):
        await act()
    after = await records(api)
    assert len(after) == len(before) + 1, after[len(before):]
    return after[-1]


async def drain(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in stream]


async def test_every_action_writes_exactly_one_record(server: Server, api: RemoteService,
                                                      agent: ScriptedAgent) -> None:
    client_id = agent.client_id
    actors: set[str] = set()
    seen: set[str] = set()

    async def expect(action: str, act: Callable[[], Awaitable[Any]], target: str | None = None
                     ) -> dict[str, Any]:
        record = await one_record(api, act)
        assert (record["action"], record["outcome"], record["reason"]) == (
            action, "allowed", None), record
        if target is not None:
            assert record["target"] == target
        actors.add(record["actor"])
        seen.add(action)
        return record

    created: dict[str, Any] = {}

    async def create() -> None:
        created.update(await api.create_hunt(query=QUERY, description="audited"))

    record = await expect("create", create)
    hunt_id = created["hunt_id"]
    assert record["target"] == hunt_id
    assert len(record["details"]["spec_hash"]) == 64
    await expect("start", lambda: api.start_hunt(hunt_id=hunt_id), hunt_id)
    await expect("pause", lambda: api.pause_hunt(hunt_id=hunt_id), hunt_id)
    record = await expect("set", lambda: api.set_hunt(hunt_id=hunt_id, rate=5), hunt_id)
    assert record["details"]["changed"] == {"rate": [0, 5]}
    await expect("stop", lambda: api.stop_hunt(hunt_id=hunt_id), hunt_id)
    copy: dict[str, Any] = {}

    async def copy_hunt() -> None:
        copy.update(await api.copy_hunt(hunt_id=hunt_id))

    record = await expect("copy", copy_hunt)
    assert record["target"] == copy["hunt_id"] and record["details"]["copied_from"] == hunt_id
    assert record["details"]["spec_hash"] == server.hunts.get(copy["hunt_id"]).spec_hash
    await expect("archive", lambda: api.archive_hunt(hunt_id=hunt_id), hunt_id)
    await expect("query_hunt", lambda: api.query_hunt(hunt_id=hunt_id, query=QUERY), hunt_id)
    await expect("export", lambda: drain(api.export_hunt(hunt_id=hunt_id)), hunt_id)
    await expect("delete", lambda: api.delete_hunt(hunt_id=copy["hunt_id"]), copy["hunt_id"])

    flow: dict[str, Any] = {}

    async def collect() -> None:
        flow.update(await api.schedule_collection(client_id=client_id, query=QUERY))

    record = await expect("collect", collect)
    assert record["target"] == f"{client_id}/{flow['flow_id']}"
    await expect("cancel", lambda: api.cancel_flow(client_id=client_id,
                                                   flow_id=flow["flow_id"]),
                 f"{client_id}/{flow['flow_id']}")
    events: list[dict[str, Any]] = []

    async def collect_streaming() -> None:
        async for event in api.collect(client_id=client_id, query=QUERY):
            events.append(event)
            break  # the flow is scheduled (and audited) before its first event

    await expect("collect", collect_streaming)
    await expect("label", lambda: api.label_client(client_id=client_id, add=["x"]), client_id)
    await expect("revoke", lambda: api.revoke_client(client_id=client_id), client_id)

    # Settings, operators and four-eyes approval (the approval by a second operator)
    record = await expect("setting", lambda: api.set_setting(key="approvals",
                                                             value="required"), "approvals")
    assert record["details"] == {"old": "off", "new": "required"}
    added: dict[str, Any] = {}

    async def add_operator() -> None:
        added.update(await api.add_operator(name="vera", role="approver"))

    record = await expect("operator_add", add_operator, "vera")
    assert "token" not in str(record["details"]) and added["token"] not in str(record)
    gated = (await api.create_hunt(query=QUERY, description="four eyes"))["hunt_id"]
    gated_hash = server.hunts.get(gated).spec_hash
    record = await expect("request_approval",
                          lambda: api.request_approval(hunt_id=gated, reason="triage"), gated)
    assert record["details"] == {"reason": "triage", "spec_hash": gated_hash}
    async with await RemoteService.connect(server.url, added["token"],
                                           server.datastore.ca_pem()) as vera:
        record = await expect("approve", lambda: vera.approve_hunt(hunt_id=gated), gated)
        assert (record["actor"], record["details"]) == ("vera", {"spec_hash": gated_hash})
        await api.set_hunt(hunt_id=gated, rate=7)  # voids it: a new request, rejected
        await api.request_approval(hunt_id=gated)
        record = await expect("reject", lambda: vera.reject_hunt(hunt_id=gated,
                                                                 reason="too fast"), gated)
        assert record["details"]["spec_hash"] == server.hunts.get(gated).spec_hash != gated_hash
    record = await expect("operator_role",
                          lambda: api.set_operator_role(name="vera", role="reader"), "vera")
    assert record["details"] == {"old": "approver", "new": "reader"}
    await expect("operator_remove", lambda: api.remove_operator(name="vera"), "vera")

    # Every action the service has that this server can perform here was met (relaunch needs
    # clients in errors: its refusal is below; importing artifacts is its own test)
    local = {action for method, (action, _) in ACTIONS.items() if hasattr(Service, method)}
    assert local - seen == {"relaunch", "import_artifacts"}
    assert actors == {"admin", "vera"}  # the operator who acted, each time
    assert (await api.verify_audit())["intact"]


async def test_a_refused_action_writes_one_refused_record_and_a_read_none(
    api: RemoteService,
) -> None:
    hunt = await api.create_hunt(query=QUERY)
    hunt_id = hunt["hunt_id"]
    await api.start_hunt(hunt_id=hunt_id)

    record = await one_record(api, lambda: api.start_hunt(hunt_id=hunt_id))
    assert record["outcome"] == "refused"
    assert (record["action"], record["target"]) == ("start", hunt_id)
    assert record["reason"] == f"{hunt_id} is already running"

    record = await one_record(api, lambda: api.relaunch_hunt(hunt_id=hunt_id))
    assert (record["action"], record["outcome"]) == ("relaunch", "refused")
    assert "no clients in errors" in record["reason"]

    # A refusal before the service runs (its arguments) and one inside a stream
    record = await one_record(api, lambda: api.create_hunt(query="SELECT FROM"))
    assert (record["action"], record["outcome"]) == ("create", "refused")
    assert record["details"] == {"query": "SELECT FROM"}
    record = await one_record(api, lambda: drain(api.export_hunt(hunt_id=hunt_id,
                                                                 format="xml")))
    assert (record["action"], record["outcome"]) == ("export", "refused")
    record = await one_record(api, lambda: api.query_hunt(hunt_id=hunt_id,
                                                          query="SELECT * FROM info()"))
    assert (record["action"], record["outcome"]) == ("query_hunt", "refused")

    before = await records(api)
    with pytest.raises(RemoteError):
        await api.get_hunt(hunt_id="H.0000000000XXX")
    with pytest.raises(RemoteError):
        await api.hunt_log(hunt_id="nonsense")
    assert await records(api) == before
    check = await api.verify_audit()
    assert check == {"intact": True, "records": len(before), "broken_at": None,
                     "problem": ""}


async def test_importing_artifacts_writes_one_record(api: RemoteService) -> None:
    definition = ("name: Custom.Audited\nsources:\n  - query: SELECT 1 AS One FROM scope()\n")
    record = await one_record(api, lambda: api.import_artifacts(
        definitions=[{"origin": "audited.yaml", "text": definition}]))
    assert (record["action"], record["target"], record["outcome"]) == (
        "import_artifacts", "Custom.Audited", "allowed")
    record = await one_record(api, lambda: api.import_artifacts(
        definitions=[{"origin": "bad.yaml", "text": "name: [unclosed"}]))
    assert (record["action"], record["outcome"]) == ("import_artifacts", "refused")
    assert "definitions" not in record["details"]
