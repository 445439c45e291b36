"""Running blocking file-system and OS work off the event loop, in batches.

One agent process may host thousands of simulated agents, so a slow directory walk or a big file
must never stall the loop: the blocking side runs in a worker thread a batch at a time and the
async side yields the batch's items before asking for the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class _Checkpoint:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CHECKPOINT"


CHECKPOINT: Any = _Checkpoint()
"""Yielded by a blocking generator after a unit of work that produced nothing (a directory
listed), so that a batch also ends after enough work, not only after enough items."""


def _take(items: Iterator[T], max_items: int, max_checkpoints: int) -> tuple[list[T], bool]:
    batch: list[T] = []
    checkpoints = 0
    for item in items:
        if item is CHECKPOINT:
            checkpoints += 1
            if checkpoints >= max_checkpoints:
                return batch, False
            continue
        batch.append(item)
        if len(batch) >= max_items:
            return batch, False
    return batch, True


async def stream_blocking(
    items: Iterator[T], *, max_items: int = 256, max_checkpoints: int = 32
) -> AsyncIterator[T]:
    """Yield the items of a blocking generator, advancing it in a worker thread batch by batch.

    The generator is closed when the consumer stops early (a LIMIT, a cancelled flow).
    """
    finished = False
    try:
        while not finished:
            batch, finished = await asyncio.to_thread(_take, items, max_items, max_checkpoints)
            for item in batch:
                yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:
                # Cancelled while a worker thread was still advancing it: that thread finishes
                # its batch and the generator is collected afterwards.
                pass


async def call_blocking(function: Callable[..., T], /, *args: Any) -> T:
    """``function(*args)`` run in a worker thread: one blocking call (a stat, a read, a hash) that
    the event loop, shared by every agent of the process, must not wait on."""
    return await asyncio.to_thread(function, *args)
