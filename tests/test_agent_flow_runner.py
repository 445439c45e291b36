"""Running flows on the agent: real VQL with the client plugins into a real Outbox (a SQLite file
in a temporary folder), read back the way the server decodes it."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.flow_runner import ROW_BATCH_BYTES, ROW_BATCH_COUNT, UPLOAD_CHUNK_BYTES, FlowRunner
from agent.outbox import Outbox
from agent.plugins import client_registry
from velotui.vql import Registry
from velotui.wire.protocol import FlowRequest, Message, Status, decode

GUARD = 30  # seconds before a test that hangs fails instead; never a measure of speed
_folder: list[Path] = []


@pytest.fixture(autouse=True)
def outbox_folder(tmp_path: Path):
    """Where ``new_outbox`` keeps its files in this test."""
    _folder[:] = [tmp_path]
    yield tmp_path
    _folder.clear()


def new_outbox(name: str = "outbox", **options: Any) -> Outbox:
    """A fresh outbox in the test's temporary folder."""
    return Outbox.open(_folder[0] / f"{name}.sqlite", **options)


async def kept_messages(outbox: Outbox) -> list[Message]:
    """Every message the outbox keeps (not acknowledged), decoded as the server would."""
    return [decode(frame, "agent") for frame in await outbox.unacked_frames()]


def registry_with(*plugins: Any) -> Registry:
    """The agent's client registry plus test plugins, in a child so nothing else sees them."""
    registry = client_registry(labels=["Test"]).child()
    for plugin in plugins:
        registry.plugin(plugin)
    return registry


async def run_flow(
    query: str,
    *,
    registry: Registry | None = None,
    outbox: Outbox | None = None,
    **limits: Any,
) -> tuple[Status, list[Message]]:
    """Run one flow to its end; its status and every message it put, decoded."""
    outbox = outbox if outbox is not None else new_outbox()
    request = FlowRequest(flow_id="F.test", query=query, **limits)
    runner = FlowRunner(request, outbox, registry or client_registry(labels=["Test"]))
    status = await asyncio.wait_for(runner.run(), GUARD)
    return status, await kept_messages(outbox)


def of_type(messages: list[Message], kind: str) -> list[Any]:
    return [message for message in messages if message.TYPE == kind]


def row_batches(messages: list[Message]) -> list[list[dict[str, Any]]]:
    """Every batch of rows sent, in order: Rows messages, then the rows riding in the Status."""
    batches = [message.rows for message in of_type(messages, "rows")]
    batches += [m.final_rows for m in of_type(messages, "status") if m.final_rows]
    return batches


