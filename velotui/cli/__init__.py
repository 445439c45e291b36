"""The ``velotui`` command: the console by default, and subcommands for everything else."""

from __future__ import annotations

import argparse
import os
import sys

from velotui.cli import (
    approval_commands,
    artifact_commands,
    client_commands,
    console,
    datastore_commands,
    hunt_commands,
    operator_commands,
    query,
    server_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="velotui",
        description="Fleet-wide hunting for incident responders, from a terminal.",
    )
    console.add_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    query.add_parser(subparsers)
    server_commands.add_parsers(subparsers)
    datastore_commands.add_parsers(subparsers)
    client_commands.add_parsers(subparsers)
    hunt_commands.add_parsers(subparsers)
    artifact_commands.add_parsers(subparsers)
    operator_commands.add_parsers(subparsers)
    approval_commands.add_settings_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return console.console_main(args)
    try:
        status = int(handler(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return status
    except BrokenPipeError:
        # The reader went away (`velotui hunt list | head -1`): stop quietly. Python would
        # flush stdout again at exit and fail once more, so stdout goes to devnull first, as
        # the Python documentation's note on SIGPIPE recommends.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
