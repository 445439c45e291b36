"""``velotui hunt ...``, ``velotui clients label`` and ``velotui audit``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from velotui.cli.client_commands import run_remote
from velotui.cli.connection import UsageError, add_server_options
from velotui.cli.output import render_table
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION, QUEUES
from velotui.server.remote import RemoteService
from velotui.vql.values import cell_text

COUNT_NAMES = {"not_matched": "not matched"}
NO_SERVER_CONDITION = "(none: every client whose client-side condition returns a row)"


def add_parsers(subparsers: Any) -> None:
    hunt = subparsers.add_parser("hunt", help="create, run, follow and export hunts")
    actions = hunt.add_subparsers(dest="hunt_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a hunt (paused unless --start)")
    add_server_options(create)
    create.add_argument("--query", required=True, metavar="VQL", help="the collection to run")
    create.add_argument("--client-condition", default=DEFAULT_CLIENT_CONDITION, metavar="VQL",
                        help="run by each agent (default: its info() and labels)")
    create.add_argument("--server-condition", default="", metavar="VQL",
                        help="run by the server over the client's rows as `rows`")
    create.add_argument("--rate", type=float, default=0, metavar="N",
                        help="clients recruited per minute (0: unlimited)")
    create.add_argument("--limit", type=int, default=0, metavar="N",
                        help="at most N clients (0: no limit)")
    create.add_argument("--expires", default="7d", metavar="DURATION", help="like 90m, 12h, 7d")
    create.add_argument("--timeout", type=float, default=600, metavar="S",
                        help="seconds each client has to finish")
    create.add_argument("--max-rows", type=int, default=0, metavar="N")
    create.add_argument("--max-upload-bytes", type=int, default=0, metavar="N")
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument("--start", action="store_true", help="start it at once")
    create.add_argument("--json", action="store_true", help="print the whole hunt as JSON")
    create.set_defaults(handler=lambda args: run_remote(args, create_hunt))

    for name, help_text, method in (
        ("list", "every hunt with its counts", None),
        ("show", "one hunt: its queries, state and counts", "get_hunt"),
        ("start", "start a hunt, or start it again", "start_hunt"),
        ("stop", "stop recruiting and cancel collections in flight", "stop_hunt"),
        ("relaunch", "re-run the clients that ended in errors, and only those",
         "relaunch_hunt"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_server_options(action)
        if method is not None:
            action.add_argument("hunt_id", metavar="ID")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=_hunt_action(method))

    results = actions.add_parser("results", help="every client's rows")
    add_server_options(results)
    results.add_argument("hunt_id", metavar="ID")
    results.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    results.set_defaults(handler=lambda args: run_remote(args, hunt_results))

    estimate = actions.add_parser("estimate",
                                  help="how many known clients a condition would match")
    add_server_options(estimate)
    estimate.add_argument("--server-condition", required=True, metavar="VQL")
    estimate.add_argument("--client-condition", default=DEFAULT_CLIENT_CONDITION, metavar="VQL")
    estimate.add_argument("--json", action="store_true")
    estimate.set_defaults(handler=lambda args: run_remote(args, estimate_hunt))

    export = actions.add_parser("export", help="every client's results and files as one zip")
    add_server_options(export)
    export.add_argument("hunt_id", metavar="ID")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.zip")
    export.add_argument("--format", choices=("json", "csv", "both"), default="json")
    export.add_argument("--summary", action="store_true",
                        help="results and hunt.json only, no folder per client")
    export.set_defaults(handler=lambda args: run_remote(args, export_hunt))

    audit = subparsers.add_parser("audit", help="every operator action, with time and who")
    add_server_options(audit)
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--limit", type=int, default=1000, metavar="N")
    audit.set_defaults(handler=lambda args: run_remote(args, show_audit))


def add_label_parser(clients_actions: Any) -> None:
    label = clients_actions.add_parser(
        "label", help="add (+LABEL) and remove (-LABEL) operator-assigned labels",
    )
    add_server_options(label)
    label.add_argument("client_id", metavar="CLIENT_ID")
    label.add_argument("changes", nargs=argparse.REMAINDER, metavar="+LABEL|-LABEL")
    label.set_defaults(handler=_label_handler)


def _label_handler(args: argparse.Namespace) -> int:
    try:
        split_label_arguments(args)
        if not args.changes:
            raise UsageError("name at least one +LABEL or -LABEL")
        for change in args.changes:
            if len(change) < 2 or change[0] not in "+-":
                raise UsageError(f"{change!r}: write +LABEL to add or -LABEL to remove")
    except UsageError as error:
        print(f"velotui clients label: {error}", file=sys.stderr)
        return 2
    return run_remote(args, label_client)


def _hunt_action(method: str | None) -> Any:
    async def act(remote: RemoteService, args: argparse.Namespace) -> int:
        if method is None:
            hunts = await remote.list_hunts()
            if args.json:
                for hunt in hunts:
                    print(json.dumps(hunt))
            else:
                sys.stdout.write(render_table([_summary_row(h) for h in hunts])
                                 if hunts else "no hunts yet\n")
            return 0
        hunt = await remote.call(method, hunt_id=args.hunt_id)
        if args.json:
            print(json.dumps(hunt, indent=2))
        else:
            if "relaunched" in hunt:
                print(f"relaunched {hunt['relaunched']} clients of {hunt['hunt_id']}")
            sys.stdout.write(describe_hunt(hunt))
        return 0

    return lambda args: run_remote(args, act)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"{COUNT_NAMES.get(q, q)} {counts[q]}" for q in QUEUES)


def _summary_row(hunt: dict[str, Any]) -> dict[str, Any]:
    counts = hunt["counts"]
    return {
        "ID": hunt["hunt_id"],
        "State": hunt["state"],
        "Description": hunt["description"],
        "Created": _when(hunt["created"]),
        "Rate": f"{hunt['rate']:g}/min" if hunt["rate"] else "unlimited",
        "Limit": hunt["limit"] or "-",
        **{COUNT_NAMES.get(q, q).capitalize(): counts[q] for q in QUEUES},
    }


def describe_hunt(hunt: dict[str, Any]) -> str:
    state = hunt["state"] + (f" ({hunt['stop_reason']})" if hunt.get("stop_reason") else "")
    lines = [
        f"{hunt['hunt_id']}  {state}  {hunt['description']}",
        f"created {_when(hunt['created'])} by {hunt['creator'] or '?'}; started"
        f" {_when(hunt['started'])}; expires {_when(hunt['expires'])}",
        f"rate {hunt['rate']:g}/min" if hunt["rate"] else "rate unlimited",
        f"client limit {hunt['limit'] or 'none'}; timeout {hunt['timeout']:g} s; max rows"
        f" {hunt['max_rows'] or 'none'}; max upload bytes {hunt['max_upload_bytes'] or 'none'}",
        f"collection:        {hunt['query']}",
        f"client condition:  {hunt['client_condition']}",
        f"server condition:  {hunt['server_condition'] or NO_SERVER_CONDITION}",
        _counts_line(hunt["counts"]),
    ]
    return "\n".join(lines) + "\n"


async def create_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    hunt = await remote.create_hunt(
        query=args.query, client_condition=args.client_condition,
        server_condition=args.server_condition, rate=args.rate, limit=args.limit,
        expires=args.expires, timeout=args.timeout, max_rows=args.max_rows,
        max_upload_bytes=args.max_upload_bytes, description=args.description, start=args.start,
    )
    print(json.dumps(hunt, indent=2) if args.json else hunt["hunt_id"])
    return 0


async def hunt_results(remote: RemoteService, args: argparse.Namespace) -> int:
    if args.format == "jsonl":
        async for event in remote.hunt_results(hunt_id=args.hunt_id):
            for row in event["rows"]:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    # CSV needs every column before the first row: one pass to learn them, one to write.
    columns: dict[str, None] = {}
    async for event in remote.hunt_results(hunt_id=args.hunt_id):
        for row in event["rows"]:
            columns.update(dict.fromkeys(row))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(list(columns))
    async for event in remote.hunt_results(hunt_id=args.hunt_id):
        for row in event["rows"]:
            writer.writerow([cell_text(row.get(column)) for column in columns])
    return 0


async def estimate_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    result = await remote.estimate_hunt(server_condition=args.server_condition,
                                        client_condition=args.client_condition)
    if args.json:
        print(json.dumps(result))
    else:
        line = f"matches {result['matched']} of {result['total']} known clients"
        if result["undetermined"]:
            line += (f" ({result['undetermined']} cannot be judged from their last known facts)")
        if result.get("errored"):
            line += f"; the server-side condition failed on {result['errored']} of them"
        print(line)
        for error in result.get("errors", []):
            print(f"  {error}")
    return 0


async def export_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    destination = args.output.expanduser().absolute()
    last_shown = 0.0
    result: dict[str, Any] | None = None
    async for event in remote.export_hunt(hunt_id=args.hunt_id, path=str(destination),
                                          format=args.format, summary=args.summary):
        if event.get("event") == "progress" and sys.stderr.isatty():
            if time.monotonic() - last_shown > 0.2:
                last_shown = time.monotonic()
                print(f"\rexporting: {event['clients_done']}/{event['clients_total']} clients,"
                      f" {event['rows_written']} rows", end="", file=sys.stderr, flush=True)
        elif event.get("event") == "done":
            result = event
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if result is None:
        print("velotui hunt export: the server ended without finishing", file=sys.stderr)
        return 1
    print(f"wrote {result['path']}: {result['clients']} clients, {result['rows']} rows,"
          f" {result['entries']} entries, {result['bytes']} bytes")
    return 0


SERVER_OPTIONS = {"--datastore": Path, "--server": str, "--token-file": Path, "--ca-file": Path}


def split_label_arguments(args: argparse.Namespace) -> None:
    """``-LABEL`` looks like an option to argparse, so the changes are taken as they come;
    server options written among them are picked out here."""
    changes: list[str] = []
    tokens = iter(args.changes)
    for token in tokens:
        name, equals, value = token.partition("=")
        if name in SERVER_OPTIONS:
            if not equals:
                value = next(tokens, "")
                if not value:
                    raise UsageError(f"{name} needs a value")
            setattr(args, name[2:].replace("-", "_"), SERVER_OPTIONS[name](value))
        else:
            changes.append(token)
    args.changes = changes


async def label_client(remote: RemoteService, args: argparse.Namespace) -> int:
    add = [change[1:] for change in args.changes if change[0] == "+"]
    remove = [change[1:] for change in args.changes if change[0] == "-"]
    client = await remote.label_client(client_id=args.client_id, add=add, remove=remove)
    print(f"{client['client_id']}: {', '.join(client['labels']) or '(no labels)'}")
    return 0


async def show_audit(remote: RemoteService, args: argparse.Namespace) -> int:
    entries = await remote.audit_log(limit=args.limit)
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
        return 0
    rows = [{"Time": _when(e["time"]), "Who": e["actor"], "Action": e["action"],
             "Target": e["target"],
             "Details": json.dumps(e["details"]) if e["details"] else ""} for e in entries]
    sys.stdout.write(render_table(rows) if rows else "no operator actions yet\n")
    return 0
