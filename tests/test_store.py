"""The store: group commit, isolation of a failing operation, fresh reads."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from velotui.server.data import Database, FlowRecord
from velotui.server.data.store import POOL_SIZES, Store, StoreClosed, Transaction


def insert(value: int):
    def op(tx: Transaction) -> int:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{value}", value))
        return value

    return op


async def test_concurrent_writes_share_commits_and_all_land(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    results = await asyncio.gather(*(store.write(insert(i)) for i in range(500)))
    assert results == list(range(500))
    assert store.operations == 500
    assert store.commits < 500  # grouped
    await store.close()
    reopened = await Store.open(tmp_path / "db.sqlite")
    row = await reopened.fetch_one("SELECT COUNT(*) AS n FROM meta WHERE key LIKE 'k%'")
    assert row["n"] == 500
    await reopened.close()


async def test_a_failing_operation_is_undone_alone(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")

    def half_then_fail(tx: Transaction) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('half', '1')")
        raise ValueError("no")

    outcomes = await asyncio.gather(store.write(insert(1)), store.write(half_then_fail),
                                    store.write(insert(2)), return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError)
    keys = {row["key"] for row in await store.fetch_all("SELECT key FROM meta")}
    assert {"k1", "k2"} <= keys and "half" not in keys
    await store.close()


async def test_the_agents_pool_is_served_while_every_operator_reader_is_taken(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.write(insert(1))
    held = contextlib.AsyncExitStack()
    async with held:
        for _ in range(POOL_SIZES["operators"]):
            await held.enter_async_context(store._checkout("operators"))
        # Every operator reader is busy (slow consumers); ingest's reads still go through.
        row = await asyncio.wait_for(
            store.fetch_one("SELECT value FROM meta WHERE key = 'k1'", pool="agents"), 10)
        assert row is not None and int(row["value"]) == 1
        waiting = asyncio.ensure_future(store.fetch_one("SELECT 1 AS one"))
        await asyncio.sleep(0)
        assert not waiting.done()  # operators queue behind operators, not behind agents
    assert (await asyncio.wait_for(waiting, 10))["one"] == 1
    await store.close()


async def test_a_reader_paging_slowly_holds_no_connection(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "db.sqlite")
    flow = FlowRecord(client_id="C.0000000000000001", flow_id="F.0000000001", hunt_id=None,
                      kind="collection", query="SELECT 1", env={}, timeout=0, max_rows=0,
                      max_upload_bytes=0, state="running", created=0.0)
    await database.flows.insert([flow])
    for seq in range(1, 21):
        await database.flows.ingest_rows(flow.client_id, flow.flow_id, seq, [{"n": seq}], None,
                                          0.0)
    # Many more readers than connections, each stopped in the middle of its rows, as a
    # consumer piping results into `less` would be.
    readers = [database.flows.row_batches(flow.client_id, flow.flow_id) for _ in range(12)]
    for reader in readers:
        assert (await asyncio.wait_for(reader.__anext__(), 10))[0] == 1
    row = await asyncio.wait_for(database.store.fetch_one("SELECT COUNT(*) AS n FROM flow_rows"),
                                 10)
    assert row["n"] == 20
    for reader in readers:
        assert [seq async for seq, _rows in reader] == list(range(2, 21))
    await database.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.close()
    with pytest.raises(StoreClosed):
        await store.write(insert(1))
