"""The other side of the benchmark's round-trip baseline, run in its own process.

    python -m benchmarks.roundtrip_fleet roundtrip --url wss://127.0.0.1:PORT/ --ca CA.pem \\
        --connections N

Opens N TLS websocket connections to a plain echo server, prints ``{"event": "open", ...}`` as
one JSON line once every one is open, and waits for a line ``go`` on standard input. Then it sends
one small message on every connection at once, waits for every reply, and prints
``{"event": "roundtrip", "seconds": ...}``. A line ``close`` (or the end of standard input, so a
benchmark that dies does not leave this process behind) closes the connections and exits.

It lives in its own process, like the simulated fleet in the hunt it is compared with, so that
the two sides of the round trip do not share one event loop or one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from velotui.wire.tls import pinned_client_ssl_context

# Handshakes in flight at once: enough to open thousands quickly, few enough that the server's
# listen backlog (100 by default) is not overrun, which would cost retries and skew nothing but
# the opening time.
OPENING_AT_ONCE = 100
OPEN_ATTEMPTS = 5
MESSAGE = b"x" * 64  # about the size of a small protocol message


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit; return the new soft
    limit. Each connection is a file descriptor, and thousands are needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _say(event: str, **values: object) -> None:
    print(json.dumps({"event": event, **values}), flush=True)


async def _open_one(url: str, context: ssl.SSLContext, gate: asyncio.Semaphore
                    ) -> ClientConnection:
    last_error: Exception | None = None
    for attempt in range(OPEN_ATTEMPTS):
        async with gate:
            try:
                # The same options as an agent's connection, so the transports are alike.
                return await connect(url, ssl=context, compression=None, proxy=None,
                                     open_timeout=60, close_timeout=2, max_size=None)
            except (OSError, TimeoutError) as error:
                last_error = error
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"cannot open a connection to {url}: {last_error}")


async def _round_trip(connection: ClientConnection) -> None:
    await connection.send(MESSAGE)
    await connection.recv()


async def run_round_trips(url: str, ca_pem: str, count: int) -> int:
    """Open ``count`` connections, then time one round trip on all of them at once when told
    to (see the module's docstring). Returns the exit status. Raises ValueError for a CA that
    is not PEM, RuntimeError or InvalidHandshake when the connections cannot be opened."""
    context = pinned_client_ssl_context(ca_pem)  # one context, as a simulated fleet shares one
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    began = time.perf_counter()
    connections = await asyncio.gather(*(_open_one(url, context, gate) for _ in range(count)))
    _say("open", connections=len(connections), seconds=time.perf_counter() - began)
    loop = asyncio.get_running_loop()
    try:
        while True:
            # Standard input is read in a thread: the event loop stays free for the connections.
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "go":
                began = time.perf_counter()
                await asyncio.gather(*(_round_trip(c) for c in connections))
                _say("roundtrip", seconds=time.perf_counter() - began,
                     connections=len(connections))
            elif line in ("close", ""):  # "" is the end of input: the benchmark is gone
                return 0
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.roundtrip_fleet``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roundtrip_fleet",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    roundtrip = commands.add_parser("roundtrip", help="time one round trip on N connections")
    roundtrip.add_argument("--url", required=True, help="the echo server's wss:// URL")
    roundtrip.add_argument("--ca", required=True, metavar="FILE",
                           help="the CA certificate (PEM) that signed the server's certificate")
    roundtrip.add_argument("--connections", type=int, required=True, metavar="N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when the CA cannot be read or the connections cannot
    be opened."""
    args = build_parser().parse_args(argv)
    raise_open_files_limit()
    try:
        ca_pem = Path(args.ca).read_text(encoding="ascii")
        return asyncio.run(run_round_trips(args.url, ca_pem, args.connections))
    except (OSError, ValueError, RuntimeError, InvalidHandshake) as error:
        print(f"roundtrip_fleet: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
