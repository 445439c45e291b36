"""How a command finds a running server.

Either ``--datastore DIR`` (the URL the server recorded there, its token and CA; with
``--token-file F``, that operator's token instead), or ``--server URL --token-file F`` (with
``--ca-file``, by default ``ca.pem`` beside the token).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from velotui.server.datastore import Datastore, default_datastore_path
from velotui.server.remote import RemoteError, RemoteService


class UsageError(Exception):
    """Wrong or missing options: exit status 2."""


def add_datastore_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datastore", type=Path, default=None, metavar="DIR",
                        help=f"the datastore folder (default {default_datastore_path()})")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    add_datastore_option(parser)
    parser.add_argument("--server", metavar="URL", help="a server's URL, e.g. wss://host:8443")
    parser.add_argument("--token-file", type=Path, metavar="F", help="the operator API token")
    parser.add_argument("--ca-file", type=Path, metavar="F",
                        help="the server's CA certificate (default: ca.pem beside the token)")


def existing_datastore(path: Path | None) -> Datastore:
    root = path if path is not None else default_datastore_path()
    if not (root / "api_token").is_file():
        raise RemoteError(f"no velotui datastore at {root} (start one with: velotui serve)")
    return Datastore.open(root)


async def open_remote(args: Any) -> RemoteService:
    """Connect to the server the options name. Raises UsageError or RemoteError."""
    if args.server:
        if args.token_file is None:
            raise UsageError("--server needs --token-file")
        token = _read(args.token_file, "token")
        ca_file = args.ca_file or args.token_file.parent / "ca.pem"
        return await RemoteService.connect(args.server, token, _read(ca_file, "CA certificate"))
    datastore = existing_datastore(args.datastore)
    url = datastore.read_server_address()
    if url is None:
        raise RemoteError(
            f"no server is running on {datastore.root} (start one with: velotui serve"
            f" --datastore {datastore.root})"
        )
    token = _read(args.token_file, "token") if args.token_file else datastore.api_token()
    return await RemoteService.connect(url, token, datastore.ca_pem())


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip() + ("\n" if what == "CA certificate" else "")
    except OSError as error:
        raise RemoteError(f"cannot read the {what} file {path}: {error.strerror}") from None
