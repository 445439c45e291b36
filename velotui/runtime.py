"""Process-wide settings for holding thousands of connections in one Python process.

Shared by the server and by the agent when it simulates a fleet; imports nothing else of ours.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import ctypes.util
import functools
import gc
import sys

# CPython allocates a read buffer of this size for every TLS connection (256 KiB by default,
# python/cpython#109534), most of an idle connection's memory. 4 KiB reads still take a TLS
# record in a few system calls.
TLS_READ_BUFFER = 4 * 1024


def tune_for_many_connections() -> None:
    """Small TLS read buffers, and a garbage collector that does not spend a third of the CPU
    walking the objects of thousands of live connections (young collections stay short enough
    for a console sharing the loop: a few milliseconds each)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    gc.set_threshold(10_000, 20, 100)



@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only; musl has none
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``); True if any were.

    Thousands of TLS handshakes leave much of the heap free but still counted against the
    process, since glibc only returns memory from the top of the heap by itself.
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
