"""``velotui hunt request-approval|approve|reject`` and ``velotui settings set|show``: four-eyes
approval of hunts and the server settings that govern it."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from velotui.cli.client_commands import run_remote
from velotui.cli.connection import add_server_options
from velotui.server.remote import RemoteService

SETTING_NAMES = ("approvals", "approval_hours", "excluded_labels")


def add_approval_parsers(actions: Any) -> None:
    """The hunt actions that ask for, give and refuse an approval."""
    request = actions.add_parser("request-approval",
                                 help="ask another operator to approve a hunt as it is now")
    add_server_options(request)
    request.add_argument("hunt_id", metavar="ID")
    request.add_argument("--reason", default="", metavar="TEXT", help="why it should run")
    request.add_argument("--json", action="store_true")
    request.set_defaults(handler=lambda args: run_remote(args, request_approval))

    approve = actions.add_parser("approve", help="approve another operator's hunt as it is")
    add_server_options(approve)
    approve.add_argument("hunt_id", metavar="ID")
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(handler=lambda args: run_remote(args, approve_hunt))

    reject = actions.add_parser("reject", help="reject a hunt's approval request")
    add_server_options(reject)
    reject.add_argument("hunt_id", metavar="ID")
    reject.add_argument("--reason", required=True, metavar="TEXT", help="why, for its author")
    reject.add_argument("--json", action="store_true")
    reject.set_defaults(handler=lambda args: run_remote(args, reject_hunt))


def add_settings_parser(subparsers: Any) -> None:
    settings = subparsers.add_parser("settings", help="the server's settings (approvals...)")
    actions = settings.add_subparsers(dest="settings_command", metavar="ACTION",
                                      required=True)
    show = actions.add_parser("show", help="every setting in force")
    add_server_options(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=lambda args: run_remote(args, show_settings))
    change = actions.add_parser(
        "set", help="change a setting: approvals required|off, approval_hours N,"
        " excluded_labels LABEL,LABEL ('' for none)")
    add_server_options(change)
    change.add_argument("key", choices=SETTING_NAMES, metavar="KEY")
    change.add_argument("value", metavar="VALUE")
    change.add_argument("--json", action="store_true")
    change.set_defaults(handler=lambda args: run_remote(args, set_setting))


def approval_text(approval: dict[str, Any]) -> str:
    """A hunt's approval in a few words: "awaiting approval (requested by ann)"."""
    state = approval.get("state", "none")
    if state == "pending":
        return f"awaiting approval (requested by {approval['requester']})"
    if state == "approved":
        return (f"approved by {approval['decided_by']} until"
                f" {time.strftime('%Y-%m-%d %H:%M', time.localtime(approval['expires']))}")
    if state == "rejected":
        return f"rejected by {approval['decided_by']}: {approval['reason']}"
    if state == "expired":
        return f"approval by {approval['decided_by']} expired"
    if state == "void":
        return "approval void: the hunt changed since"
    return "not requested"


async def _decided(args: argparse.Namespace, hunt: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(hunt, indent=2))
    else:
        print(f"{hunt['hunt_id']}: {approval_text(hunt['approval'])}")
    return 0


async def request_approval(remote: RemoteService, args: argparse.Namespace) -> int:
    return await _decided(args, await remote.request_approval(hunt_id=args.hunt_id,
                                                              reason=args.reason))


async def approve_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    return await _decided(args, await remote.approve_hunt(hunt_id=args.hunt_id))


async def reject_hunt(remote: RemoteService, args: argparse.Namespace) -> int:
    return await _decided(args, await remote.reject_hunt(hunt_id=args.hunt_id,
                                                         reason=args.reason))


def _settings_lines(settings: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in settings.items():
        if isinstance(value, list):
            shown = ", ".join(value) or "(none)"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        lines.append(f"{key}: {shown}")
    return lines


async def show_settings(remote: RemoteService, args: argparse.Namespace) -> int:
    settings = await remote.get_settings()
    if args.json:
        print(json.dumps(settings))
    else:
        print("\n".join(_settings_lines(settings)))
    return 0


async def set_setting(remote: RemoteService, args: argparse.Namespace) -> int:
    settings = await remote.set_setting(key=args.key, value=args.value)
    if args.json:
        print(json.dumps(settings))
    else:
        print(next(line for line in _settings_lines(settings)
                   if line.startswith(f"{args.key}:")))
    return 0
