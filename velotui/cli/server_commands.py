"""``velotui serve`` and ``velotui agent-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from velotui.cli.connection import add_datastore_option
from velotui.server.data import DatabaseUnreachable
from velotui.server.datastore import Datastore, DatastoreError, checked_database_url
from velotui.server.server import DEFAULT_LISTEN, Server, parse_listen
from velotui.server.server_log import server_log_handlers
from velotui.wire.protocol import AGENT_PATH

PRIVATE_UMASK = 0o077


def add_parsers(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the server without a console (as a service)",
        description="Run the velotui server: agents connect to /agent, operators to /api.",
    )
    add_datastore_option(serve)
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"address to listen on (default {DEFAULT_LISTEN})")
    serve.add_argument("--verbose", action="store_true", help="log debugging detail")
    add_database_option(serve)
    serve.set_defaults(handler=serve_main)

    config = subparsers.add_parser(
        "agent-config", help="write a configuration file for agents",
        description="Write an agent configuration: the server URL(s), the pinned CA, the "
        "enrolment secret and the agent's labels. With several servers (frontends on one "
        "database), each agent starts at a random one and fails over to the others.",
    )
    add_datastore_option(config)
    config.add_argument("--server-url", "--server", dest="server_urls", action="append",
                        required=True, metavar="URL",
                        help="where agents reach the server, e.g. wss://hunt.example.org:8443;"
                        " repeat it for each frontend")
    config.add_argument("--label", action="append", default=[], help="a label (repeatable)")
    config.add_argument("--prevent-execve", action="store_true",
                        help="agents refuse execve(): no collection runs programs on them")
    config.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    config.set_defaults(handler=agent_config_main)


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database", metavar="URL",
        help="keep the datastore's database in PostgreSQL (postgresql://USER@HOST:PORT/DB;"
        " 'sqlite': back to the datastore's own file); recorded in the datastore, so every"
        " later command on it uses it")


def configure_logging(datastore: Datastore, verbose: bool, to_stderr: bool = True) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, force=True,
                        handlers=server_log_handlers(datastore.logs_dir, to_stderr))
    logging.getLogger("websockets").setLevel(logging.WARNING)


def serve_main(args: argparse.Namespace) -> int:
    # Everything the server writes (database, logs, uploads, exports) is for its user alone.
    os.umask(PRIVATE_UMASK)
    try:
        host, _port = parse_listen(args.listen)
        datastore = Datastore.open(args.datastore)
        checked_database_url(args.database)
    except (ValueError, DatastoreError) as error:
        print(f"velotui serve: {error}", file=sys.stderr)
        return 2
    configure_logging(datastore, args.verbose)
    if datastore.ensure_server_names([host]):
        logging.info("server certificate re-issued to include %s", host)
    server = Server(datastore, args.listen, database=args.database)
    return asyncio.run(_serve(server))


async def _serve(server: Server) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except DatabaseUnreachable as error:
        print(f"velotui serve: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"velotui serve: cannot listen on {server.host}:{server.port}: {error.strerror}",
              file=sys.stderr)
        await server.stop()
        return 1
    print(f"velotui server on {server.url} (agents: {server.agent_url}; datastore"
          f" {server.datastore.root})", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


def agent_config_main(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig

    urls: list[str] = []
    hostnames: list[str] = []
    for given in args.server_urls:
        url = given.rstrip("/")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  # raises ValueError for a port that is not a number
        except ValueError:
            parts = parts._replace(scheme="")
        if parts.scheme != "wss" or not parts.hostname:
            print(f"velotui agent-config: --server-url must look like wss://HOST:PORT,"
                  f" not {given!r}", file=sys.stderr)
            return 2
        if not parts.path:
            url += AGENT_PATH
        urls.append(url)
        hostnames.append(parts.hostname)
    urls = list(dict.fromkeys(urls))
    hostnames = list(dict.fromkeys(hostnames))
    try:
        datastore = Datastore.open(args.datastore)
    except DatastoreError as error:
        print(f"velotui agent-config: {error}", file=sys.stderr)
        return 1
    if datastore.ensure_server_names(hostnames):
        print(f"velotui agent-config: the server certificate now covers {', '.join(hostnames)};"
              " restart a running server to use it", file=sys.stderr)
    config = AgentConfig(
        server_url=urls[0],
        server_urls=urls,
        ca_pem=datastore.ca_pem(),
        enrolment_secret=datastore.enrolment_secret(),
        labels=list(dict.fromkeys(args.label)),
        prevent_execve=args.prevent_execve,
    )
    config.save(args.output)
    print(f"wrote {args.output} for {', '.join(urls)}", file=sys.stderr)
    return 0
