"""An agent killed mid-collection and started again: real `velotui serve`, a real `velotui-agent`
process killed with SIGKILL once part of the rows are acknowledged, restarted on the same state
folder. The collection must finish with every row (and every uploaded file) exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from agent.config import MIN_OUTBOX_MAX_BYTES
from agent.flow_progress import FLOW_KEY
from agent.outbox_file import OutboxFile
from agent.state import OUTBOX_FILE_NAME
from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    wait_for_clients,
    write_agent_config,
)
from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix", reason="SIGKILL"),
]

ROW_COUNT = 400_000
# Rows of about 100 bytes, and an agent keeping at most 4 MiB unacknowledged: it cannot run more
# than ~40,000 rows ahead of the server, so the kill, right after the first rows are stored,
# always comes before the query has ended (not only when the machine happens to be fast).
PAD = "x" * 90
OUTBOX_MAX_BYTES = MIN_OUTBOX_MAX_BYTES
GUARD = 120  # seconds before a hanging step fails; never a measure of speed


@pytest.fixture
def fleet(tmp_path: Path):
    """A server process and one agent process, enrolled and online."""
    datastore = tmp_path / "datastore"
    server = ServerProcess(datastore)
    Datastore.open(datastore)  # first open creates the CA, secrets and token
    server.start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "outbox_max_bytes": OUTBOX_MAX_BYTES}))
    agent = AgentProcess(config, tmp_path / "agent-state").start()
    with running(server, agent):
        [client] = wait_for_clients(datastore, 1)
        yield server, agent, client["client_id"]


async def operator_api(server: ServerProcess) -> RemoteService:
    datastore = Datastore.open(server.datastore)
    return await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())


async def kill_once_some_is_acknowledged(
    api: RemoteService, agent: AgentProcess, client_id: str, flow_id: str, counter: str
) -> dict:
    """SIGKILL the agent as soon as the server holds some of the flow's ``counter`` (rows or
    bytes); the flow as the server had it just before."""
    deadline = time.monotonic() + GUARD
    while (flow := await api.flow(client_id=client_id, flow_id=flow_id))[counter] == 0:
        assert flow["state"] in ("queued", "running"), flow
        assert time.monotonic() < deadline, f"gave up waiting for the flow's first {counter}"
        await asyncio.sleep(0.01)
    assert agent.process is not None
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(timeout=30)
    agent.process = None
    return flow


def unfinished_on_the_agent(state: Path, flow_id: str) -> dict:
    """What the killed agent's outbox kept of the flow, which must not have put its Status yet:
    otherwise the kill came too late to test a restart mid-query."""
    file = OutboxFile(state / OUTBOX_FILE_NAME)
    try:
        stored = {flow.flow_id: flow for flow in file.load().flows}
    finally:
        file.close()
    assert flow_id in stored, "the agent kept nothing of the flow"
    assert stored[flow_id].status_seq == 0, "the kill came after the query ended"
    return stored[flow_id].progress[FLOW_KEY]


async def follow_to_the_end(api: RemoteService, client_id: str, flow_id: str) -> dict:
    status = None
    async for event in api.follow(client_id=client_id, flow_id=flow_id):
        if event["event"] == "status":
            status = event
    assert status is not None
    return status


async def test_a_killed_agent_resumes_its_collection_and_every_row_arrives_once(fleet) -> None:
    server, agent, client_id = fleet
    api = await operator_api(server)
    async with api:
        flow = await api.schedule_collection(
            client_id=client_id,
            query=f"SELECT _value, '{PAD}' AS Pad FROM range(start=0, end={ROW_COUNT})"
        )
        flow_id = flow["flow_id"]
        before = await kill_once_some_is_acknowledged(api, agent, client_id, flow_id, "rows")
        kept = unfinished_on_the_agent(agent.state, flow_id)
        assert 0 < before["rows"] <= kept["rows_sent"] < ROW_COUNT

        # The same state folder; now with the default bound, so that the query resumed before
        # the agent is back online is not refused for a full outbox.
        agent.config.write_text(json.dumps({
            key: value for key, value in json.loads(agent.config.read_text()).items()
            if key != "outbox_max_bytes"}))
        agent.start()
        status = await follow_to_the_end(api, client_id, flow_id)
        values = [row["_value"] async for event in api.flow_results(
            client_id=client_id, flow_id=flow_id) for row in event["rows"]]

    assert (status["state"], status["error"]) == ("finished", None)
    assert len(values) == ROW_COUNT  # nothing twice...
    assert sorted(values) == list(range(ROW_COUNT))  # ...and nothing missing
    assert status["rows"] == ROW_COUNT


async def test_a_killed_agent_resumes_its_uploads_and_every_file_arrives_once(
    fleet, tmp_path: Path
) -> None:
    server, agent, client_id = fleet
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    hashes = {}
    for index in range(6):
        data = os.urandom(1_500_000 + index)  # three chunks each
        (evidence / f"file-{index}.bin").write_bytes(data)
        hashes[f"file-{index}.bin"] = hashlib.sha256(data).hexdigest()
    # The pause after each file keeps the query running while the agent is killed.
    query = (f"SELECT Name, upload(file=OSPath, name=Name) AS Upload, sleep(time=0.3) AS Pause"
             f" FROM glob(globs='{evidence}/*.bin')")
    api = await operator_api(server)
    async with api:
        flow = await api.schedule_collection(client_id=client_id, query=query)
        flow_id = flow["flow_id"]
        await kill_once_some_is_acknowledged(api, agent, client_id, flow_id, "bytes")
        kept = unfinished_on_the_agent(agent.state, flow_id)
        assert 0 < kept["uploaded_bytes"] < sum(1_500_000 + i for i in range(6))

        agent.start()
        status = await follow_to_the_end(api, client_id, flow_id)
        rows = [row async for event in api.flow_results(client_id=client_id, flow_id=flow_id)
                for row in event["rows"]]

    assert (status["state"], status["error"]) == ("finished", None)
    assert sorted(row["Name"] for row in rows) == sorted(hashes)
    assert {row["Name"]: row["Upload"]["sha256"] for row in rows} == hashes
    uploads = status["uploads"]
    assert sorted(upload["name"] for upload in uploads) == sorted(hashes)  # each file once
    for upload in uploads:
        assert upload["complete"] and upload["sha256"] == hashes[upload["name"]]
        stored = server.datastore / "uploads" / upload["path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashes[upload["name"]]
    assert status["bytes"] == sum(1_500_000 + i for i in range(6))
