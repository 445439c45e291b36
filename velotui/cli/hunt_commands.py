"""``velotui hunt ...`` and ``velotui clients label`` (``velotui audit``: audit_commands)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from velotui.cli import audit_commands
from velotui.cli.approval_commands import add_approval_parsers, approval_text
from velotui.cli.artifact_options import (
    add_artifact_options,
    artifact_collection,
    collection_problem,
)
from velotui.cli.client_commands import run_remote
from velotui.cli.connection import UsageError, add_server_options
from velotui.cli.limits import add_limit_options, limit_arguments
from velotui.cli.output import FORMATS, render_table, write_collected
from velotui.display import size
from velotui.export_receiver import ExportReceiveError, ReceiveProgress, receive_export
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
    create.add_argument("--query", metavar="VQL", help="the collection to run, as VQL")
    add_artifact_options(create)
    create.add_argument("--client-condition", default=DEFAULT_CLIENT_CONDITION, metavar="VQL",
                        help="run by each agent (default: its info() and labels)")
    create.add_argument("--server-condition", default="", metavar="VQL",
                        help="run by the server over the client's rows as `rows`")
    create.add_argument("--rate", type=float, default=0, metavar="N",
                        help="clients recruited per minute (0: unlimited)")
    create.add_argument("--limit", type=int, default=0, metavar="N",
                        help="at most N clients (0: no limit)")
    create.add_argument("--expires", default="7d", metavar="DURATION", help="like 90m, 12h, 7d")
    add_limit_options(create)
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument("--start", action="store_true", help="start it at once")
    create.add_argument("--start-at", metavar="TIME",
                        help="start it on its own at TIME: ISO 8601 (local time unless it"
                             " names a zone), +2h from now, or epoch seconds")
    create.add_argument("--max-errors", default="0", metavar="N|N%",
                        help="pause it at N clients in errors, or N%% of the clients recruited"
                             " (checked once 20 finished); 0: no limit")
    create.add_argument("--json", action="store_true", help="print the whole hunt as JSON")
    create.set_defaults(handler=_create_handler)

    for name, help_text, method in (
        ("list", "every hunt with its counts (archived ones with --all)", None),
        ("show", "one hunt: its queries, state and counts", "get_hunt"),
        ("start", "start or resume a hunt, or start a scheduled one now", "start_hunt"),
        ("stop", "stop recruiting and cancel collections in flight (or cancel a schedule)",
         "stop_hunt"),
        ("relaunch", "re-run the clients that ended in errors, and only those",
         "relaunch_hunt"),
        ("pause", "stop recruiting; collections running finish (start resumes)", "pause_hunt"),
        ("copy", "a new paused hunt with the same specification", "copy_hunt"),
        ("archive", "hide a finished hunt from the list (hunt list --all shows it)",
         "archive_hunt"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_server_options(action)
        if method is not None:
            action.add_argument("hunt_id", metavar="ID")
        else:
            action.add_argument("--all", action="store_true", help="archived hunts too")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=_hunt_action(method))
    _add_tuning_parsers(actions)
    add_approval_parsers(actions)

    results = actions.add_parser("results", help="every client's rows")
    add_server_options(results)
    results.add_argument("hunt_id", metavar="ID")
    results.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    results.set_defaults(handler=lambda args: run_remote(args, hunt_results))

    query = actions.add_parser(
        "query", help="run VQL over a hunt's stored results, on the server",
        description="Run VQL on the server over what it has stored: hunt_results() (the"
        " hunt's rows, ClientId, Fqdn and FlowId first; hunt_id=, artifact=, source=), hunts()"
        " and clients(), with the engine's pure functions and nothing else. Rows go to"
        " standard output; when they are cut at --limit, standard error says so.",
    )
    add_server_options(query)
    query.add_argument("hunt_id", metavar="ID")
    query.add_argument("vql", metavar="VQL")
    query.add_argument("--format", choices=FORMATS, default="jsonl")
    query.add_argument("--limit", type=int, default=1000, metavar="N",
                       help="at most N rows (default 1000)")
    query.set_defaults(handler=lambda args: run_remote(args, query_hunt))

    estimate = actions.add_parser("estimate",
                                  help="how many known clients a condition would match")
    add_server_options(estimate)
    estimate.add_argument("--server-condition", required=True, metavar="VQL")
    estimate.add_argument("--client-condition", default=DEFAULT_CLIENT_CONDITION, metavar="VQL")
    estimate.add_argument("--json", action="store_true")
    estimate.set_defaults(handler=lambda args: run_remote(args, estimate_hunt))
    from velotui.cli.explain_commands import add_explain_parser

    add_explain_parser(actions)

    export = actions.add_parser(
        "export", help="every client's results and files as one zip, written on this machine",
    )
    add_server_options(export)
    export.add_argument("hunt_id", metavar="ID")
    export.add_argument("-o", "--output", type=Path, metavar="FILE.zip",
                        help="where the zip is written, on this machine (a zip there is replaced)")
    export.add_argument("--format", choices=("json", "csv", "both"), default="json")
    export.add_argument("--summary", action="store_true",
                        help="results and hunt.json only, no folder per client")
    export.add_argument("--keep-on-server", metavar="NAME.zip",
                        help="also keep a copy in the server's <datastore>/exports folder, as"
                             " NAME.zip (a name, not a path); alone, keep it there only")
    export.set_defaults(handler=_export_handler)

    audit_commands.add_parser(subparsers)


def _add_tuning_parsers(actions: Any) -> None:
    """``hunt set`` and ``hunt delete``."""
    tune = actions.add_parser("set", help="change a hunt's rate, limit, expiry, error limit or"
                              " description, at once (running or not)")
    add_server_options(tune)
    tune.add_argument("hunt_id", metavar="ID")
    tune.add_argument("--rate", metavar="N", help="clients recruited per minute (0: unlimited)")
    tune.add_argument("--limit", metavar="N", help="at most N clients (0: no limit)")
    tune.add_argument("--expires", metavar="DURATION|TIME",
                      help="a duration from now (12h) or a time (ISO 8601, +2h)")
    tune.add_argument("--max-errors", metavar="N|N%", help="pause at N clients in errors, or"
                      " N%% of the clients recruited; 0: no limit")
    tune.add_argument("--description", metavar="TEXT")
    tune.add_argument("--json", action="store_true")
    tune.set_defaults(handler=lambda args: run_remote(args, set_hunt))

    delete = actions.add_parser("delete", help="remove a hunt, its results, logs and files"
                                " (asks first unless --yes)")
    add_server_options(delete)
    delete.add_argument("hunt_id", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(handler=_delete_handler)


SETTING_NAMES = {"rate": "rate", "limit": "limit", "expires": "expires",
                 "max_errors": "max errors", "description": "description"}


def _setting_text(key: str, value: Any) -> str:
    if key == "rate":
        return f"{value:g}/min" if value else "unlimited"
    if key == "expires":
        return _when(value)
    if key in ("limit", "max_errors"):
        return str(value) if value else "none"
    return json.dumps(value)


async def set_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    values = {key: getattr(args, key) for key in SETTING_NAMES
              if getattr(args, key) is not None}
    if not values:
        raise UsageError("give at least one of --rate, --limit, --expires, --max-errors,"
                         " --description")
    hunt = await remote.set_hunt(hunt_id=args.hunt_id, **values)
    if args.json:
        print(json.dumps(hunt, indent=2))
        return 0
    for key, (old, new) in hunt["changed"].items():
        print(f"{SETTING_NAMES[key]}: {_setting_text(key, old)} -> {_setting_text(key, new)}")
    if not hunt["changed"]:
        print(f"{hunt['hunt_id']}: nothing changed")
    return 0


def _delete_handler(args: argparse.Namespace) -> int:
    """Asks on a terminal; elsewhere, only --yes deletes."""
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"velotui hunt delete: not on a terminal to ask: add --yes to delete"
                  f" {args.hunt_id}", file=sys.stderr)
            return 2
        # The question on standard error: standard output is for the result (--json).
        print(f"delete {args.hunt_id} with its results, logs and files? [y/N] ", end="",
              file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=sys.stderr)
            return 1
    return run_remote(args, delete_hunt)


async def delete_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    deleted = await remote.delete_hunt(hunt_id=args.hunt_id)
    if args.json:
        print(json.dumps(deleted))
    else:
        print(f"deleted {deleted['hunt_id']}: {deleted['bytes_freed']} bytes freed"
              f" ({deleted['rows']} rows, {deleted['files']} files, {deleted['clients']}"
              " clients)")
    return 0


def add_label_parser(clients_actions: Any) -> None:
    label = clients_actions.add_parser(
        "label", help="add (+LABEL) and remove (-LABEL) operator-assigned labels",
    )
    add_server_options(label)
    label.add_argument("client_id", metavar="CLIENT_ID")
    label.add_argument("changes", nargs=argparse.REMAINDER, metavar="+LABEL|-LABEL")
    label.set_defaults(handler=_label_handler)
    revoke = clients_actions.add_parser(
        "revoke", help="refuse a client's key from now on (its connection and flows end)",
    )
    add_server_options(revoke)
    revoke.add_argument("client_id", metavar="CLIENT_ID")
    revoke.set_defaults(handler=lambda args: run_remote(args, revoke_client))


async def revoke_client(remote: RemoteService, args: argparse.Namespace) -> int:
    client = await remote.revoke_client(client_id=args.client_id)
    print(f"{client['client_id']} ({client['hostname'] or 'no hostname'}) is revoked: its key"
          " is refused from now on")
    return 0


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
            hunts = await remote.list_hunts(all=args.all)
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
            if method == "copy_hunt":
                # The new ID alone on stdout, as `hunt create` prints it, for scripts.
                print(f"copied {args.hunt_id} to {hunt['hunt_id']} (paused: velotui hunt start"
                      f" {hunt['hunt_id']})", file=sys.stderr)
                print(hunt["hunt_id"])
                return 0
            sys.stdout.write(describe_hunt(hunt))
        return 0

    return lambda args: run_remote(args, act)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"{COUNT_NAMES.get(q, q)} {counts[q]}" for q in QUEUES)


def _in(seconds: float) -> str:
    """How long until something, roughly: 1h 5m, 40s."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts[:2]) if parts else f"{seconds}s"


