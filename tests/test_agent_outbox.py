"""The agent's outbox: per-flow sequence numbers, acknowledgements, a byte bound with
backpressure, and resending in order after a reconnect."""

from __future__ import annotations

import asyncio

import pytest

from agent.outbox import Outbox
from velotui.wire.protocol import Log, Rows, Status, decode


def rows(flow_id: str, count: int = 1, width: int = 10):
    """A builder of a Rows message of ``count`` rows of ``width`` characters."""
    return lambda seq: Rows(flow_id=flow_id, seq=seq, rows=[{"x": "a" * width}] * count)


def status(flow_id: str):
    return lambda seq: Status(flow_id=flow_id, seq=seq, state="finished")


def sent(entries) -> list[tuple[str, int, str]]:
    """(flow, seq, type) of each entry, as the server would decode it."""
    result = []
    for entry in entries:
        message = decode(entry.frame, "agent")
        result.append((message.flow_id, message.seq, message.TYPE))
    return result


async def blocked(task: asyncio.Task) -> bool:
    """True when ``task`` cannot make progress: it is still waiting after the loop ran dry."""
    for _ in range(20):
        await asyncio.sleep(0)
    return not task.done()


async def test_each_flow_numbers_its_messages_from_one_in_the_order_put() -> None:
    outbox = Outbox()
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.B", rows("F.B"))
    await outbox.put("F.A", lambda seq: Log(flow_id="F.A", seq=seq, message="hi"))
    await outbox.put("F.B", status("F.B"))
    await outbox.put("F.A", status("F.A"))

    assert sent(outbox.entries()) == [
        ("F.A", 1, "rows"),
        ("F.B", 1, "rows"),
        ("F.A", 2, "log"),
        ("F.B", 2, "status"),
        ("F.A", 3, "status"),
    ]
    assert outbox.last_seq("F.A") == 3


async def test_an_ack_frees_everything_of_that_flow_up_to_its_seq() -> None:
    outbox = Outbox()
    for _ in range(3):
        await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.B", rows("F.B"))
    before = outbox.unacked_bytes

    assert outbox.ack("F.A", 2) == 2
    assert sent(outbox.entries()) == [("F.A", 3, "rows"), ("F.B", 1, "rows")]
    assert outbox.unacked_bytes < before
    # An old or repeated ack, or one for a flow never seen, changes nothing.
    assert outbox.ack("F.A", 1) == 0
    assert outbox.ack("F.nobody", 5) == 0
    assert len(outbox) == 2
    # An ack past what was sent frees what there is and no more.
    assert outbox.ack("F.A", 99) == 1
    await outbox.put("F.A", rows("F.A"))
    assert sent(outbox.entries())[-1] == ("F.A", 4, "rows")


async def test_a_full_outbox_makes_the_producer_wait_until_an_ack_frees_space() -> None:
    one_message = len((await Outbox().put("F.A", rows("F.A", width=1000))).frame)
    outbox = Outbox(max_bytes=2 * one_message)
    await outbox.put("F.A", rows("F.A", width=1000))
    await outbox.put("F.A", rows("F.A", width=1000))

    third = asyncio.create_task(outbox.put("F.A", rows("F.A", width=1000)))
    assert await blocked(third)
    assert len(outbox) == 2  # nothing dropped, nothing grown past the bound

    outbox.ack("F.A", 1)
    entry = await asyncio.wait_for(third, 10)
    assert entry.seq == 3
    assert outbox.unacked_bytes <= outbox.max_bytes


async def test_waiting_producers_get_space_first_come_first_served() -> None:
    big = len((await Outbox().put("F.A", rows("F.A", width=4000))).frame)
    outbox = Outbox(max_bytes=big + 100)
    await outbox.put("F.A", rows("F.A", width=4000))

    big_put = asyncio.create_task(outbox.put("F.B", rows("F.B", width=4000)))
    assert await blocked(big_put)
    # A small message would fit beside the first, but the big one asked before it.
    small_put = asyncio.create_task(outbox.put("F.C", rows("F.C", width=1)))
    assert await blocked(small_put)

    outbox.ack("F.A", 1)
    await asyncio.wait_for(asyncio.gather(big_put, small_put), 10)
    assert sent(outbox.entries()) == [("F.B", 1, "rows"), ("F.C", 1, "rows")]


async def test_a_producer_cancelled_while_waiting_leaves_no_trace() -> None:
    one_message = len((await Outbox().put("F.A", rows("F.A", width=1000))).frame)
    outbox = Outbox(max_bytes=one_message)
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


async def test_an_empty_outbox_takes_a_message_larger_than_its_bound() -> None:
    outbox = Outbox(max_bytes=10)
    entry = await asyncio.wait_for(outbox.put("F.A", rows("F.A", width=100)), 10)
    assert entry.seq == 1


async def test_after_a_reconnect_everything_unacked_is_resent_in_order_then_only_new() -> None:
    outbox = Outbox()
    for flow_id in ("F.A", "F.B", "F.A", "F.B", "F.A"):
        await outbox.put(flow_id, rows(flow_id))
    # The first connection sends all five; the server acknowledges some before it goes away.
    first_connection = [await outbox.next_unsent() for _ in range(5)]
    assert sent(first_connection) == [
        ("F.A", 1, "rows"),
        ("F.B", 1, "rows"),
        ("F.A", 2, "rows"),
        ("F.B", 2, "rows"),
        ("F.A", 3, "rows"),
    ]
    outbox.ack("F.A", 1)
    outbox.ack("F.B", 1)

    resend = outbox.rewind()
    assert sent(resend) == [("F.A", 2, "rows"), ("F.B", 2, "rows"), ("F.A", 3, "rows")]
    # What is put afterwards follows the resent messages on the new connection.
    await outbox.put("F.B", rows("F.B"))
    assert sent([await asyncio.wait_for(outbox.next_unsent(), 10)]) == [("F.B", 3, "rows")]


async def test_a_message_acknowledged_before_it_was_sent_is_not_sent() -> None:
    outbox = Outbox()
    await outbox.put("F.A", rows("F.A"))
    await outbox.put("F.A", rows("F.A"))
    outbox.ack("F.A", 1)
    assert sent([await asyncio.wait_for(outbox.next_unsent(), 10)]) == [("F.A", 2, "rows")]


async def test_a_flow_is_forgotten_once_its_status_is_acknowledged() -> None:
    outbox = Outbox()
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
