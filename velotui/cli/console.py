"""``velotui`` with no command: the console, with its server embedded or ``--connect``ed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from velotui.cli.connection import existing_datastore
from velotui.server.remote import RemoteError
from velotui.server.server import DEFAULT_LISTEN
from velotui.server_link import EmbeddedLink, RemoteLink, ServerLink


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("console (when no COMMAND is given)")
    group.add_argument("--datastore", type=Path, default=None, metavar="DIR",
                       help="the datastore folder (embedded server, or --connect to its server)")
    group.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"the embedded server's address (default {DEFAULT_LISTEN})")
    group.add_argument("--demo", type=int, default=0, metavar="N",
                       help="also start N simulated local agents")
    group.add_argument("--connect", action="store_true",
                       help="attach to a running `velotui serve` instead of embedding one")
    group.add_argument("--server", metavar="URL", help="with --connect: the server's URL")
    group.add_argument("--token-file", type=Path, metavar="F",
                       help="with --connect: the operator's token (default: the datastore's"
                            " api_token, its first admin's)")
    group.add_argument("--operator", metavar="NAME",
                       help="the operator the embedded console acts as (default: the one named"
                            " as the local user, else the first admin)")
    group.add_argument("--ca-file", type=Path, metavar="F",
                       help="with --connect --server: its CA (default ca.pem beside the token)")
    group.add_argument("--database", metavar="URL",
                       help="the embedded server keeps the datastore's database in PostgreSQL"
                            " (postgresql://USER@HOST:PORT/DB; recorded in the datastore)")


def _link(args: argparse.Namespace) -> ServerLink:
    if not args.connect:
        if args.server or args.token_file:
            raise ValueError("--server and --token-file go with --connect")
        return EmbeddedLink(datastore_path=args.datastore, listen=args.listen, demo=args.demo,
                            operator=args.operator, database=args.database)
    if args.database is not None:
        raise ValueError("--database is for the embedded server (or velotui serve)")
    if args.operator:
        raise ValueError("--operator is for the embedded server; --connect acts as the operator"
                         " of --token-file")
    if args.demo:
        raise ValueError("--demo needs the embedded server (leave out --connect)")
    if args.server:
        if args.token_file is None:
            raise ValueError("--server needs --token-file")
        ca_file = args.ca_file or args.token_file.parent / "ca.pem"
        return RemoteLink(url=args.server, token=args.token_file.read_text().strip(),
                          ca_pem=ca_file.read_text())
    datastore = existing_datastore(args.datastore)
    url = datastore.read_server_address()
    if url is None:
        raise RemoteError(f"no server is running on {datastore.root} (start one with:"
                          f" velotui serve --datastore {datastore.root})")
    token = args.token_file.read_text().strip() if args.token_file else datastore.api_token()
    return RemoteLink(url=url, token=token, ca_pem=datastore.ca_pem())


def console_main(args: argparse.Namespace) -> int:
    try:
        link = _link(args)
    except (ValueError, OSError) as error:
        print(f"velotui: {error}", file=sys.stderr)
        return 2
    except RemoteError as error:
        print(f"velotui: {error}", file=sys.stderr)
        return 1
    from velotui.app import VelotuiApp  # Textual loads only for the console

    app = VelotuiApp(link)
    code = asyncio.run(_run(app, link))
    if app.failure:
        print(app.failure, file=sys.stderr)
    return code


async def _run(app: object, link: ServerLink) -> int:
    loop = asyncio.get_running_loop()
    # The terminal going away (an SSH session dropped) ends the console cleanly; the embedded
    # server then stops after flushing, and a --connect'ed server keeps running its hunts.
    for signum in (signal.SIGHUP, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, app.exit)  # type: ignore[attr-defined]
    try:
        result = await app.run_async()  # type: ignore[attr-defined]
    finally:
        await link.stop()
    return int(result or 0)
