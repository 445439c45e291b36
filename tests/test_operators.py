"""Operators and roles through the operator API on a real websocket, over a real SQLite file:
each role against every public method (allowed, or refused with the line naming the role it
needs), tokens kept only as hashes, a removed operator refused at its next call, a changed role
applied at the next call, and the last admin kept."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.postgres import execute_by_hand
from velotui.server.operator_api import METHODS
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.roles import ROLES, allows, required_role
from velotui.server.server import Server
from velotui.server.service import Service

pytestmark = pytest.mark.both_backends

QUERY = "SELECT * FROM info()"


async def connect(server: Server, token: str) -> RemoteService:
    return await RemoteService.connect(server.url, token, server.datastore.ca_pem())


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[RemoteService]:
    """The first admin: the datastore's api_token."""
    remote = await connect(server, server.datastore.api_token())
    try:
        yield remote
    finally:
        await remote.close()


async def refusal_of(remote: RemoteService, method: str) -> str:
    """What the server answers ``method`` called with an argument no method takes: the role
    check comes first, so a refusal is the role's line, an allowed call fails on the argument
    (and so changes nothing)."""
    with pytest.raises(RemoteError) as refused:
        if METHODS[method]:
            async for _event in remote.stream(method, no_such_argument=1):
                pass
        else:
            await remote.call(method, no_such_argument=1)
    return str(refused.value)


def test_every_public_method_states_a_role() -> None:
    unmarked = [name for name in METHODS if required_role(getattr(Service, name)) not in ROLES]
    assert unmarked == []
    assert len(METHODS) > 40  # every method, not a few


def test_the_roles_follow_the_issue() -> None:
    """Reader reads; analyst exports and queries; hunter creates, changes and stops hunts, labels
    clients and runs collections; admin deletes, revokes and manages operators."""
    expected = {
        "reader": ["server_info", "list_hunts", "get_hunt", "hunt_results_page", "list_clients",
                   "audit_log", "hunt_log", "flow", "watch_hunts", "client_history"],
        "analyst": ["export_hunt", "query_hunt"],
        "hunter": ["create_hunt", "copy_hunt", "set_hunt", "stop_hunt", "pause_hunt",
                   "start_hunt", "archive_hunt", "label_client", "collect",
                   "schedule_collection", "cancel_flow"],
        "admin": ["delete_hunt", "revoke_client", "add_operator", "list_operators",
                  "remove_operator", "set_operator_role"],
    }
    for role, methods in expected.items():
        assert {name: required_role(getattr(Service, name)) for name in methods} == \
            dict.fromkeys(methods, role)


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_against_every_method(server: Server, admin: RemoteService,
                                              role: str) -> None:
    added = await admin.add_operator(name=f"op-{role}", role=role)
    remote = await connect(server, added["token"])
    try:
        for method in METHODS:
            needed = required_role(getattr(Service, method))
            answer = await refusal_of(remote, method)
            if allows(role, needed):
                # refused on its arguments, which only a call past the role check reaches
                assert answer.startswith(f"{method}: "), (method, answer)
                assert " role; " not in answer
            else:
                assert answer == f"{method} needs the {needed} role; op-{role} is {role}"
    finally:
        await remote.close()


async def test_allowed_calls_do_their_work_and_refused_ones_change_nothing(
        server: Server, admin: RemoteService) -> None:
    reader = await connect(server, (await admin.add_operator(name="rita",
                                                             role="reader"))["token"])
    hunter = await connect(server, (await admin.add_operator(name="hugo",
                                                             role="hunter"))["token"])
    try:
        with pytest.raises(RemoteError, match=r"^create_hunt needs the hunter role; rita is"
                                              r" reader$"):
            await reader.create_hunt(query=QUERY)
        assert await reader.list_hunts() == []
        hunt = await hunter.create_hunt(query=QUERY, description="by hugo")
        assert [h["hunt_id"] for h in await reader.list_hunts()] == [hunt["hunt_id"]]
        await hunter.stop_hunt(hunt_id=hunt["hunt_id"])
        with pytest.raises(RemoteError, match=r"^delete_hunt needs the admin role; hugo is"
                                              r" hunter$"):
            await hunter.delete_hunt(hunt_id=hunt["hunt_id"])
        assert (await admin.delete_hunt(hunt_id=hunt["hunt_id"]))["hunt_id"] == hunt["hunt_id"]
        info = await hunter.server_info()
        assert info["operator"] == {"name": "hugo", "role": "hunter"}
        assert (await admin.server_info())["operator"] == {"name": "admin", "role": "admin"}
        audit = await admin.audit_log()
        assert {(a["actor"], a["action"]) for a in audit} >= {
            ("admin", "operator_add"), ("hugo", "create"), ("hugo", "stop"), ("admin", "delete")}
        # The role refusals are audited too, as refused, with the line the operator saw
        refusals = [(a["actor"], a["action"], a["reason"]) for a in audit
                    if a["outcome"] == "refused"]
        assert refusals == [
            ("rita", "create", "create_hunt needs the hunter role; rita is reader"),
            ("hugo", "delete", "delete_hunt needs the admin role; hugo is hunter")]
    finally:
        await reader.close()
        await hunter.close()