def _state_text(hunt: dict[str, Any]) -> str:
    """The state with what qualifies it: when a schedule starts, archived."""
    state = hunt["state"]
    if state == "scheduled" and hunt.get("start_at"):
        state += f" (starts in {_in(hunt['start_at'] - time.time())})"
    elif state == "paused" and hunt.get("stop_reason"):
        state += f" ({hunt['stop_reason']})"
    if _awaiting_approval(hunt) and "awaiting approval" not in state:
        state += ", awaiting approval"
    if hunt.get("archived"):
        state += ", archived"
    return state


def _awaiting_approval(hunt: dict[str, Any]) -> bool:
    return (hunt.get("approval") or {}).get("state") == "pending"


def _error_limit(hunt: dict[str, Any]) -> str:
    if hunt.get("max_errors_percent"):
        return f"{hunt['max_errors_percent']:g}% of recruited"
    return str(hunt["max_errors"]) if hunt.get("max_errors") else "none"


def _summary_row(hunt: dict[str, Any]) -> dict[str, Any]:
    counts = hunt["counts"]
    return {
        "ID": hunt["hunt_id"],
        "State": _state_text(hunt),
        "Description": hunt["description"],
        "Created": _when(hunt["created"]),
        "Rate": f"{hunt['rate']:g}/min" if hunt["rate"] else "unlimited",
        "Limit": hunt["limit"] or "-",
        **{COUNT_NAMES.get(q, q).capitalize(): counts[q] for q in QUEUES},
    }