class Gate:
    """A plugin ``gate()`` that yields one row, then waits until released, then yields another."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = False

    def plugin(self) -> Any:
        async def gate(scope: Any) -> Any:
            try:
                yield {"step": 1}
                self.started.set()
                await self.release.wait()
                yield {"step": 2}
            finally:
                self.closed = True

        return gate


async def test_rows_stream_in_batches_with_consecutive_seqs_and_one_final_status() -> None:
    status, messages = await run_flow("SELECT _value FROM range(end=2500)")

    assert [message.seq for message in messages] == list(range(1, len(messages) + 1))
    batches = row_batches(messages)
    assert [len(batch) for batch in batches] == [ROW_BATCH_COUNT, ROW_BATCH_COUNT, 500]
    assert [row["_value"] for batch in batches for row in batch] == list(range(2500))
    assert messages[-1] == status
    assert (status.state, status.error, status.rows, status.bytes) == ("finished", None, 2500, 0)
    assert of_type(messages, "status") == [status]


async def test_a_batch_is_cut_at_about_a_mebibyte_of_rows() -> None:
    async def wide(scope: Any) -> Any:
        for number in range(30):
            yield {"n": number, "text": "x" * 100_000}

    status, messages = await run_flow("SELECT * FROM wide()", registry=registry_with(wide))

    batches = row_batches(messages)
    assert len(batches) > 1
    assert all(len(batch) < ROW_BATCH_COUNT for batch in batches)
    assert all(len(batch) * 100_000 < 2 * ROW_BATCH_BYTES for batch in batches)
    assert [row["n"] for batch in batches for row in batch] == list(range(30))
    assert status.rows == 30


async def test_rows_are_sent_while_a_slow_query_is_still_running() -> None:
    gate = Gate()
    outbox = new_outbox()
    runner = FlowRunner(
        FlowRequest(flow_id="F.slow", query="SELECT * FROM gate()"),
        outbox,
        registry_with(gate.plugin()),
    )
    flow = asyncio.create_task(runner.run())
    # The first row reaches the outbox on the batch timer, long before the query ends.
    first_entry = await asyncio.wait_for(outbox.next_unsent(), GUARD)
    first = decode(await outbox.read_frame(first_entry), "agent")
    assert first.TYPE == "rows" and first.rows == [{"step": 1}]
    assert not flow.done()

    gate.release.set()
    status = await asyncio.wait_for(flow, GUARD)
    assert (status.state, status.rows) == ("finished", 2)


async def test_rows_are_json_safe_and_env_gives_the_query_its_variables() -> None:
    status, messages = await run_flow(
        "SELECT _value, timestamp(epoch=86400) AS Day FROM range(end=Count)", env={"Count": 3}
    )
    rows = [row for batch in row_batches(messages) for row in batch]
    assert [row["_value"] for row in rows] == [0, 1, 2]
    assert rows[0]["Day"] == "1970-01-02T00:00:00Z"
    assert status.state == "finished"


async def test_the_row_limit_stops_the_query_and_fails_the_flow() -> None:
    produced = 0

    async def endless(scope: Any) -> Any:
        nonlocal produced
        while True:
            produced += 1
            yield {"n": produced}

    status, messages = await run_flow(
        "SELECT * FROM endless()", registry=registry_with(endless), max_rows=1000
    )

    assert (status.state, status.error) == ("error", "row limit of 1000 reached")
    assert status.rows == 1000
    assert sum(len(batch) for batch in row_batches(messages)) == 1000
    assert messages[-1] == status


async def test_a_query_with_exactly_max_rows_rows_finishes() -> None:
    status, _ = await run_flow("SELECT _value FROM range(end=1000)", max_rows=1000)
    assert (status.state, status.rows) == ("finished", 1000)


async def test_a_flow_past_its_timeout_ends_with_state_timeout_and_keeps_its_rows() -> None:
    gate = Gate()
    status, messages = await run_flow(
        "SELECT * FROM gate()", registry=registry_with(gate.plugin()), timeout=0.2
    )

    assert status.state == "timeout"
    assert "timed out" in status.error
    assert [row for batch in row_batches(messages) for row in batch] == [{"step": 1}]
    assert gate.closed  # the query was stopped, not left running
    assert messages[-1] == status


async def test_a_cancel_from_the_server_ends_the_flow_as_cancelled() -> None:
    gate = Gate()
    outbox = new_outbox()
    runner = FlowRunner(
        FlowRequest(flow_id="F.stop", query="SELECT * FROM gate()", timeout=0),
        outbox,
        registry_with(gate.plugin()),
    )
    flow = asyncio.create_task(runner.run())
    await asyncio.wait_for(gate.started.wait(), GUARD)

    runner.cancel("the operator stopped the hunt")
    status = await asyncio.wait_for(flow, GUARD)

    assert status.state == "cancelled"
    assert status.error == "the operator stopped the hunt"
    assert status.rows == 1
    assert gate.closed
    assert (await kept_messages(outbox))[-1] == status


async def test_a_syntax_error_fails_the_flow_with_line_and_column() -> None:
    status, messages = await run_flow("SELECT * FROM info() WHERE")

    assert status.state == "error"
    assert status.error.startswith("line 1, col ")
    assert messages == [status]
    assert status.seq == 1


async def test_the_querys_complaints_become_log_messages_before_the_status() -> None:
    async def grumble(scope: Any) -> Any:
        scope.warn("this plugin grumbles")
        yield {"ok": True}

    status, messages = await run_flow(
        "SELECT ok, NoSuchColumn FROM grumble()", registry=registry_with(grumble)
    )

    logs = {(log.level, log.message) for log in of_type(messages, "log")}
    assert ("warning", "this plugin grumbles") in logs
    assert any(level == "error" and "NoSuchColumn" in text for level, text in logs)
    assert messages[-1] == status
    assert status.state == "finished"


async def test_a_row_too_big_for_a_message_is_skipped_with_an_error() -> None:
    async def huge(scope: Any) -> Any:
        yield {"n": 1, "blob": "x" * (5 * 1024 * 1024)}
        yield {"n": 2, "blob": "small"}

    status, messages = await run_flow("SELECT * FROM huge()", registry=registry_with(huge))

    rows = [row for batch in row_batches(messages) for row in batch]
    assert [row["n"] for row in rows] == [2]
    assert any("does not fit a message" in log.message for log in of_type(messages, "log"))
    assert status.rows == 1


async def test_an_upload_streams_the_file_in_chunks_with_its_hash(tmp_path: Path) -> None:
    data = os.urandom(2 * UPLOAD_CHUNK_BYTES + 12_345)
    path = tmp_path / "evidence.bin"
    path.write_bytes(data)

    status, messages = await run_flow(
        f"SELECT upload(file='{path}', name='e.bin') AS U FROM scope()"
    )

    chunks = of_type(messages, "upload")
    assert [chunk.offset for chunk in chunks] == [0, UPLOAD_CHUNK_BYTES, 2 * UPLOAD_CHUNK_BYTES]
    assert [chunk.eof for chunk in chunks] == [False, False, True]
    assert {chunk.upload_id for chunk in chunks} == {0}
    assert {chunk.name for chunk in chunks} == {"e.bin"}
    assert b"".join(chunk.data for chunk in chunks) == data
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    assert [chunk.sha256 for chunk in chunks[:-1]] == [None, None]
    (row,) = [row for batch in row_batches(messages) for row in batch]
    assert row["U"] == {
        "Path": "e.bin",
        "Size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert (status.state, status.bytes) == ("finished", len(data))


async def test_an_empty_file_is_one_final_chunk_and_each_upload_has_its_own_id(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    small = tmp_path / "small"
    small.write_bytes(b"hello")

    status, messages = await run_flow(
        f"SELECT upload(file='{empty}') AS A, upload(file='{small}') AS B FROM scope()"
    )

    chunks = of_type(messages, "upload")
    assert [(c.upload_id, c.offset, c.data, c.eof) for c in chunks] == [
        (0, 0, b"", True),
        (1, 0, b"hello", True),
    ]
    assert chunks[0].sha256 == hashlib.sha256(b"").hexdigest()
    assert chunks[0].name == str(empty)  # no name given: the path names it
    assert status.bytes == 5


async def test_an_upload_over_the_limit_is_refused_and_fails_the_flow(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 2000)

    status, messages = await run_flow(
        f"SELECT upload(file='{path}') AS U FROM scope()", max_upload_bytes=1000
    )

    assert (status.state, status.error) == ("error", "upload limit of 1000 bytes reached")
    assert of_type(messages, "upload") == []
    assert any("upload limit of 1000 bytes" in log.message for log in of_type(messages, "log"))
    assert status.bytes == 0


async def test_a_flow_waits_for_acks_when_the_outbox_is_full_and_loses_nothing() -> None:
    outbox = new_outbox(max_bytes=64 * 1024)
    outbox.server_connected = True
    runner = FlowRunner(
        FlowRequest(flow_id="F.big", query="SELECT _value FROM range(end=20000)"),
        outbox,
        client_registry(labels=[]),
    )
    flow = asyncio.create_task(runner.run())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not flow.done()  # the outbox filled up and nobody acknowledges: the flow waits

    received: list[Message] = []
    while not received or received[-1].TYPE != "status":
        entry = await asyncio.wait_for(outbox.next_unsent(), GUARD)
        assert outbox.unacked_bytes <= outbox.max_bytes
        received.append(decode(await outbox.read_frame(entry), "agent"))
        outbox.ack(entry.flow_id, entry.seq)

    status = await asyncio.wait_for(flow, GUARD)
    values = [row["_value"] for batch in row_batches(received) for row in batch]
    assert values == list(range(20000))
    assert [message.seq for message in received] == list(range(1, len(received) + 1))
    assert (status.state, status.rows) == ("finished", 20000)
    assert not outbox.knows("F.big")  # its status acknowledged, the flow is forgotten


async def test_a_row_that_cannot_be_encoded_is_skipped_with_an_error() -> None:
    async def odd(scope: Any) -> Any:
        yield {"n": 2**70}  # msgpack carries integers of 64 bits at most
        yield {"n": 1}

    status, messages = await run_flow("SELECT * FROM odd()", registry=registry_with(odd))

    assert [row for batch in row_batches(messages) for row in batch] == [{"n": 1}]
    assert any("cannot be sent" in log.message for log in of_type(messages, "log"))
    assert (status.state, status.rows) == ("finished", 1)


async def test_a_failure_inside_the_agent_still_ends_the_flow_with_a_status() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this value")

    async def strange(scope: Any) -> Any:
        yield {"n": 1}
        yield {"value": Unprintable()}

    status, messages = await run_flow("SELECT * FROM strange()", registry=registry_with(strange))

    assert status.state == "error"
    assert "no text for this value" in status.error
    assert status.rows == 1  # what came before the failure is kept
    assert messages[-1] == status


async def test_a_timed_flush_cancelled_right_after_its_batch_is_kept_sends_no_row_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent.flow_runner as flow_runner

    monkeypatch.setattr(flow_runner, "ROW_BATCH_DELAY", 0.01)
    release = asyncio.Event()

    async def stepped(scope: Any) -> Any:
        for n in range(10):
            yield {"n": n}
        await release.wait()  # the timed flush sends the first ten meanwhile
        for n in range(10, 15):
            yield {"n": n}

    outbox = new_outbox()
    runner = FlowRunner(FlowRequest(flow_id="F.test", query="SELECT n FROM stepped()"),
                        outbox, registry_with(stepped))
    put = outbox.put
    cancelled: list[bool] = []

    async def put_then_cancel(flow_id: str, build: Any, stored: Any = None) -> Any:
        entry = await put(flow_id, build, stored)
        task = asyncio.current_task()
        if task is runner._timed_flush and not cancelled:
            # The flow is ending as this batch is kept: its timed flush is cancelled now.
            cancelled.append(True)
            task.cancel()
            release.set()
        return entry

    monkeypatch.setattr(outbox, "put", put_then_cancel)
    status = await asyncio.wait_for(runner.run(), GUARD)
    assert cancelled and status.state == "finished"
    rows = [row["n"] for message in await kept_messages(outbox)
            for row in (message.final_rows if isinstance(message, Status)
                        else getattr(message, "rows", []))]
    assert sorted(rows) == list(range(15))
