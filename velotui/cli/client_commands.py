"""``velotui clients`` and ``velotui collect``: talk to a running server's operator API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from velotui.cli.connection import UsageError, add_server_options, open_remote
from velotui.cli.limits import add_limit_options, limit_arguments
from velotui.cli.output import render_table
from velotui.server.remote import RemoteError, RemoteService


def add_parsers(subparsers: Any) -> None:
    clients = subparsers.add_parser("clients", help="list the clients the server knows "
                                    "(and label them: clients label)")
    add_server_options(clients)
    clients.add_argument("--json", action="store_true", help="one JSON object a line")
    clients.set_defaults(handler=lambda args: run_remote(args, list_clients))
    from velotui.cli.explain_commands import add_show_parser
    from velotui.cli.hunt_commands import add_label_parser

    add_label_parser(actions := clients.add_subparsers(dest="clients_command", metavar="ACTION"))
    add_show_parser(actions)

    collect = subparsers.add_parser(
        "collect", help="run one query on one client and print its rows",
        description="Run one collection on one client. Rows are printed as JSON lines as they "
        "arrive; the final status goes to standard error. Exit 1 when the collection fails.",
    )
    add_server_options(collect)
    collect.add_argument("client_id", metavar="CLIENT_ID")
    collect.add_argument("vql", metavar="VQL")
    add_limit_options(collect)
    collect.set_defaults(handler=lambda args: run_remote(args, collect_rows))


def run_remote(args: argparse.Namespace,
               action: Callable[[RemoteService, argparse.Namespace], Awaitable[int]]) -> int:
    """Connect, run ``action``, and turn failures into one line and an exit status."""
    async def main() -> int:
        remote = await open_remote(args)
        try:
            return await action(remote, args)
        finally:
            await remote.close()

    try:
        return asyncio.run(main())
    except UsageError as error:
        print(f"velotui {args.command}: {error}", file=sys.stderr)
        return 2
    except RemoteError as error:
        print(f"velotui {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _ago(timestamp: float) -> str:
    seconds = max(time.time() - timestamp, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


async def list_clients(remote: RemoteService, args: argparse.Namespace) -> int:
    clients = await remote.list_clients()
    if args.json:
        for client in clients:
            print(json.dumps(client, ensure_ascii=False))
        return 0
    rows = [
        {
            "ID": c["client_id"],
            "Hostname": c["hostname"],
            "OS": c["os"],
            "Labels": ",".join(c["labels"]),
            "First seen": _when(c["first_seen"]),
            "Last seen": "now" if c["online"] else _ago(c["last_seen"]),
            "Online": "yes" if c["online"] else "no",
        }
        for c in clients
    ]
    sys.stdout.write(render_table(rows) if rows else "no clients yet\n")
    return 0


async def collect_rows(remote: RemoteService, args: argparse.Namespace) -> int:
    status: dict[str, Any] | None = None
    async for event in remote.collect(
        client_id=args.client_id, query=args.vql, **limit_arguments(args),
    ):
        kind = event.get("event")
        if kind == "scheduled" and not event.get("online"):
            print(f"{event['client_id']} is offline: {event['flow_id']} is queued for when it"
                  " connects", file=sys.stderr, flush=True)
        elif kind == "rows":
            for row in event["rows"]:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif kind == "log" and event.get("level") in ("error", "warning"):
            print(f"[{event['level']}] {event['message']}", file=sys.stderr, flush=True)
        elif kind == "status":
            status = event
    if status is None:
        print("velotui collect: the server ended without a final status", file=sys.stderr)
        return 1
    duration = status.get("duration") or 0.0
    uploads = status.get("uploads") or []
    summary = (f"{status['flow_id']} on {status['client_id']}: {status['state']}, "
               f"{status['rows']} rows, {len(uploads)} uploads ({status['bytes']} bytes), "
               f"{duration:.2f} s")
    if status["state"] != "finished":
        print(f"velotui collect: {summary}: {status.get('error') or 'failed'}", file=sys.stderr)
        return 1
    print(summary, file=sys.stderr)
    return 0