def describe_hunt(hunt: dict[str, Any]) -> str:
    state = hunt["state"] + (f" ({hunt['stop_reason']})" if hunt.get("stop_reason") else "")
    if hunt.get("archived"):
        state += f", archived {_when(hunt['archived'])}"
    if _awaiting_approval(hunt) and "awaiting approval" not in state:
        state += ", awaiting approval"
    lines = [
        f"{hunt['hunt_id']}  {state}  {hunt['description']}",
        f"created {_when(hunt['created'])} by {hunt['creator'] or '?'}; started"
        f" {_when(hunt['started'])}; expires {_when(hunt['expires'])}",
    ]
    if hunt.get("start_at"):
        lines.append(f"starts at {_when(hunt['start_at'])} (in"
                     f" {_in(hunt['start_at'] - time.time())})")
    if hunt.get("copied_from"):
        lines.append(f"copied from {hunt['copied_from']}")
    if hunt.get("approval") and hunt["approval"]["state"] != "none":
        lines.append(f"approval: {approval_text(hunt['approval'])}; specification"
                     f" {hunt['spec_hash'][:16]}")
    lines += [
        f"rate {hunt['rate']:g}/min" if hunt["rate"] else "rate unlimited",
        f"max errors {_error_limit(hunt)}",
        f"client limit {hunt['limit'] or 'none'}; timeout {hunt['timeout']:g} s",
        "each client at most: " + "; ".join(
            f"{what} {hunt[key] if hunt.get(key) else 'no limit'}"
            for key, what in (("max_rows", "rows"), ("max_upload_bytes", "upload bytes"),
                              ("max_uploads", "files"), ("max_logs", "log lines"),
                              ("max_log_bytes", "log bytes"))),
        *_collection_lines(hunt),
        f"client condition:  {hunt['client_condition']}",
        f"server condition:  {hunt['server_condition'] or NO_SERVER_CONDITION}",
        _counts_line(hunt["counts"]),
    ]
    lines += [f"errors: {error['clients']} x {error['reason']}"
              for error in hunt.get("errors", [])]
    return "\n".join(lines) + "\n"


