"""The agent's outbox: per-flow sequence numbers, acknowledgements, a byte bound with backpressure
(connected) or refusal of the oldest flows (offline), resending in order after a reconnect, and
all of it kept in a real SQLite file that a new outbox (a restarted agent) reads back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.outbox import FlowRefused, Outbox, OutboxEntry
from agent.outbox_file import OutboxFile
from velotui.wire.protocol import FlowRequest, Log, Rows, Status, decode, encode


def rows(flow_id: str, count: int = 1, width: int = 10):
    """A builder of a Rows message of ``count`` rows of ``width`` characters."""
    return lambda seq: Rows(flow_id=flow_id, seq=seq, rows=[{"x": "a" * width}] * count)


def status(flow_id: str):
    return lambda seq: Status(flow_id=flow_id, seq=seq, state="finished")


def open_outbox(tmp_path: Path, **options) -> Outbox:
    return Outbox.open(tmp_path / "outbox.sqlite", **options)


@pytest.fixture(params=["file", "memory"])
def new_outbox(request: pytest.FixtureRequest, tmp_path: Path):
    """Makes an outbox in a file (a real agent's) or in memory (a simulated agent's): the same
    behaviour either way."""
    path = tmp_path / "outbox.sqlite" if request.param == "file" else None
    return lambda **options: Outbox.open(path, **options)


async def sent(outbox: Outbox, entries: list[OutboxEntry]) -> list[tuple[str, int, str]]:
    """(flow, seq, type) of each entry, read from the file as the session sends it and decoded
    as the server would."""
    await outbox.flush()
    result = []
    for entry in entries:
        message = decode(await outbox.read_frame(entry), "agent")
        result.append((message.flow_id, message.seq, message.TYPE))
    return result


async def kept(outbox: Outbox) -> list[tuple[str, int, str]]:
    return await sent(outbox, outbox.entries())


async def one_message_size(tmp_path: Path, width: int) -> int:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    outbox = open_outbox(scratch)
    size = (await outbox.put("F.A", rows("F.A", width=width))).size
    await outbox.close()
    return size


async def blocked(task: asyncio.Task) -> bool:
    """True when ``task`` cannot make progress: it is still waiting after the loop ran dry."""
    for _ in range(20):
        await asyncio.sleep(0)
    return not task.done()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("outbox.sqlite*"))


# Sequence numbers and acknowledgements -----------------------------------------------------


async def test_each_flow_numbers_its_messages_from_one_in_the_order_put(
    tmp_path: Path, new_outbox
) -> None:
    outbox = new_outbox()
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.B", rows("F.B"))
    await outbox.put("F.A", lambda seq: Log(flow_id="F.A", seq=seq, message="hi"))
    await outbox.put("F.B", status("F.B"))
    await outbox.put("F.A", status("F.A"))

    assert await kept(outbox) == [
        ("F.A", 1, "rows"),
        ("F.B", 1, "rows"),
        ("F.A", 2, "log"),
        ("F.B", 2, "status"),
        ("F.A", 3, "status"),
    ]
    assert outbox.last_seq("F.A") == 3


async def test_an_ack_frees_everything_of_that_flow_up_to_its_seq(
    tmp_path: Path, new_outbox
) -> None:
    outbox = new_outbox()
    for _ in range(3):
        await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.B", rows("F.B"))
    before = outbox.unacked_bytes

    assert outbox.ack("F.A", 2) == 2
    assert await kept(outbox) == [("F.A", 3, "rows"), ("F.B", 1, "rows")]
    assert outbox.unacked_bytes < before
    # An old or repeated ack, or one for a flow never seen, changes nothing.
    assert outbox.ack("F.A", 1) == 0
    assert outbox.ack("F.nobody", 5) == 0
    assert len(outbox) == 2
    # An ack past what was sent frees what there is and no more.
    assert outbox.ack("F.A", 99) == 1
    await outbox.put("F.A", rows("F.A"))
    assert (await kept(outbox))[-1] == ("F.A", 4, "rows")


async def test_a_flow_is_forgotten_once_its_status_is_acknowledged(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.A", status("F.A"))
    assert outbox.flow_ids() == ["F.A"]
    with pytest.raises(RuntimeError):
        await outbox.put("F.A", rows("F.A"))  # nothing may follow a flow's status

    outbox.ack("F.A", 1)
    assert outbox.knows("F.A")  # its status is not durable yet
    outbox.ack("F.A", 2)
    assert not outbox.knows("F.A")
    assert outbox.flow_ids() == []
    assert len(outbox) == 0
    assert outbox.unacked_bytes == 0
    await outbox.close()
    assert open_outbox(tmp_path).flow_ids() == []  # forgotten on disk too


# Backpressure while connected -------------------------------------------------------------


async def test_a_full_outbox_makes_the_producer_wait_until_an_ack_frees_space(
    tmp_path: Path, new_outbox
) -> None:
    one_message = await one_message_size(tmp_path, 1000)
    outbox = new_outbox(max_bytes=2 * one_message)
    outbox.server_connected = True
    await outbox.put("F.A", rows("F.A", width=1000))
    await outbox.put("F.A", rows("F.A", width=1000))

    third = asyncio.create_task(outbox.put("F.A", rows("F.A", width=1000)))
    assert await blocked(third)
    assert len(outbox) == 2  # nothing dropped, nothing grown past the bound

    outbox.ack("F.A", 1)
    entry = await asyncio.wait_for(third, 10)
    assert entry.seq == 3
    assert outbox.unacked_bytes <= outbox.max_bytes
    assert not outbox.refused("F.A")


async def test_waiting_producers_get_space_first_come_first_served(
    tmp_path: Path, new_outbox
) -> None:
    big = await one_message_size(tmp_path, 4000)
    outbox = new_outbox(max_bytes=big + 100)
    outbox.server_connected = True
    await outbox.put("F.A", rows("F.A", width=4000))

    big_put = asyncio.create_task(outbox.put("F.B", rows("F.B", width=4000)))
    assert await blocked(big_put)
    # A small message would fit beside the first, but the big one asked before it.
    small_put = asyncio.create_task(outbox.put("F.C", rows("F.C", width=1)))
    assert await blocked(small_put)

    outbox.ack("F.A", 1)
    await asyncio.wait_for(asyncio.gather(big_put, small_put), 10)
    assert await kept(outbox) == [("F.B", 1, "rows"), ("F.C", 1, "rows")]


async def test_a_producer_cancelled_while_waiting_leaves_no_trace(
    tmp_path: Path, new_outbox
) -> None:
    one_message = await one_message_size(tmp_path, 1000)
    outbox = new_outbox(max_bytes=one_message)
    outbox.server_connected = True
    await outbox.put("F.A", rows("F.A", width=1000))
    waiting = asyncio.create_task(outbox.put("F.A", rows("F.A", width=1000)))
    assert await blocked(waiting)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    outbox.ack("F.A", 1)
    assert outbox.unacked_bytes == 0
    # The cancelled message took no seq: the next one is 2.
    assert (await outbox.put("F.A", rows("F.A", width=1000))).seq == 2


async def test_an_empty_outbox_takes_a_message_larger_than_its_bound(
    tmp_path: Path, new_outbox
) -> None:
    outbox = new_outbox(max_bytes=10)
    entry = await asyncio.wait_for(outbox.put("F.A", rows("F.A", width=100)), 10)
    assert entry.seq == 1


# The bound while offline: the oldest flows are refused ------------------------------------


async def test_offline_a_full_outbox_refuses_the_oldest_flow_first_and_statuses_still_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, new_outbox
) -> None:
    one_message = await one_message_size(tmp_path, 1000)
    outbox = new_outbox(max_bytes=3 * one_message + 50)
    for flow_id in ("F.old", "F.middle", "F.new"):
        await outbox.put(flow_id, rows(flow_id, width=1000))  # full now

    # The newest flow needs room while nothing can be acknowledged: the oldest is refused, and
    # the newest waits for the server.
    with caplog.at_level(logging.ERROR, logger="agent.outbox"):
        newest = asyncio.create_task(outbox.put("F.new", rows("F.new", width=1000)))
        assert await blocked(newest)
    assert [outbox.refused(f) for f in ("F.old", "F.middle", "F.new")] == [True, False, False]
    assert "flow F.old refused: the agent's outbox is full" in caplog.text
    with pytest.raises(FlowRefused, match="outbox is full"):
        await outbox.put("F.old", rows("F.old", width=1000))

    # The next flow to ask is the oldest still producing: refused at once.
    with pytest.raises(FlowRefused):
        await outbox.put("F.middle", rows("F.middle", width=1000))
    assert outbox.refused("F.middle") and not outbox.refused("F.new")

    # A refused flow can still say how it ended, past the bound.
    await outbox.put("F.old", lambda seq: Status(flow_id="F.old", seq=seq, state="error",
                                                 error="refused"))
    assert outbox.unacked_bytes > outbox.max_bytes
    assert outbox.last_seq("F.old") == 2

    # The server comes back and acknowledges: the newest flow goes on; nothing put was lost.
    outbox.server_connected = True
    outbox.ack("F.old", 2)
    outbox.ack("F.middle", 1)
    assert (await asyncio.wait_for(newest, 10)).seq == 2
    assert await kept(outbox) == [("F.new", 1, "rows"), ("F.new", 2, "rows")]


async def test_offline_a_flow_waiting_for_space_is_refused_when_it_is_the_oldest(
    tmp_path: Path, new_outbox
) -> None:
    one_message = await one_message_size(tmp_path, 1000)
    outbox = new_outbox(max_bytes=2 * one_message + 50)
    outbox.server_connected = True
    await outbox.put("F.old", rows("F.old", width=1000))
    await outbox.put("F.new", rows("F.new", width=1000))
    old_waits = asyncio.create_task(outbox.put("F.old", rows("F.old", width=1000)))
    assert await blocked(old_waits)  # connected: it waits, as it should

    outbox.server_connected = False  # the server went away; still it waits
    assert await blocked(old_waits)
    new_waits = asyncio.create_task(outbox.put("F.new", rows("F.new", width=1000)))
    assert await blocked(new_waits)
    with pytest.raises(FlowRefused):
        await asyncio.wait_for(old_waits, 10)  # the oldest gave way to the newest
    assert not outbox.refused("F.new")

    outbox.ack("F.old", 1)
    assert (await asyncio.wait_for(new_waits, 10)).seq == 2


# Sending -----------------------------------------------------------------------------------


async def test_after_a_reconnect_everything_unacked_is_resent_in_order_then_only_new(
    tmp_path: Path, new_outbox
) -> None:
    outbox = new_outbox()
    for flow_id in ("F.A", "F.B", "F.A", "F.B", "F.A"):
        await outbox.put(flow_id, rows(flow_id))
    # The first connection sends all five; the server acknowledges some before it goes away.
    first_connection = [await outbox.next_unsent() for _ in range(5)]
    assert await sent(outbox, first_connection) == [
        ("F.A", 1, "rows"),
        ("F.B", 1, "rows"),
        ("F.A", 2, "rows"),
        ("F.B", 2, "rows"),
        ("F.A", 3, "rows"),
    ]
    outbox.ack("F.A", 1)
    outbox.ack("F.B", 1)

    resend = outbox.rewind()
    assert await sent(outbox, resend) == [("F.A", 2, "rows"), ("F.B", 2, "rows"),
                                          ("F.A", 3, "rows")]
    # What is put afterwards follows the resent messages on the new connection.
    await outbox.put("F.B", rows("F.B"))
    assert await sent(outbox, [await asyncio.wait_for(outbox.next_unsent(), 10)]) == [
        ("F.B", 3, "rows")
    ]


async def test_a_message_acknowledged_before_it_was_sent_is_not_sent(
    tmp_path: Path, new_outbox
) -> None:
    outbox = new_outbox()
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.A", rows("F.A"))
    outbox.ack("F.A", 1)
    assert await sent(outbox, [await asyncio.wait_for(outbox.next_unsent(), 10)]) == [
        ("F.A", 2, "rows")
    ]


async def test_every_message_given_to_the_sender_is_already_in_the_file(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.begin_flow("F.A", b"request", {"flow": {"rows": 0}})
    given = []
    for number in range(1, 6):
        await outbox.put("F.A", rows("F.A"), lambda seq, n=number: {"flow": {"rows": n}})
        given.append(await asyncio.wait_for(outbox.next_unsent(), 10))
        # What another process would find in the file if this one were killed now.
        file = OutboxFile(outbox.path)
        on_disk = file.load()
        file.close()
        assert [(f, s) for f, s, _ in on_disk.messages] == [("F.A", e.seq) for e in given]
        # The progress recorded with a message is on disk with it.
        assert on_disk.flows[0].progress == {"flow": {"rows": number}}


# Kept on disk ------------------------------------------------------------------------------


async def test_a_reopened_outbox_has_every_unacknowledged_message_and_the_flows_to_resume(
    tmp_path: Path,
) -> None:
    outbox = open_outbox(tmp_path)
    request = encode(FlowRequest(flow_id="F.run", query="SELECT 1 FROM scope()"))
    outbox.begin_flow("F.run", request, {"flow": {"rows": 0}})
    await outbox.put("F.run", rows("F.run"), lambda seq: {"flow": {"rows": 1}})
    await outbox.put("F.done", rows("F.done"))
    await outbox.put("F.run", rows("F.run"), lambda seq: {"flow": {"rows": 2}})
    await outbox.put("F.done", status("F.done"))
    outbox.ack("F.run", 1)
    before = await outbox.unacked_frames()
    await outbox.close()

    reopened = open_outbox(tmp_path)
    assert await kept(reopened) == [("F.done", 1, "rows"), ("F.run", 2, "rows"),
                                    ("F.done", 2, "status")]
    assert await reopened.unacked_frames() == before
    assert reopened.unacked_bytes == sum(len(frame) for frame in before)
    assert reopened.flow_ids() == ["F.run", "F.done"]  # what Hello.running_flows reports
    # Only the flow that was begun and has not put its Status is given back to run again.
    [flow] = reopened.flows_to_resume()
    assert (flow.flow_id, flow.request) == ("F.run", request)
    assert flow.progress == {"flow": {"rows": 2}}
    assert reopened.flows_to_resume() == []
    # Its seqs go on from where they were; the sender resends, in order, all that is kept.
    assert (await reopened.put("F.run", rows("F.run"))).seq == 3
    await reopened.flush()
    assert await sent(reopened, reopened.rewind()) == [
        ("F.done", 1, "rows"), ("F.run", 2, "rows"), ("F.done", 2, "status"),
        ("F.run", 3, "rows"),
    ]
    # An ack received after the restart is kept too.
    reopened.ack("F.done", 2)
    await reopened.close()
    assert open_outbox(tmp_path).flow_ids() == ["F.run"]


async def test_acknowledged_messages_leave_the_file_and_its_space_is_reused(
    tmp_path: Path,
) -> None:
    outbox = open_outbox(tmp_path)
    megabyte_rows = rows("F.A", count=100, width=10_000)
    sizes = []
    for _round in range(8):
        for _ in range(8):
            await outbox.put("F.A", megabyte_rows)
        await outbox.flush()
        sizes.append(folder_bytes(tmp_path))
        outbox.ack("F.A", outbox.last_seq("F.A"))
    await outbox.flush()
    # Eight rounds of 8 MB put then acknowledged: the file holds about one round, not eight.
    assert max(sizes) < 3 * 8 * 1024 * 1024
    assert sizes[-1] < 2 * sizes[0]

    await outbox.put("F.A", status("F.A"))
    outbox.ack("F.A", outbox.last_seq("F.A"))
    await outbox.close()
    # Everything acknowledged: the file is handed back to the file system.
    assert folder_bytes(tmp_path) < 256 * 1024


async def test_a_damaged_outbox_file_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="agent.outbox_file"):
        outbox = open_outbox(tmp_path)
    assert len(outbox) == 0 and outbox.flow_ids() == []
    assert "is unusable" in caplog.text
    [aside] = tmp_path.glob("outbox.sqlite.damaged-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert (await outbox.put("F.A", rows("F.A"))).seq == 1


async def test_a_full_disk_holds_messages_back_until_they_can_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.outbox.WRITE_RETRY_DELAY", 0.01)
    outbox = open_outbox(tmp_path)
    await outbox.put("F.A", rows("F.A"))
    await outbox.flush()
    # The disk fills up: SQLite may not grow the file any more.
    file = outbox._file
    with file._lock:
        pages = file._connection.execute("PRAGMA page_count").fetchone()[0]
        file._connection.execute(f"PRAGMA max_page_count = {pages}")
    outbox.rewind()

    with caplog.at_level(logging.ERROR, logger="agent.outbox"):
        await outbox.put("F.A", rows("F.A", count=50, width=1000))
        sending = asyncio.create_task(outbox.next_unsent())
        while "cannot write the outbox" not in caplog.text:
            await asyncio.sleep(0.01)
    assert await blocked(sending)  # not on disk, so not sent
    assert "full" in caplog.text

    with file._lock:
        file._connection.execute("PRAGMA max_page_count = 1073741823")  # room again
    entry = await asyncio.wait_for(sending, 10)
    assert entry.seq == 2
    file = OutboxFile(outbox.path)
    assert [(f, s) for f, s, _ in file.load().messages] == [("F.A", 1), ("F.A", 2)]
    file.close()


async def test_an_outbox_in_memory_works_alike_and_keeps_no_file(tmp_path: Path) -> None:
    outbox = Outbox.open(None)  # as each agent of a simulated fleet has
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.A", status("F.A"))
    assert outbox.path is None
    assert await kept(outbox) == [("F.A", 1, "rows"), ("F.A", 2, "status")]
    outbox.ack("F.A", 2)
    assert outbox.flow_ids() == []
    await outbox.close()
