"""copy() and rm(): the two VQL functions that change files on the endpoint.

``copy(filename, accessor, dest, permissions, append, create_directories)`` writes what the
accessor reads (with ``accessor='data'`` the filename is the content) to ``dest`` and returns
``dest``; ``rm(filename)`` removes one file (never a folder) and returns TRUE. Both return NULL
(or FALSE) with a one-line logged error when they cannot.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

from agent.plugins.accessors import accessor_for
from agent.plugins.arguments import os_error_text, path_argument
from agent.plugins.blocking import call_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

BLOCK_BYTES = 1024 * 1024


def register(registry: Registry) -> None:
    registry.function(copy)
    registry.function(rm)


def _permissions(scope: Scope, value: Any, function: str) -> int | None:
    if value is None or value == "":
        return 0o600
    if value == "x":
        return 0o700
    try:
        return int(str(value), 8)
    except ValueError:
        scope.error(f"{function}(): permissions must be 'x' or octal like '0644', not {value!r}")
        return None


def _copy(source: Any, accessor: Any, dest: str, mode: int, dir_mode: int, append: bool,
          create_directories: bool) -> None:
    if create_directories:
        os.makedirs(os.path.dirname(dest) or ".", mode=dir_mode, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(dest, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(descriptor, "wb") as out, accessor.open(source) as handle:
        shutil.copyfileobj(handle, out, BLOCK_BYTES)


async def copy(
    scope: Scope, *, filename: Any, accessor: Any = None, dest: Any, permissions: Any = None,
    dir_permissions: Any = None, append: Any = False, create_directories: Any = False,
) -> str | None:
    """Copy what ``filename`` names (through ``accessor``) to ``dest``; ``dest``, or NULL."""
    reader = accessor_for(scope, "copy", accessor)
    target = dest_path = None
    if reader is not None:
        target = reader.target(scope, "copy", "filename", filename)
        dest_path = path_argument(scope, "copy", "dest", dest)
    mode = _permissions(scope, permissions, "copy")
    dir_mode = _permissions(scope, dir_permissions or "0700", "copy")
    if reader is None or target is None or dest_path is None or mode is None or dir_mode is None:
        return None
    try:
        await call_blocking(_copy, target, reader, dest_path, mode, dir_mode, bool(append),
                            bool(create_directories))
    except OSError as error:
        scope.error(f"copy(): cannot copy {reader.describe(target)} to {dest_path}: "
                    f"{os_error_text(error)}")
        return None
    return dest_path


def _remove(path: str) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        raise IsADirectoryError(21, "Is a directory")
    os.unlink(path)


async def rm(scope: Scope, *, filename: Any) -> bool:
    """Remove the file ``filename`` (a link itself, never what it points to; never a
    folder); TRUE when it is gone."""
    path = path_argument(scope, "rm", "filename", filename)
    if path is None:
        return False
    try:
        await call_blocking(_remove, path)
    except OSError as error:
        scope.error(f"rm(): cannot remove {path}: {os_error_text(error)}")
        return False
    return True
