"""Four-eyes approval of hunts against a real server (real SQLite, real websockets, real
agents where recruitment matters): a start needs another operator's approval of the exact
specification; an edit voids it, time expires it (the hunt manager's wall clock moved, no
sleeps), nobody approves their own hunt, and a scheduled hunt without one pauses awaiting
approval. Excluded labels keep clients out of every hunt that does not name them."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from tests.fleet import Fleet, until
from tests.scripted_agent import ScriptedAgent
from velotui.server.errors import ServiceError
from velotui.server.hunt_spec import spec_hash
from velotui.server.server import Server
from velotui.server.service import Service

pytestmark = pytest.mark.both_backends

HOUR = 3600.0
QUERY = "SELECT 1 AS One FROM scope()"
LINUX = {"OS": "linux", "Fqdn": "a.example", "Hostname": "a", "Labels": []}


@pytest.fixture
def alice(server: Server) -> Service:
    return server.service("alice")


@pytest.fixture
def bob(server: Server) -> Service:
    return server.service("bob")


@pytest.fixture
async def required(server: Server) -> None:
    await server.service("admin").set_setting("approvals", "required")


async def approved_hunt(alice: Service, bob: Service, **options: object) -> str:
    hunt = await alice.create_hunt(query=QUERY, **options)
    await alice.request_approval(hunt["hunt_id"], reason="incident 7")
    await bob.approve_hunt(hunt["hunt_id"])
    return hunt["hunt_id"]


async def test_settings_default_off_and_change_is_audited(server: Server) -> None:
    admin = server.service("admin")
    assert (await admin.get_settings())["approvals"] == "off"
    settings = await admin.set_setting("approvals", "required")
    assert settings["approvals"] == "required"
    with pytest.raises(ServiceError, match="required or off"):
        await admin.set_setting("approvals", "maybe")
    with pytest.raises(ServiceError, match="no setting"):
        await admin.set_setting("colour", "blue")
    entries = await admin.audit_log()
    assert [(e["action"], e["target"], e["details"]["new"]) for e in entries] == [
        ("setting", "approvals", "required")]


async def test_start_needs_an_approval_only_when_required(server: Server, alice: Service,
                                                         bob: Service) -> None:
    hunt = await alice.create_hunt(query=QUERY)
    assert hunt["approval"]["state"] == "none"
    started = await alice.start_hunt(hunt["hunt_id"])  # approvals off: starts
    assert started["state"] == "running"

    await server.service("admin").set_setting("approvals", "required")
    other = await alice.create_hunt(query=QUERY)
    with pytest.raises(ServiceError, match="needs an approval"):
        await alice.start_hunt(other["hunt_id"])
    listed = len(await alice.list_hunts())
    with pytest.raises(ServiceError, match="approvals are required: create the hunt without"):
        await alice.create_hunt(query=QUERY, start=True)
    assert len(await alice.list_hunts()) == listed  # refused before anything was created
    await alice.request_approval(other["hunt_id"])
    with pytest.raises(ServiceError, match="awaiting approval"):
        await alice.start_hunt(other["hunt_id"])
    approved = await bob.approve_hunt(other["hunt_id"])
    assert approved["approval"]["state"] == "approved"
    assert approved["approval"]["decided_by"] == "bob"
    assert approved["approval"]["spec_hash"] == approved["spec_hash"]
    assert (await alice.start_hunt(other["hunt_id"]))["state"] == "running"
    # Resuming a paused hunt is a start too: the approval still holds.
    await alice.pause_hunt(other["hunt_id"])
    assert (await alice.start_hunt(other["hunt_id"]))["state"] == "running"
    actions = [e["action"] for e in await alice.audit_log()]
    assert "request_approval" in actions and "approve" in actions


async def test_an_edit_voids_the_approval_but_a_description_does_not(
        server: Server, alice: Service, bob: Service, required: None) -> None:
    hunt_id = await approved_hunt(alice, bob, rate=10)
    before = server.hunts.get(hunt_id).spec_hash
    await alice.set_hunt(hunt_id, description="reworded")
    assert (await alice.get_hunt(hunt_id))["approval"]["state"] == "approved"
    changed = await alice.set_hunt(hunt_id, rate=20)
    assert changed["spec_hash"] != before
    assert changed["approval"]["state"] == "void"
    with pytest.raises(ServiceError, match="void"):
        await alice.start_hunt(hunt_id)
    with pytest.raises(ServiceError, match="request is void"):
        await bob.approve_hunt(hunt_id)  # the old request is void: ask again
    await alice.request_approval(hunt_id)
    await bob.approve_hunt(hunt_id)
    assert (await alice.start_hunt(hunt_id))["state"] == "running"


async def test_a_change_after_the_request_voids_it_before_its_decision(
        alice: Service, bob: Service, required: None) -> None:
    hunt = await alice.create_hunt(query=QUERY)
    await alice.request_approval(hunt["hunt_id"])
    await alice.set_hunt(hunt["hunt_id"], limit=5)
    with pytest.raises(ServiceError, match="void"):
        await bob.approve_hunt(hunt["hunt_id"])


async def test_an_expired_approval_is_refused(server: Server, alice: Service, bob: Service,
                                              required: None) -> None:
    await server.service("admin").set_setting("approval_hours", "2")
    hunt_id = await approved_hunt(alice, bob)
    hunt = await alice.get_hunt(hunt_id)
    assert hunt["approval"]["expires"] == pytest.approx(time.time() + 2 * HOUR, abs=60)
    server.hunts.wall_clock = lambda: time.time() + 3 * HOUR
    with pytest.raises(ServiceError, match="expired"):
        await alice.start_hunt(hunt_id)
    server.hunts.wall_clock = lambda: time.time() + 1 * HOUR  # still within its two hours
    assert (await alice.start_hunt(hunt_id))["state"] == "running"


async def test_nobody_approves_their_own_hunt(server: Server, alice: Service, bob: Service,
                                              required: None) -> None:
    hunt = await alice.create_hunt(query=QUERY)
    await alice.request_approval(hunt["hunt_id"])
    with pytest.raises(ServiceError, match="nobody approves their own hunt: alice created"):
        await alice.approve_hunt(hunt["hunt_id"])
    # Nor the one who asked for the approval of another's hunt.
    other = await alice.create_hunt(query=QUERY)
    await bob.request_approval(other["hunt_id"])
    with pytest.raises(ServiceError, match="bob asked to approve"):
        await bob.approve_hunt(other["hunt_id"])
    with pytest.raises(ServiceError, match="own hunt"):
        await bob.reject_hunt(other["hunt_id"], "no")
    assert server.hunts.get(other["hunt_id"]).approval_state() == "pending"
    assert (await server.service("carol").approve_hunt(other["hunt_id"]))[
        "approval"]["state"] == "approved"


async def test_a_rejected_request(alice: Service, bob: Service, required: None) -> None:
    hunt = await alice.create_hunt(query=QUERY)
    await alice.request_approval(hunt["hunt_id"], reason="please")
    pending = await bob.list_approvals()
    assert [h["hunt_id"] for h in pending] == [hunt["hunt_id"]]
    assert pending[0]["approval"]["request_reason"] == "please"
    with pytest.raises(ServiceError, match="reason"):
        await bob.reject_hunt(hunt["hunt_id"], "")
    rejected = await bob.reject_hunt(hunt["hunt_id"], "too broad")
    assert rejected["approval"]["state"] == "rejected"
    assert rejected["approval"]["reason"] == "too broad"
    assert await bob.list_approvals() == []
    with pytest.raises(ServiceError, match="rejected by bob: too broad"):
        await alice.start_hunt(hunt["hunt_id"])
    with pytest.raises(ServiceError, match="no approval request pending"):
        await bob.approve_hunt(hunt["hunt_id"])


async def test_a_scheduled_hunt_without_approval_pauses_awaiting_it(
        server: Server, alice: Service, bob: Service, required: None, tmp_path: Path) -> None:
    agent = await ScriptedAgent(server, tmp_path / "scripted", LINUX).connect()
    try:
        waiting = await alice.create_hunt(query=QUERY, start_at="+1h")
        ready = await alice.create_hunt(query=QUERY, start_at="+1h")
        await alice.request_approval(ready["hunt_id"])
        await bob.approve_hunt(ready["hunt_id"])
        server.hunts.wall_clock = lambda: time.time() + 2 * HOUR
        assert await server.hunts.start_due() == [ready["hunt_id"]]
        paused = await alice.get_hunt(waiting["hunt_id"])
        assert (paused["state"], paused["stop_reason"]) == ("paused", "awaiting approval")
        await until(lambda: agent.flows_received(), what="the approved hunt checks the agent")
        assert all(waiting["hunt_id"] not in flow for flow in agent.flows_received())
    finally:
        await agent.close()


async def test_relaunch_is_gated_before_anything_is_put_back(
        server: Server, alice: Service, bob: Service, tmp_path: Path) -> None:
    agent = await ScriptedAgent(server, tmp_path / "scripted", LINUX).connect()
    try:
        hunt = await alice.create_hunt(query=QUERY, start=True)
        hunt_id = hunt["hunt_id"]
        request = await agent.next_collection()
        await agent.status(request.flow_id, "error", error="boom")
        await until(lambda: server.hunts.get(hunt_id).counts["errors"] == 1)
        await alice.stop_hunt(hunt_id)
        await server.service("admin").set_setting("approvals", "required")
        with pytest.raises(ServiceError, match="needs an approval"):
            await alice.relaunch_hunt(hunt_id)
        assert server.hunts.get(hunt_id).counts["errors"] == 1  # nobody put back
        await alice.request_approval(hunt_id)
        await bob.approve_hunt(hunt_id)
        relaunched = await alice.relaunch_hunt(hunt_id)
        assert (relaunched["relaunched"], relaunched["state"]) == (1, "running")
    finally:
        await agent.close()


def test_spec_hash_covers_the_specification_not_the_description(server: Server) -> None:
    from velotui.server.data import HuntRecord

    hunt = HuntRecord(hunt_id="H.1", query=QUERY, client_condition="SELECT 1 FROM scope()",
                      server_condition="", description="a", rate=10, client_limit=0,
                      expires=1e9, timeout=600, max_rows=1, max_upload_bytes=1, state="paused",
                      created=0)
    first = spec_hash(hunt)
    assert len(first) == 64
    hunt.description = "b"
    assert spec_hash(hunt) == first
    hunt.rate = 10.0  # the same number
    assert spec_hash(hunt) == first
    for name, value in [("server_condition", "SELECT * FROM rows"), ("max_uploads", 3),
                        ("max_errors", 5), ("artifacts", "[{\"name\": \"X\"}]"),
                        ("expires", 2e9), ("max_errors_percent", 5.0)]:
        changed = HuntRecord(**{**hunt.__dict__, name: value})
        assert spec_hash(changed) != first, name


# Excluded labels ---------------------------------------------------------------------------------

@pytest.fixture
async def labelled(server: Server, fleet: Fleet) -> tuple[str, str]:
    """Two real agents online; the second's configuration labels it no-hunt, excluded."""
    plain = fleet.start("plain", {**LINUX, "Hostname": "plain"})
    fleet.config = dataclasses.replace(fleet.config, labels=["no-hunt"])
    kept_out = fleet.start("kept-out", {**LINUX, "Hostname": "kept-out"})
    await fleet.online(plain, kept_out)
    assert server.directory.get(kept_out).labels == ["no-hunt"]
    await server.service("admin").set_setting("excluded_labels", "no-hunt")
    return plain, kept_out


