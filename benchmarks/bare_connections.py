"""The bare baseline of the server benchmark: TLS websocket connections that do nothing, held by
a listener with the agent listener's settings, in processes of their own.

    python -m benchmarks.bare_connections listen --cert CERT.pem --key KEY.pem
    python -m benchmarks.bare_connections open --url wss://127.0.0.1:PORT/ --ca CA.pem \\
        --connections N

``listen`` serves every connection by waiting for it to close, with what an authenticated agent's
connection has on the server: the same certificate, the 4 KiB TLS read buffer of
``velotui.runtime.tune_for_many_connections``, no compression, the same frame limit and queue,
keepalive and timeouts. It prints ``{"event": "listening", "port", "rss"}`` (its resident memory
then, settled: garbage collected, free pages handed back) and answers lines on standard input:
``memory`` prints ``{"event": "memory", "rss", "connections"}`` (settled), ``churn PER_SECOND
SECONDS`` closes that many connections a second, the oldest first, for that long and prints
``{"event": "churn", "peak_rss", "closed", "fewest_open"}``; ``stop`` or the end of input ends it.

``open`` prints ``{"event": "ready"}`` once started, waits for a line ``go``, opens N connections
(at most OPENING_AT_ONCE handshakes in flight) and prints ``{"event": "open", "seconds"}`` from
``go`` to the last one open. A connection the listener closes is opened again after the delay an
agent waits before its first reconnect. ``close`` or the end of input closes them all and exits.

Each side in its own process, as the server and the fleet are, so that neither shares an event
loop or a core with the other, and the listener's memory is its connections' alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidHandshake

from agent.reconnect import backoff_delay
from benchmarks.harness import churn, print_event, raise_open_files_limit, settled_rss_bytes
from velotui.runtime import tune_for_many_connections
from velotui.server.sessions import AGENT_QUEUED_FRAMES
from velotui.server.tls import server_ssl_context
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode
from velotui.wire.tls import pinned_client_ssl_context

# Handshakes in flight at once from one process: enough to open thousands as fast as this
# machine goes, few enough that none waits long enough to time out.
OPENING_AT_ONCE = 100
OPEN_ATTEMPTS = 5
BACKLOG = 4096  # the agent listener's


async def _read_line() -> str:
    # Standard input is read in a thread: the event loop stays free for the connections.
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


# The listener -------------------------------------------------------------------------------------


async def listen(cert: Path, key: Path) -> int:
    """Hold connections until told to stop (see the module's docstring); the exit status."""
    tune_for_many_connections()
    opened: dict[ServerConnection, None] = {}  # in the order they opened: the oldest first

    async def hold(connection: ServerConnection) -> None:
        opened[connection] = None
        try:
            await connection.wait_closed()
        finally:
            opened.pop(connection, None)

    async def close(connection: ServerConnection) -> None:
        await connection.close(int(CloseCode.GOING_AWAY), "benchmark: reconnect")

    async with serve(
        hold, "127.0.0.1", 0, ssl=server_ssl_context(cert, key),
        max_size=protocol.MAX_FRAME_BYTES, max_queue=AGENT_QUEUED_FRAMES, compression=None,
        ping_interval=20, ping_timeout=60, close_timeout=5, backlog=BACKLOG,
    ) as listener:
        print_event("listening", port=listener.sockets[0].getsockname()[1],
                    rss=settled_rss_bytes())
        while True:
            command, *arguments = (await _read_line()).split() or ["stop"]
            if command == "memory":
                print_event("memory", rss=settled_rss_bytes(), connections=len(opened))
            elif command == "churn":
                figures = await churn(lambda: list(opened), close, int(arguments[0]),
                                      float(arguments[1]), lambda: len(opened))
                print_event("churn", **figures)
            else:
                return 0


# The connections ----------------------------------------------------------------------------------


async def _open_one(url: str, context: ssl.SSLContext, gate: asyncio.Semaphore
                    ) -> ClientConnection:
    last_error: Exception | None = None
    for attempt in range(OPEN_ATTEMPTS):
        async with gate:
            try:
                # An agent's connection options, so that both ends of the transport are alike.
                return await connect(url, ssl=context, max_size=protocol.MAX_FRAME_BYTES,
                                     compression=None, proxy=None, open_timeout=30,
                                     close_timeout=5)
            except (OSError, TimeoutError, InvalidHandshake) as error:
                last_error = error
        await asyncio.sleep(backoff_delay(attempt))
    raise RuntimeError(f"cannot open a connection to {url}: {last_error}")


class _Opening:
    """Counts connections as they first open; ``done`` is set once all have, or one failed."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.opened = 0
        self.failure: BaseException | None = None
        self.done = asyncio.Event()

    def one_opened(self) -> None:
        self.opened += 1
        if self.opened >= self.count:
            self.done.set()

    def ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            self.done.set()


async def _keep_open(url: str, context: ssl.SSLContext, gate: asyncio.Semaphore,
                     opening: _Opening, connections: set[ClientConnection]) -> None:
    reported = False
    while True:
        connection = await _open_one(url, context, gate)
        connections.add(connection)
        if not reported:
            reported = True
            opening.one_opened()
        await connection.wait_closed()
        connections.discard(connection)
        # Closed by the listener (churn): back after the delay of an agent's first retry.
        await asyncio.sleep(backoff_delay(0))


async def open_connections(url: str, ca_pem: str, count: int) -> int:
    """Open ``count`` connections when told to and keep them open until told to close (see
    the module's docstring); the exit status. Raises RuntimeError or InvalidHandshake when a
    connection cannot be opened, ValueError for a CA that is not PEM."""
    context = pinned_client_ssl_context(ca_pem)  # one context, as a simulated fleet shares one
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    opening = _Opening(count)
    connections: set[ClientConnection] = set()
    print_event("ready")
    if await _read_line() != "go":
        return 0
    began = time.perf_counter()
    tasks = [asyncio.create_task(_keep_open(url, context, gate, opening, connections))
             for _ in range(count)]
    for task in tasks:
        task.add_done_callback(opening.ended)
    try:
        await opening.done.wait()
        if opening.failure is not None:
            raise opening.failure
        print_event("open", seconds=time.perf_counter() - began, connections=count)
        while await _read_line() not in ("close", ""):  # "": the benchmark is gone
            pass
        return 0
    finally:
        still_open = list(connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in still_open), return_exceptions=True)


# The command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.bare_connections``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_connections",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listener = commands.add_parser("listen", help="hold bare connections")
    listener.add_argument("--cert", required=True, type=Path, help="the server certificate")
    listener.add_argument("--key", required=True, type=Path, help="its private key")
    opener = commands.add_parser("open", help="open N bare connections")
    opener.add_argument("--url", required=True, help="the listener's wss:// URL")
    opener.add_argument("--ca", required=True, type=Path, metavar="FILE",
                        help="the CA certificate (PEM) that signed the listener's certificate")
    opener.add_argument("--connections", type=int, required=True, metavar="N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when the files cannot be read or the connections
    cannot be opened."""
    args = build_parser().parse_args(argv)
    raise_open_files_limit()
    try:
        if args.command == "listen":
            return asyncio.run(listen(args.cert, args.key))
        ca_pem = args.ca.read_text(encoding="ascii")
        return asyncio.run(open_connections(args.url, ca_pem, args.connections))
    except (OSError, ValueError, RuntimeError, InvalidHandshake) as error:
        print(f"bare_connections: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
