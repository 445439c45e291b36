"""Frontends hear each other through PostgreSQL: a committed announcement is NOTIFY'd and
wakes the other stores' waiters and listeners; an undone one is never heard; a lost listening
connection comes back and says everything may have changed. On a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg

from velotui.server.data.postgres_store import (
    PAYLOAD_BYTES,
    PostgresStore,
    notification_payloads,
    parse_notification,
)
from velotui.server.data.store import EVERYTHING

WAIT = 20.0  # a bound on a wait that ends at an event, not a pause


class Heard:
    """What a store's listener was told, and a way to wait for a topic."""

    def __init__(self, store: PostgresStore) -> None:
        self.topics: list[set[str]] = []
        self._changed = asyncio.Event()
        store.listen(self._heard)

    def _heard(self, topics: set[str]) -> None:
        self.topics.append(topics)
        self._changed.set()

    def all(self) -> set[str]:
        return set().union(*self.topics) if self.topics else set()

    async def until(self, topic: str) -> None:
        while topic not in self.all():
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), WAIT)


def announcing(*topics: str, fail: bool = False):
    def op(tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, '1')"
                   " ON CONFLICT (key) DO NOTHING", (topics[0],))
        for topic in topics:
            tx.announce(topic)
        if fail:
            raise ValueError("undone")

    return op


async def test_a_commit_on_one_frontend_wakes_the_other(postgres_url: str) -> None:
    first = await PostgresStore.open(postgres_url)
    second = await PostgresStore.open(postgres_url)
    try:
        heard_first, heard_second = Heard(first), Heard(second)
        waiter = second.changed("hunt:H.1")
        await first.write(announcing("hunt:H.1", "counts:H.1"))
        await asyncio.wait_for(waiter.wait(), WAIT)
        await heard_second.until("counts:H.1")
        assert heard_second.all() == {"hunt:H.1", "counts:H.1"}
        # The other way round; a store does not hear itself (its memory follows its commits).
        await second.write(announcing("client:C.1"))
        await heard_first.until("client:C.1")
        assert heard_first.all() == {"client:C.1"}
        assert "client:C.1" not in heard_second.all()
    finally:
        await first.close()
        await second.close()


async def test_an_undone_operation_is_never_heard(postgres_url: str) -> None:
    first = await PostgresStore.open(postgres_url)
    second = await PostgresStore.open(postgres_url)
    try:
        heard = Heard(second)
        outcomes = await asyncio.gather(first.write(announcing("hunt:undone", fail=True)),
                                        first.write(announcing("hunt:kept")),
                                        return_exceptions=True)
        assert isinstance(outcomes[0], ValueError)
        # Notifications arrive in commit order: a later one heard means the undone one never
        # will be.
        await first.write(announcing("hunt:later"))
        await heard.until("hunt:later")
        assert "hunt:kept" in heard.all() and "hunt:undone" not in heard.all()
    finally:
        await first.close()
        await second.close()


async def test_many_topics_of_one_commit_are_all_heard(postgres_url: str) -> None:
    topics = [f"client:C.{n:040d}" for n in range(1500)]
    payloads = notification_payloads("origin", topics)
    assert len(payloads) > 1 and all(len(p.encode()) <= PAYLOAD_BYTES for p in payloads)
    assert set().union(*(parse_notification(p)[1] for p in payloads)) == set(topics)
    first = await PostgresStore.open(postgres_url)
    second = await PostgresStore.open(postgres_url)
    try:
        heard = Heard(second)
        await first.write(announcing(*topics))
        await first.write(announcing("hunt:after"))
        await heard.until("hunt:after")
        assert set(topics) <= heard.all()
    finally:
        await first.close()
        await second.close()


async def test_a_lost_listening_connection_comes_back_and_says_everything_changed(
        postgres_url: str) -> None:
    first = await PostgresStore.open(postgres_url)
    second = await PostgresStore.open(postgres_url)
    try:
        heard = Heard(second)
        waiter = second.changed("hunt:waiting")
        lost_pid = second.listener_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lost_pid,))
        await heard.until(EVERYTHING)
        # Whoever waited is woken too: it reads the table again.
        await asyncio.wait_for(waiter.wait(), WAIT)
        assert second.listener_pid not in (None, lost_pid)
        await first.write(announcing("hunt:after-reconnect"))
        await heard.until("hunt:after-reconnect")
    finally:
        await first.close()
        await second.close()
