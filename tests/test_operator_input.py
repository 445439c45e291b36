"""Operator input: every operator API method, called over the real operator websocket with
arbitrary arguments, is done or refused with one line; never "internal error", never a dropped
connection, and the server carries on."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.processes import ServerProcess, velotui
from tests.scripted_agent import ScriptedAgent
from velotui.server.datastore import Datastore
from velotui.server.operator_api import METHODS
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.server import Server
from velotui.server.service import Service

KNOWN: dict[str, Any] = {}  # real IDs of the test's server, so checks go deeper than the first

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
    | st.sampled_from(["7d", "inf", "nan", "-1", "1e309", "0", "SELECT * FROM info()",
                       "C.0000000000000000", "H.NOSUCHHUNT00", "F.0000000000.H", "../x", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8,
)


@st.composite
def requests(draw: Any) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(METHODS)))
    parameters = list(inspect.signature(getattr(Service, name)).parameters)[1:]
    params: dict[str, Any] = {}
    for parameter in parameters:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            continue  # left out
        if choice == 1 and parameter in ("client_id", "hunt_id", "flow_id"):
            params[parameter] = KNOWN[parameter]
        else:
            params[parameter] = draw(json_values)
    if draw(st.booleans()):
        params[draw(st.text(max_size=6))] = draw(json_values)  # an argument nobody takes
    return name, params


@pytest.fixture
async def remote(server: Server, tmp_path: Path) -> Any:
    agent = await ScriptedAgent(server, tmp_path / "agent", {"OS": "linux"}).connect()
    api = server.service("tester")
    hunt = await api.create_hunt(query="SELECT * FROM info()")
    flow = await api.schedule_collection(agent.client_id, "SELECT 1 AS One FROM scope()")
    KNOWN.update(client_id=agent.client_id, hunt_id=hunt["hunt_id"], flow_id=flow["flow_id"])
    connection = await RemoteService.connect(server.url, server.datastore.api_token(),
                                             server.datastore.ca_pem())
    yield connection
    await connection.close()
    await agent.close()


async def call(remote: RemoteService, name: str, params: dict[str, Any]) -> None:
    if METHODS[name]:
        async with contextlib.aclosing(remote.stream(name, **params)) as events:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # a follow may wait for ever: a first look
                    async for _event in events:
                        break
    else:
        await remote.call(name, **params)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
async def test_every_method_does_or_refuses_in_one_line(remote: RemoteService,
                                                        request: tuple[str, dict[str, Any]]
                                                        ) -> None:
    name, params = request
    try:
        await call(remote, name, params)
    except RemoteError as refusal:
        message = str(refusal)
        assert message and "\n" not in message, message
        assert "internal error" not in message, (name, params, message)
        assert "connection to the server closed" not in message, (name, params)
    # The server carries on: the same connection still answers.
    assert (await remote.call("server_info"))["version"]


@pytest.mark.parametrize(("arguments", "refusal"), [
    (["--rate", "inf"], "rate must be a finite number"),
    (["--rate", "nan"], "rate must be a finite number"),
    (["--rate", "-5"], "rate must be between 0"),
    (["--limit", "-1"], "limit must be between 0"),
    (["--expires", "forever"], "expires"),
    (["--timeout", "1e400"], "timeout must be a finite number"),
])
def test_the_command_line_refuses_nonsense_in_one_line(tmp_path: Path, arguments: list[str],
                                                       refusal: str) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    try:
        result = velotui("hunt", "create", "--datastore", str(datastore), "--query",
                         "SELECT * FROM info()", *arguments)
        assert result.returncode in (1, 2), result
        assert refusal in result.stderr and result.stderr.count("\n") == 1, result.stderr
        listed = velotui("hunt", "list", "--datastore", str(datastore))
        assert listed.stdout.strip() == "no hunts yet"
    finally:
        server.stop()


def test_finite_checks_cover_what_json_can_carry() -> None:
    # Python's json module reads NaN and Infinity: the API must treat them as the numbers
    # they become.
    import json

    assert math.isnan(json.loads("NaN")) and math.isinf(json.loads("Infinity"))
