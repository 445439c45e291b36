"""A flow the agent stops mid-way and runs again from its outbox file: real VQL, a real Outbox in
a temporary folder, closed and opened again as a restarted agent does. What the server would
receive (each seq once, in order, the same bytes whenever a seq is sent again) is checked on the
frames read back from the file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.flow_progress import FlowProgress
from agent.flow_runner import UPLOAD_CHUNK_BYTES, FlowRunner
from agent.outbox import Outbox
from agent.outbox_file import OutboxFile
from agent.plugins import client_registry
from velotui.vql import Registry
from velotui.wire.protocol import FlowRequest, Message, Status, decode, encode

GUARD = 30  # seconds before a test that hangs fails instead; never a measure of speed


class Server:
    """What a server would make of the frames it receives: each (flow, seq) applied once, in
    order; a seq received again must carry the same bytes."""

    def __init__(self) -> None:
        self.frames: dict[int, bytes] = {}

    async def receive(self, outbox: Outbox, acknowledge: int = 0) -> None:
        """Take every frame the outbox keeps; acknowledge the first ``acknowledge`` of them."""
        await outbox.flush()
        entries = outbox.entries()
        for entry in entries:
            frame = await outbox.read_frame(entry)
            assert frame is not None
            if entry.seq in self.frames:
                assert self.frames[entry.seq] == frame, f"seq {entry.seq} changed"
            self.frames[entry.seq] = frame
        for entry in entries[:acknowledge]:
            outbox.ack(entry.flow_id, entry.seq)

    @property
    def messages(self) -> list[Message]:
        assert sorted(self.frames) == list(range(1, len(self.frames) + 1)), "a seq is missing"
        return [decode(self.frames[seq], "agent") for seq in sorted(self.frames)]

    def rows(self) -> list[dict[str, Any]]:
        found = []
        for message in self.messages:
            found += message.rows if message.TYPE == "rows" else []
            found += message.final_rows if message.TYPE == "status" else []
        return found

    def of_type(self, kind: str) -> list[Any]:
        return [message for message in self.messages if message.TYPE == kind]


def registry_with(*plugins: Any) -> Registry:
    registry = client_registry(labels=["Test"]).child()
    for plugin in plugins:
        registry.plugin(plugin)
    return registry


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


async def stop_the_agent(task: asyncio.Task, outbox: Outbox) -> None:
    """What SIGTERM does: the flow is cancelled without a Status, the outbox written and closed."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await outbox.close()


async def restart(path: Path, registry: Registry, **options: Any) -> tuple[Outbox, FlowRunner]:
    """The outbox opened again and the one flow it gives back, ready to run."""
    outbox = Outbox.open(path, **options)
    [stored] = outbox.flows_to_resume()
    request = decode(stored.request, "server")
    return outbox, FlowRunner(request, outbox, registry,
                              FlowProgress.from_records(stored.progress))


async def start_waiting_for_space(
    path: Path, request: FlowRequest, registry: Registry, max_bytes: int
) -> tuple[Outbox, asyncio.Task]:
    """A flow running into a small outbox that nobody acknowledges: it fills it and waits."""
    outbox = Outbox.open(path, max_bytes=max_bytes)
    outbox.server_connected = True
    task = asyncio.create_task(FlowRunner(request, outbox, registry).run())
    await until(lambda: outbox.waiting_for_space, "the flow to wait for space")
    return outbox, task


async def test_a_stopped_flow_resumes_and_every_row_is_sent_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.rows", query="SELECT _value FROM range(end=10000)")
    registry = client_registry(labels=[])
    outbox, task = await start_waiting_for_space(path, request, registry, 40_000)
    server = Server()
    await server.receive(outbox, acknowledge=1)
    await stop_the_agent(task, outbox)

    outbox, runner = await restart(path, registry)
    assert 0 < runner.rows_sent < 10_000
    status = await asyncio.wait_for(runner.run(), GUARD)
    await server.receive(outbox)

    assert [row["_value"] for row in server.rows()] == list(range(10_000))
    assert (status.state, status.rows) == ("finished", 10_000)
    assert server.messages[-1] == status


