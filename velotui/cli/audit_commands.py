"""``velotui audit``: the operator actions; ``audit verify`` checks their hash chain, ``audit
--follow`` streams them as they commit."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from velotui.cli.client_commands import run_remote
from velotui.cli.connection import UsageError, add_server_options
from velotui.cli.output import render_table
from velotui.server.remote import RemoteService


def add_parser(subparsers: Any) -> None:
    audit = subparsers.add_parser(
        "audit", help="every operator action, with time and who; 'audit verify' checks the"
                      " chain")
    add_server_options(audit)
    audit.add_argument("check", nargs="?", choices=("verify",), metavar="verify",
                       help="check the records' hash chain and name the first broken record")
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--limit", type=int, default=1000, metavar="N")
    audit.add_argument("--follow", action="store_true",
                       help="then print each new record as it is written, until interrupted")
    audit.set_defaults(handler=lambda args: run_remote(args, _audit))


async def _audit(remote: RemoteService, args: argparse.Namespace) -> int:
    if args.check == "verify":
        if args.follow:
            raise UsageError("audit verify does not follow: leave out --follow")
        return await verify_audit(remote, args)
    return await show_audit(remote, args)


async def verify_audit(remote: RemoteService, args: argparse.Namespace) -> int:
    result = await remote.verify_audit()
    if args.json:
        print(json.dumps(result))
    elif result["intact"]:
        print(f"audit chain intact: {result['records']} records")
    else:
        print(f"audit chain broken at record {result['broken_at']}: {result['problem']}")
    return 0 if result["intact"] else 1


async def show_audit(remote: RemoteService, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit: give 0 or more")
    entries = await remote.audit_log(limit=args.limit) if args.limit or not args.follow else []
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
    elif entries:
        sys.stdout.write(render_table([_row(e) for e in entries]))
    elif not args.follow:
        sys.stdout.write("no operator actions yet\n")
    if not args.follow:
        return 0
    sys.stdout.flush()
    after = entries[-1]["id"] if entries else None
    params = {} if after is None else {"after": after}
    async for event in remote.follow_audit(**params):
        entry = {key: value for key, value in event.items() if key != "event"}
        if args.json:
            print(json.dumps(entry), flush=True)
        else:
            print(_line(entry), flush=True)
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _details(entry: dict[str, Any]) -> str:
    return json.dumps(entry["details"]) if entry["details"] else ""


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    outcome = entry["outcome"] if entry["outcome"] == "allowed" else (
        f"refused: {entry['reason']}")
    return {"ID": entry["id"], "Time": _when(entry["time"]), "Who": entry["actor"],
            "Action": entry["action"], "Target": entry["target"], "Outcome": outcome,
            "Details": _details(entry)}


def _line(entry: dict[str, Any]) -> str:
    row = _row(entry)
    return "  ".join(str(value) for value in row.values() if value != "")
