"""users(): the machine's user accounts, with the columns of Velociraptor's Linux.Sys.Users."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import psutil

from agent.plugins.arguments import os_error_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

PASSWD_PATH = "/etc/passwd"


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_passwd(text: str) -> list[dict[str, Any]]:
    """One row per account line of a passwd file: User, Description, Uid, Gid, Homedir, Shell."""
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 7:
            continue  # not an account line (a NIS "+" entry, a truncated line)
        user, _password, uid, gid, description, homedir, shell = fields[:7]
        rows.append({
            "User": user,
            "Description": description,
            "Uid": _number(uid),
            "Gid": _number(gid),
            "Homedir": homedir,
            "Shell": shell,
        })
    return rows


def _read_passwd() -> str:
    with open(PASSWD_PATH, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _logged_in_users() -> list[dict[str, Any]]:
    names = dict.fromkeys(session.name for session in psutil.users())
    return [
        {"User": name, "Description": "", "Uid": None, "Gid": None, "Homedir": None,
         "Shell": None}
        for name in names
    ]


async def users(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row per user account (User, Description, Uid, Gid, Homedir, Shell): from /etc/passwd
    on Linux, elsewhere the users with a session, with only User known."""
    if sys.platform.startswith("linux"):
        try:
            text = await asyncio.to_thread(_read_passwd)
        except OSError as error:
            scope.error(f"users(): {PASSWD_PATH}: {os_error_text(error)}")
            return
        rows = parse_passwd(text)
    else:
        rows = await asyncio.to_thread(_logged_in_users)
    for row in rows:
        yield row


def register(registry: Registry) -> None:
    """Add users() to the registry."""
    registry.plugin(users)