async def test_tokens_are_stored_only_as_hashes(server: Server, admin: RemoteService) -> None:
    tokens = [(await admin.add_operator(name=f"op{n}", role="reader"))["token"]
              for n in range(3)]
    tokens.append(server.datastore.api_token())
    await server.db.close()  # everything on disk, the write-ahead log folded in
    if server.db.store.dialect == "sqlite":
        database = server.datastore.database_path
        stored = b"".join(Path(f"{database}{suffix}").read_bytes()
                          for suffix in ("", "-wal") if Path(f"{database}{suffix}").exists())
        for token in tokens:
            assert token.encode() not in stored
    hashes = dict(execute_by_hand(server.datastore, "SELECT name, token_hash FROM operators"))
    # for the fixture's stop
    server.db = await type(server.db).open(server.datastore.database_target())
    assert hashes == {
        "admin": hashlib.sha256(tokens[3].encode()).hexdigest(),
        **{f"op{n}": hashlib.sha256(tokens[n].encode()).hexdigest() for n in range(3)}}


async def test_remove_refuses_an_open_connection_at_its_next_call(
        server: Server, admin: RemoteService) -> None:
    token = (await admin.add_operator(name="bob", role="hunter"))["token"]
    bob = await connect(server, token)
    watcher = await connect(server, token)
    try:
        assert await bob.list_hunts() == []
        hunts = watcher.watch_hunts()
        await admin.create_hunt(query=QUERY)
        assert (await anext(hunts))["hunt"]["state"] == "paused"  # bob's stream is live
        assert await admin.remove_operator(name="bob") == {"name": "bob", "removed": True}
        with pytest.raises(RemoteError, match=r"removed|closed"):
            await bob.list_hunts()
        with pytest.raises(RemoteError, match=r"closed"):  # the stream ended with it
            await asyncio.wait_for(anext(hunts), 30)  # a bound for a failure, not a timing
        await hunts.aclose()
    finally:
        await bob.close()
        await watcher.close()
    with pytest.raises(RemoteError):
        await connect(server, token)
    assert [o["name"] for o in await admin.list_operators()] == ["admin"]


async def test_a_role_change_applies_to_the_next_call(server: Server,
                                                      admin: RemoteService) -> None:
    carol = await connect(server, (await admin.add_operator(name="carol",
                                                            role="reader"))["token"])
    try:
        with pytest.raises(RemoteError, match=r"^create_hunt needs the hunter role; carol is"
                                              r" reader$"):
            await carol.create_hunt(query=QUERY)
        changed = await admin.set_operator_role(name="carol", role="hunter")
        assert changed == {"name": "carol", "role": "hunter", "old_role": "reader"}
        assert (await carol.create_hunt(query=QUERY))["state"] == "paused"
        await admin.set_operator_role(name="carol", role="analyst")
        with pytest.raises(RemoteError, match=r"^create_hunt needs the hunter role; carol is"
                                              r" analyst$"):
            await carol.create_hunt(query=QUERY)
    finally:
        await carol.close()


async def test_the_last_admin_stays_and_bad_input_is_one_line(admin: RemoteService) -> None:
    with pytest.raises(RemoteError, match=r"^admin is the last admin"):
        await admin.remove_operator(name="admin")
    with pytest.raises(RemoteError, match=r"^admin is the last admin"):
        await admin.set_operator_role(name="admin", role="approver")
    with pytest.raises(RemoteError, match=r"^role 'boss': one of reader, analyst"):
        await admin.add_operator(name="dave", role="boss")
    with pytest.raises(RemoteError, match=r"^operator name 'a b'"):
        await admin.add_operator(name="a b", role="reader")
    with pytest.raises(RemoteError, match=r"^no operator 'zed' \(see: velotui operator list\)$"):
        await admin.remove_operator(name="zed")
    await admin.add_operator(name="erin", role="admin")
    with pytest.raises(RemoteError, match=r"^there is already an operator 'erin'"):
        await admin.add_operator(name="erin", role="reader")
    await admin.remove_operator(name="admin")  # erin is an admin too
    with pytest.raises(RemoteError):
        await admin.list_operators()  # its own token went with it


async def test_a_session_token_acts_as_its_operator_until_removed(
        server: Server, admin: RemoteService) -> None:
    await admin.add_operator(name="viv", role="reader")
    server.add_operator_token("a-token-for-this-run-only", "viv")
    viv = await connect(server, "a-token-for-this-run-only")
    try:
        assert (await viv.server_info())["operator"] == {"name": "viv", "role": "reader"}
        await admin.remove_operator(name="viv")
        with pytest.raises(RemoteError):
            await viv.server_info()
    finally:
        await viv.close()
    with pytest.raises(ValueError, match=r"no operator 'nobody'"):
        server.add_operator_token("another", "nobody")


async def test_the_first_admin_is_made_once(server: Server, admin: RemoteService) -> None:
    """A restart with operators finds them and adds no admin; the api_token still works."""
    await admin.add_operator(name="fay", role="reader")
    await admin.close()
    await server.stop()
    again = Server(server.datastore, "127.0.0.1:0")
    await again.start()
    try:
        remote = await connect(again, again.datastore.api_token())
        names = [o["name"] for o in await remote.list_operators()]
        await remote.close()
        assert names == ["admin", "fay"]
    finally:
        await again.stop()
        await server.start()  # for the fixture's stop