async def test_a_half_sent_upload_continues_at_its_byte_under_its_id(tmp_path: Path) -> None:
    data = os.urandom(4 * UPLOAD_CHUNK_BYTES + 777)
    file = tmp_path / "memory.bin"
    file.write_bytes(data)
    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.up", query=f"SELECT upload(file='{file}') AS U FROM scope()")
    registry = client_registry(labels=[])
    outbox, task = await start_waiting_for_space(path, request, registry,
                                                 2 * UPLOAD_CHUNK_BYTES + 1000)
    server = Server()
    await server.receive(outbox)
    assert len(server.of_type("upload")) == 2  # two chunks put, the third waits
    await stop_the_agent(task, outbox)

    outbox, runner = await restart(path, registry)
    status = await asyncio.wait_for(runner.run(), GUARD)
    await server.receive(outbox)

    chunks = server.of_type("upload")
    assert {chunk.upload_id for chunk in chunks} == {0}
    assert [chunk.offset for chunk in chunks] == [n * UPLOAD_CHUNK_BYTES for n in range(5)]
    assert b"".join(chunk.data for chunk in chunks) == data
    assert [chunk.eof for chunk in chunks] == [False] * 4 + [True]
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    [row] = server.rows()
    assert row["U"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["U"]["md5"] == hashlib.md5(data).hexdigest()
    assert (status.state, status.bytes) == ("finished", len(data))


async def test_a_finished_upload_is_not_sent_again_after_a_restart(tmp_path: Path) -> None:
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(b"1" * 1000)
    second.write_bytes(b"2" * 2000)
    before_restart = asyncio.Event()
    hold = asyncio.Event()

    async def files(scope: Any) -> Any:
        yield {"path": str(first)}
        before_restart.set()
        await hold.wait()  # the agent stops here, the first upload done
        yield {"path": str(second)}

    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.two", query="SELECT upload(file=path) AS U FROM files()")
    outbox = Outbox.open(path)
    task = asyncio.create_task(FlowRunner(request, outbox, registry_with(files)).run())
    await asyncio.wait_for(before_restart.wait(), GUARD)
    server = Server()
    await server.receive(outbox)
    await stop_the_agent(task, outbox)

    hold.set()  # the query runs through after the restart
    outbox, runner = await restart(path, registry_with(files))
    status = await asyncio.wait_for(runner.run(), GUARD)
    await server.receive(outbox)

    chunks = server.of_type("upload")
    assert [(chunk.upload_id, len(chunk.data)) for chunk in chunks] == [(0, 1000), (1, 2000)]
    assert [row["U"]["sha256"] for row in server.rows()] == [
        hashlib.sha256(b"1" * 1000).hexdigest(), hashlib.sha256(b"2" * 2000).hexdigest()]
    assert (status.state, status.bytes) == ("finished", 3000)


async def test_a_file_changed_during_the_restart_is_uploaded_anew_under_a_new_id(
    tmp_path: Path,
) -> None:
    file = tmp_path / "log.bin"
    file.write_bytes(os.urandom(3 * UPLOAD_CHUNK_BYTES))
    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.up", query=f"SELECT upload(file='{file}') AS U FROM scope()")
    registry = client_registry(labels=[])
    outbox, task = await start_waiting_for_space(path, request, registry,
                                                 UPLOAD_CHUNK_BYTES + 1000)
    server = Server()
    await server.receive(outbox)
    await stop_the_agent(task, outbox)
    changed = os.urandom(3 * UPLOAD_CHUNK_BYTES)
    file.write_bytes(changed)

    outbox, runner = await restart(path, registry)
    status = await asyncio.wait_for(runner.run(), GUARD)
    await server.receive(outbox)

    chunks = server.of_type("upload")
    cut_short = [chunk for chunk in chunks if chunk.upload_id == 0]
    anew = [chunk for chunk in chunks if chunk.upload_id == 1]
    assert [chunk.eof for chunk in cut_short] == [False]  # left incomplete, never completed
    assert b"".join(chunk.data for chunk in anew) == changed
    assert anew[-1].sha256 == hashlib.sha256(changed).hexdigest()
    assert any("uploads differ from before" in log.message for log in server.of_type("log"))
    assert status.state == "finished"


async def test_a_restarted_flow_keeps_its_row_limit(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.limit", query="SELECT _value FROM range(end=10000)",
                          max_rows=2500)
    registry = client_registry(labels=[])
    outbox, task = await start_waiting_for_space(path, request, registry, 20_000)
    server = Server()
    await server.receive(outbox)
    await stop_the_agent(task, outbox)

    outbox, runner = await restart(path, registry)
    status = await asyncio.wait_for(runner.run(), GUARD)
    await server.receive(outbox)

    assert [row["_value"] for row in server.rows()] == list(range(2500))
    assert (status.state, status.error, status.rows) == (
        "error", "row limit of 2500 reached", 2500)


async def test_a_restarted_flow_keeps_its_original_deadline(tmp_path: Path) -> None:
    query_started = asyncio.Event()

    async def slow(scope: Any) -> Any:
        query_started.set()
        await asyncio.Event().wait()
        yield {}

    path = tmp_path / "outbox.sqlite"
    request = FlowRequest(flow_id="F.late", query="SELECT * FROM slow()", timeout=0.5)
    outbox = Outbox.open(path)
    runner = FlowRunner(request, outbox, registry_with(slow))
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(query_started.wait(), GUARD)
    await stop_the_agent(task, outbox)
    deadline = runner.progress.deadline
    while time.time() <= deadline:  # the agent is down past the flow's deadline
        await asyncio.sleep(0.05)

    query_started.clear()
    outbox, runner = await restart(path, registry_with(slow))
    status = await asyncio.wait_for(runner.run(), GUARD)

    # A fresh 0.5 s would have started the query again; the original deadline has passed.
    assert not query_started.is_set()
    assert (status.state, status.error) == ("timeout", "timed out after 0.5 seconds")


async def test_a_cancel_is_kept_with_the_flow_and_ends_it_after_a_restart(
    tmp_path: Path,
) -> None:
    query_started = asyncio.Event()

    async def endless(scope: Any) -> Any:
        query_started.set()
        await asyncio.Event().wait()
        yield {}

    # A cancel is written to the outbox file as soon as it is received...
    request = FlowRequest(flow_id="F.stop", query="SELECT * FROM endless()")
    outbox = Outbox.open(tmp_path / "first.sqlite")
    runner = FlowRunner(request, outbox, registry_with(endless))
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(query_started.wait(), GUARD)
    runner.cancel("stopped by the operator")
    await asyncio.wait_for(task, GUARD)
    await outbox.close()
    file = OutboxFile(tmp_path / "first.sqlite")
    [flow] = file.load().flows
    file.close()
    assert flow.progress["flow"]["end"] == ["cancelled", "stopped by the operator"]

    # ...so an agent killed before the flow's Status ends it so when it starts again.
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox.open(path)
    progress = FlowProgress.begin(request, time.time())
    progress.end = ("cancelled", "stopped by the operator")
    outbox.begin_flow(request.flow_id, encode(request), progress.flow_record())
    await outbox.close()
    query_started.clear()
    outbox, runner = await restart(path, registry_with(endless))
    status = await asyncio.wait_for(runner.run(), GUARD)

    assert not query_started.is_set()  # not run again
    assert (status.state, status.error) == ("cancelled", "stopped by the operator")


async def test_a_flow_refused_by_a_full_offline_outbox_ends_in_error(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox.sqlite", max_bytes=20_000)  # never connected
    request = FlowRequest(flow_id="F.big", query="SELECT _value FROM range(end=1000000)")
    status = await asyncio.wait_for(
        FlowRunner(request, outbox, client_registry(labels=[])).run(), GUARD)
    server = Server()
    await server.receive(outbox)

    assert status.state == "error"
    assert "the agent's outbox is full" in status.error
    assert server.messages[-1] == status
    values = [row["_value"] for row in server.rows()]
    assert values == list(range(len(values)))  # what was kept is whole and in order
    assert 0 < status.rows == len(values) < 1_000_000
    assert isinstance(server.messages[-1], Status)
