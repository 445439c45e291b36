"""``velotui query``: run VQL on this machine, like ``velociraptor query``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from velotui.cli.output import FORMATS, write_rows
from velotui.vql import VQLSyntaxError, compile_query, run


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "query",
        help="run a VQL query on this machine",
        description="Run a VQL query on this machine with the agent's plugins. Rows go to "
        "standard output, logged errors to standard error.",
    )
    parser.add_argument("vql", help="the query text")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="bind a variable (JSON; text that is not JSON is a string)",
    )
    parser.add_argument("--format", choices=FORMATS, default="jsonl")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        help="labels for config.Labels, as an agent would have them",
    )
    parser.set_defaults(handler=main)


def parse_env(pairs: list[str]) -> dict[str, Any]:
    """``NAME=JSON`` pairs as variables. Raises ValueError for a pair without '='."""
    env: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env {pair!r}: expected NAME=JSON")
        try:
            env[name] = json.loads(text)
        except json.JSONDecodeError:
            env[name] = text
    return env


def _log_to_stderr(level: str, message: str) -> None:
    print(f"[{level}] {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from agent.plugins import client_registry

    try:
        env = parse_env(args.env)
    except ValueError as error:
        print(f"velotui query: {error}", file=sys.stderr)
        return 2
    registry = client_registry(labels=args.label)
    try:
        program = compile_query(args.vql, registry)
    except VQLSyntaxError as error:
        print(error.render(), file=sys.stderr)
        return 1
    rows = run(program, env=env, registry=registry, on_log=_log_to_stderr)
    asyncio.run(write_rows(rows, args.format, sys.stdout))  # a closed pipe: see cli.main
    return 0