def _collection_lines(hunt: dict[str, Any]) -> list[str]:
    """The collection: its VQL, or for an artifact hunt each artifact with the parameters it
    was given (its compiled VQL is in --json)."""
    artifacts = hunt.get("artifacts") or []
    if not artifacts:
        return [f"collection:        {hunt['query']}"]
    lines = []
    for artifact in artifacts:
        values = "; ".join(f"{name}={json.dumps(value)}" if "\n" in value else f"{name}={value}"
                           for name, value in artifact.get("parameters", {}).items())
        lines.append(f"artifact:          {artifact['name']}" + (f"  ({values})" if values
                                                                  else ""))
    return lines


def _create_handler(args: argparse.Namespace) -> int:
    """Usage errors first (exit status 2), before any server is reached."""
    problem = collection_problem(args.query, args, "--query VQL")
    if problem is not None:
        print(f"velotui hunt create: {problem}", file=sys.stderr)
        return 2
    return run_remote(args, create_hunt)


async def create_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    collection: dict[str, Any] = {"query": args.query or ""}
    if args.artifact:
        collection = await artifact_collection(remote, args)
    hunt = await remote.create_hunt(
        **collection, client_condition=args.client_condition,
        server_condition=args.server_condition, rate=args.rate, limit=args.limit,
        expires=args.expires, description=args.description, start=args.start,
        start_at=args.start_at, max_errors=args.max_errors, **limit_arguments(args),
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


async def query_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    result = await remote.query_hunt(hunt_id=args.hunt_id, query=args.vql, limit=args.limit)
    write_collected(result["rows"], args.format, sys.stdout)
    if result["truncated"]:
        sys.stdout.flush()
        print(f"velotui hunt query: cut at {result['limit']} rows: --limit to raise it",
              file=sys.stderr)
    return 0


async def estimate_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    result = await remote.estimate_hunt(server_condition=args.server_condition,
                                        client_condition=args.client_condition)
    if args.json:
        print(json.dumps(result))
    else:
        line = f"matches {result['matched']} of {result['total']} known clients"
        if result.get("excluded"):
            line += f" ({result['excluded']} excluded by their labels)"
        if result["undetermined"]:
            line += (f" ({result['undetermined']} cannot be judged from their last known facts)")
        if result.get("errored"):
            line += f"; the server-side condition failed on {result['errored']} of them"
        print(line)
        for error in result.get("errors", []):
            print(f"  {error}")
    return 0


def _export_handler(args: argparse.Namespace) -> int:
    if args.output is None and args.keep_on_server is None:
        print("velotui hunt: export needs -o FILE.zip (on this machine), --keep-on-server"
              " NAME.zip (on the server), or both", file=sys.stderr)
        return 2
    return run_remote(args, export_hunt)


async def export_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    events = remote.export_hunt(hunt_id=args.hunt_id, format=args.format, summary=args.summary,
                                keep_on_server=args.keep_on_server,
                                send=args.output is not None)
    if args.output is None:
        return await _keep_on_server_only(events)
    shown = _ProgressLine()
    try:
        received = await receive_export(events, args.output, shown.update)
    except ExportReceiveError as error:
        shown.end()
        print(f"velotui hunt export: {error}", file=sys.stderr)
        return 1
    shown.end()
    print(f"wrote {received.path}: {received.clients} clients, {received.rows} rows,"
          f" {received.entries} entries, {received.bytes} bytes, SHA-256 {received.sha256}")
    if received.kept:
        print(f"kept a copy on the server: {received.kept}")
    return 0


async def _keep_on_server_only(events: Any) -> int:
    shown = _ProgressLine()
    done: dict[str, Any] | None = None
    async for event in events:
        if event.get("event") == "progress":
            shown.update(ReceiveProgress(event["clients_done"], event["clients_total"],
                                         event["rows_written"], 0))
        elif event.get("event") == "done":
            done = event
    shown.end()
    if done is None:
        print("velotui hunt export: the server ended the export without finishing it",
              file=sys.stderr)
        return 1
    print(f"kept on the server {done['kept']}: {done['clients']} clients, {done['rows']} rows,"
          f" {done['entries']} entries, {done['bytes']} bytes, SHA-256 {done['sha256']}")
    return 0


class _ProgressLine:
    """One line on standard error, rewritten at most five times a second, on a terminal only."""

    def __init__(self) -> None:
        self._shown = 0.0
        self._used = False

    def update(self, progress: ReceiveProgress) -> None:
        if not sys.stderr.isatty() or time.monotonic() - self._shown < 0.2:
            return
        self._shown = time.monotonic()
        self._used = True
        received = f", {size(progress.bytes_received)} received" if progress.bytes_received \
            else ""
        print(f"\rexporting: {progress.clients_done}/{progress.clients_total} clients,"
              f" {progress.rows} rows{received}\x1b[K", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self._used:
            print(file=sys.stderr)
            self._used = False


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
