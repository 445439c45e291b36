"""The options that set a collection's limits, shared by ``velotui collect`` and ``velotui hunt
create``. Left out, a limit takes the server's finite default; 0 means no limit."""

from __future__ import annotations

import argparse
from typing import Any

from velotui.server.data.records import DEFAULT_LIMITS

_OPTIONS = (
    ("--timeout", "timeout", float, "S", "seconds each client has to finish"),
    ("--max-rows", "max_rows", int, "N", "rows"),
    ("--max-upload-bytes", "max_upload_bytes", int, "N", "bytes of uploaded files"),
    ("--max-uploads", "max_uploads", int, "N", "uploaded files"),
    ("--max-logs", "max_logs", int, "N", "log lines (the rest are dropped)"),
    ("--max-log-bytes", "max_log_bytes", int, "N", "bytes of log lines"),
)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (0: none)")
    for flag, name, kind, metavar, what in _OPTIONS:
        default = f"{getattr(DEFAULT_LIMITS, name):,g}" if name == "timeout" else \
            f"{getattr(DEFAULT_LIMITS, name):,}"
        group.add_argument(flag, dest=name, type=kind, default=None, metavar=metavar,
                           help=f"at most this many {what} (default {default})"
                           if name != "timeout" else f"{what} (default {default})")


def limit_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The limits the operator gave, for the operator API (defaults left to the server)."""
    return {name: getattr(args, name) for _flag, name, *_rest in _OPTIONS
            if getattr(args, name) is not None}
