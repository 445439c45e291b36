"""The store: group commit, isolation of a failing operation, fresh reads."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from velotui.server.store import Store


def insert(value: int):
    def op(connection: sqlite3.Connection) -> int:
        connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{value}", value))
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

    def half_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO meta (key, value) VALUES ('half', '1')")
        raise ValueError("no")

    outcomes = await asyncio.gather(store.write(insert(1)), store.write(half_then_fail),
                                    store.write(insert(2)), return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError)
    keys = {row["key"] for row in await store.fetch_all("SELECT key FROM meta")}
    assert {"k1", "k2"} <= keys and "half" not in keys
    await store.close()


async def test_a_read_during_a_long_iteration_sees_the_latest_commit(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await asyncio.gather(*(store.write(insert(i)) for i in range(100)))
    # Iterations in progress hold their statements (and so their snapshots) open.
    iterations = [store.iterate("SELECT key FROM meta", batch=1) for _ in range(3)]
    for rows in iterations:
        await rows.__anext__()
    await store.write(insert(1000))
    for _ in range(4):
        fresh = await store.fetch_one("SELECT value FROM meta WHERE key = 'k1000'")
        assert fresh is not None and int(fresh["value"]) == 1000
    for rows in iterations:
        await rows.aclose()
    await store.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.close()
    from velotui.server.store import StoreClosed

    with pytest.raises(StoreClosed):
        await store.write(insert(1))