async def hunt_clients(api: Service, hunt_id: str) -> set[str]:
    return {row["client_id"] for row in await api.hunt_clients(hunt_id)}


async def test_a_client_with_an_excluded_label_is_not_recruited(
        server: Server, alice: Service, labelled: tuple[str, str]) -> None:
    plain, _kept_out = labelled
    hunt = await alice.create_hunt(query=QUERY, start=True)
    await until(lambda: server.hunts.get(hunt["hunt_id"]).counts["results"] == 1,
                what="the plain client's results")
    assert await hunt_clients(alice, hunt["hunt_id"]) == {plain}
    estimate = await alice.estimate_hunt()
    assert (estimate["total"], estimate["excluded"], estimate["matched"]) == (2, 1, 1)


async def test_a_hunt_naming_the_label_recruits_its_clients(
        server: Server, alice: Service, labelled: tuple[str, str]) -> None:
    plain, kept_out = labelled
    condition = "SELECT * FROM rows WHERE 'no-hunt' IN Labels"
    estimate = await alice.estimate_hunt(server_condition=condition)
    assert estimate["excluded"] == 0
    hunt = await alice.create_hunt(query=QUERY, server_condition=condition, start=True)
    await until(lambda: server.hunts.get(hunt["hunt_id"]).counts["results"] == 1,
                what="the labelled client's results")
    await until(lambda: server.hunts.get(hunt["hunt_id"]).counts["not_matched"] == 1,
                what="the plain client judged")
    assert await hunt_clients(alice, hunt["hunt_id"]) == {plain, kept_out}
