"""What a committed transaction announces (``tx.announce``), so that whoever keeps a copy of it
in memory looks at the table again: in this process (``Store.changed``) and, on PostgreSQL, in
every other frontend on the database (NOTIFY, heard by ``Store.listen``).

``hunt:<id>``: the hunt's row changed (created, started, paused, stopped, edited, approved,
deleted). ``clientinfo:<id>``: the client's record (enrolled, facts, labels, revoked).
``counts:<id>``: clients moved between the hunt's queues. ``client:<id>``: a flow of the
client was stored or ended (whoever holds the client's connection delivers or cancels it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from velotui.server.data.records import QueueMove

HUNT = "hunt:"
COUNTS = "counts:"
CLIENT = "client:"
CLIENT_RECORD = "clientinfo:"


def hunt_topic(hunt_id: str) -> str:
    return HUNT + hunt_id


def counts_topic(hunt_id: str) -> str:
    return COUNTS + hunt_id


def client_topic(client_id: str) -> str:
    return CLIENT + client_id


def client_record_topic(client_id: str) -> str:
    return CLIENT_RECORD + client_id


def announce_moves(tx: Any, moves: Iterable[QueueMove]) -> None:
    """The counts of every hunt these moves touch changed."""
    for hunt_id in {move.hunt_id for move in moves}:
        tx.announce(counts_topic(hunt_id))
