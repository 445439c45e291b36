"""``velotui hunt explain`` and ``velotui clients show``: why a client stands where it does in a
hunt, and every hunt and collection a client took part in."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from velotui.cli.client_commands import run_remote
from velotui.cli.connection import add_server_options
from velotui.cli.output import render_table
from velotui.server.remote import RemoteService

STATUS_NAMES = {"unknown_client": "unknown client", "not_connected": "not connected",
                "not_checked": "not checked", "not_matched": "not matched",
                "condition_failed": "condition failed"}
CONDITION_ROWS_PRINTED = 10


def add_explain_parser(hunt_actions: Any) -> None:
    """``hunt explain ID CLIENT_ID``, under ``velotui hunt``."""
    explain = hunt_actions.add_parser(
        "explain", help="where one client stands in a hunt, and why",
        description="Where one client stands in a hunt and why: never connected since the hunt"
        " started, not checked yet, its condition's rows and what the server condition made of"
        " them, its place in the pending queue, its collection running, finished or failed.",
    )
    add_server_options(explain)
    explain.add_argument("hunt_id", metavar="ID")
    explain.add_argument("client_id", metavar="CLIENT_ID")
    explain.add_argument("--json", action="store_true", help="the explanation as JSON")
    explain.set_defaults(handler=lambda args: run_remote(args, explain_client))


def add_show_parser(clients_actions: Any) -> None:
    """``clients show CLIENT_ID``, under ``velotui clients``."""
    show = clients_actions.add_parser(
        "show", help="one client: every hunt and collection it took part in",
    )
    add_server_options(show)
    show.add_argument("client_id", metavar="CLIENT_ID")
    show.add_argument("--json", action="store_true", help="the client and its history as JSON")
    show.set_defaults(handler=lambda args: run_remote(args, show_client))


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


async def explain_client(remote: RemoteService, args: argparse.Namespace) -> int:
    found = await remote.explain_hunt_client(hunt_id=args.hunt_id, client_id=args.client_id)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    status = found["status"]
    print(f"{found['hunt_id']}  {found['client_id']}: {STATUS_NAMES.get(status, status)}")
    print(found["summary"])
    details = found["details"]
    rows = details.get("condition_rows") or []
    if rows:
        shown = rows[:CONDITION_ROWS_PRINTED]
        count = details.get("condition_row_count") or len(rows)
        more = f" (the first {len(shown)} of {count})" if count > len(shown) else ""
        print(f"the client condition's rows{more}:")
        sys.stdout.write(render_table(shown))
    return 0


async def show_client(remote: RemoteService, args: argparse.Namespace) -> int:
    history = await remote.client_history(client_id=args.client_id)
    if args.json:
        print(json.dumps(history, indent=2, ensure_ascii=False))
        return 0
    client = history["client"]
    seen = "online now" if client["online"] else f"last seen {_when(client['last_seen'])}"
    print(f"{client['client_id']}  {client['hostname'] or '(no hostname)'}  {client['os']}"
          f"  {seen}")
    if client["labels"]:
        print(f"labels: {', '.join(client['labels'])}")
    if client.get("revoked"):
        print(f"revoked {_when(client['revoked'])}")
    print()
    print("hunts:")
    sys.stdout.write(render_table([_hunt_row(h) for h in history["hunts"]])
                     if history["hunts"] else "(none)\n")
    print()
    print("collections:")
    sys.stdout.write(render_table([_collection_row(f) for f in history["collections"]])
                     if history["collections"] else "(none)\n")
    return 0


def _hunt_row(hunt: dict[str, Any]) -> dict[str, Any]:
    return {
        "Hunt": hunt["hunt_id"],
        "Description": hunt["description"],
        "Hunt state": hunt["hunt_state"],
        "Queue": hunt["queue"].replace("_", " "),
        "FlowId": hunt["flow_id"] or "-",
        "State": hunt["state"] or "-",
        "Rows": hunt["rows"],
        "Uploads": hunt["uploads"],
        "Updated": _when(hunt["updated"]),
        "Error": hunt["error"] or "",
    }


def _collection_row(flow: dict[str, Any]) -> dict[str, Any]:
    return {
        "Flow": flow["flow_id"],
        "Created": _when(flow["created"]),
        "State": flow["state"],
        "Rows": flow["rows"],
        "Uploads": len(flow["uploads"]),
        "Query": flow["query"],
        "Error": flow["error"] or "",
    }
