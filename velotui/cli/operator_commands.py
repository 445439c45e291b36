"""``velotui operator add|list|remove|role``: the people who may use the server, and their roles
(an admin's commands: they go through the operator API, as the admin of --token-file or of the
datastore's api_token)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from velotui.cli.client_commands import run_remote
from velotui.cli.connection import add_server_options
from velotui.cli.output import render_table
from velotui.durable_files import write_file_atomically
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.roles import ROLES


def add_parsers(subparsers: Any) -> None:
    operator = subparsers.add_parser(
        "operator", help="add, list and remove operators, and change their roles",
        description=f"Operators and their roles ({' < '.join(ROLES)}: each can do what the ones"
        " before it can).")
    actions = operator.add_subparsers(dest="operator_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="a new operator with its own token (shown once)")
    add_server_options(add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("-o", "--output", type=Path, metavar="TOKEN_FILE",
                     help="write the token to this new file (0600) instead of showing it")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=lambda args: _run(args, add_operator))

    listing = actions.add_parser("list", help="every operator and its role")
    add_server_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(handler=lambda args: _run(args, list_operators))

    remove = actions.add_parser("remove", help="remove an operator: its token stops working")
    add_server_options(remove)
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(handler=lambda args: _run(args, remove_operator))

    role = actions.add_parser("role", help="change an operator's role")
    add_server_options(role)
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", metavar="ROLE", choices=ROLES)
    role.add_argument("--json", action="store_true")
    role.set_defaults(handler=lambda args: _run(args, set_role))


def _run(args: argparse.Namespace, action: Any) -> int:
    args.command = f"operator {args.operator_command}"
    return run_remote(args, action)


async def add_operator(remote: RemoteService, args: argparse.Namespace) -> int:
    output: Path | None = args.output
    if output is not None and (output.exists() or output.is_symlink()):
        raise RemoteError(f"{output} exists already: the token goes to a new file")
    added = await remote.add_operator(name=args.name, role=args.role)
    token = added.pop("token")
    if output is not None:
        try:
            write_file_atomically(output, (token + "\n").encode(), mode=0o600)
        except OSError as error:
            # The operator exists, but nobody has its token: say how to start over.
            raise RemoteError(f"cannot write {output}: {error.strerror}; the token is lost,"
                              f" remove the operator (velotui operator remove {args.name})"
                              " and add it again") from None
        added["token_file"] = str(output)
    else:
        added["token"] = token
    if args.json:
        print(json.dumps(added))
    elif output is not None:
        print(f"added {added['name']} ({added['role']}); token written to {output}")
    else:
        print(f"added {added['name']} ({added['role']}); its token, shown this once:",
              file=sys.stderr)
        print(token)
    return 0


async def list_operators(remote: RemoteService, args: argparse.Namespace) -> int:
    operators = await remote.list_operators()
    if args.json:
        for operator in operators:
            print(json.dumps(operator))
        return 0
    rows = [{"Name": o["name"], "Role": o["role"], "Created by": o["creator"],
             "Created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o["created"]))}
            for o in operators]
    sys.stdout.write(render_table(rows))
    return 0


async def remove_operator(remote: RemoteService, args: argparse.Namespace) -> int:
    removed = await remote.remove_operator(name=args.name)
    print(json.dumps(removed) if args.json else f"removed {args.name}")
    return 0


async def set_role(remote: RemoteService, args: argparse.Namespace) -> int:
    changed = await remote.set_operator_role(name=args.name, role=args.role)
    print(json.dumps(changed) if args.json
          else f"{changed['name']}: {changed['old_role']} -> {changed['role']}")
    return 0
