"""Recruitment claims work in the table, so that several frontends on one database recruit one
hunt together within its ONE rate budget and its client limit, and never the same client twice.
Two stores on one database (two frontends' data layers; on SQLite two writers on one file) call
the data layer's recruit at once; the outcome is exact however they interleave."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.data_builder import DataBuilder, collection_flow
from velotui.server.data import Database

pytestmark = pytest.mark.both_backends
NOW = 1_800_000_000.0


async def two_frontends(tmp_path: Path, database_url: str | None) -> tuple[Database, Database]:
    target = database_url or tmp_path / "velotui.db"
    first = await Database.open(target)
    return first, await Database.open(target)


async def pending_hunt(db: Database, clients: int, *, rate: float = 0.0, limit: int = 0
                       ) -> str:
    build = DataBuilder(db)
    await build.hunt("H.1", "SELECT 1 FROM scope()", created=NOW, started=NOW,
                     expires=NOW + 3600, rate=rate, limit=limit)
    for n in range(clients):
        await build.client(f"C.{n:03d}", {"Fqdn": f"host{n}"}, first_seen=NOW, last_seen=NOW)
        await build.check("H.1", f"C.{n:03d}", matched=True, at=NOW)
    return "H.1"


async def recruited_clients(db: Database, hunt_id: str) -> list[str]:
    rows = await db.store.fetch_all(
        "SELECT client_id FROM hunt_clients WHERE hunt_id = ? AND queue = 'running'",
        (hunt_id,))
    return sorted(row["client_id"] for row in rows)


async def test_two_frontends_never_exceed_the_limit_together(tmp_path: Path,
                                                            database_url: str | None) -> None:
    first, second = await two_frontends(tmp_path, database_url)
    try:
        hunt_id = await pending_hunt(first, 20, limit=10)
        # Each frontend believes there is room for every pending client, many times at once.
        changes = await asyncio.gather(*(
            db.hunts.recruit(hunt_id, 20, collection_flow(hunt_id, NOW + 1), NOW + 1)
            for _ in range(6) for db in (first, second)))
        recruited = [record.client_id for change in changes if change
                     for record in change.recruited]
        assert len(recruited) == 10 and len(set(recruited)) == 10  # nobody twice
        assert await recruited_clients(second, hunt_id) == sorted(recruited)
        flows = await first.store.fetch_all("SELECT client_id FROM flows WHERE hunt_id = ?"
                                            " AND kind = 'collection'", (hunt_id,))
        assert sorted(row["client_id"] for row in flows) == sorted(recruited)
    finally:
        await first.close()
        await second.close()


async def test_the_rate_is_one_budget_for_the_hunt_not_one_per_frontend(
        tmp_path: Path, database_url: str | None) -> None:
    first, second = await two_frontends(tmp_path, database_url)
    try:
        hunt_id = await pending_hunt(first, 12, rate=120)  # 2 a second, 2 saved up at most
        recruit = [db.hunts.recruit(hunt_id, 12, collection_flow(hunt_id, NOW + 1), NOW + 1)
                   for db in (first, second) for _ in range(3)]
        changes = await asyncio.gather(*recruit)
        # The budget starts full: two clients at this instant, whoever asks, however often.
        assert sum(len(c.recruited) for c in changes if c) == 2
        # Half a second later one more token came; two seconds more fill it (no more).
        late = await asyncio.gather(*(
            db.hunts.recruit(hunt_id, 12, collection_flow(hunt_id, NOW + 1.5), NOW + 1.5)
            for db in (second, first)))
        assert sum(len(c.recruited) for c in late if c) == 1
        later = await asyncio.gather(*(
            db.hunts.recruit(hunt_id, 12, collection_flow(hunt_id, NOW + 10), NOW + 10)
            for db in (first, second)))
        assert sum(len(c.recruited) for c in later if c) == 2
        assert len(await recruited_clients(first, hunt_id)) == 5
    finally:
        await first.close()
        await second.close()


async def test_a_new_rate_starts_a_full_budget(tmp_path: Path, database_url: str | None
                                               ) -> None:
    first, second = await two_frontends(tmp_path, database_url)
    try:
        hunt_id = await pending_hunt(first, 6, rate=60)
        change = await first.hunts.recruit(hunt_id, 6, collection_flow(hunt_id, NOW + 1),
                                           NOW + 1)
        assert change is not None and len(change.recruited) == 1
        empty = await second.hunts.recruit(hunt_id, 6, collection_flow(hunt_id, NOW + 1),
                                           NOW + 1)
        assert empty is not None and empty.recruited == []
        await second.hunts.update_settings(hunt_id, {"rate": 180})
        again = await first.hunts.recruit(hunt_id, 6, collection_flow(hunt_id, NOW + 1),
                                          NOW + 1)
        assert again is not None and len(again.recruited) == 3
    finally:
        await first.close()
        await second.close()
