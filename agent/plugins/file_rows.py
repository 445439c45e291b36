"""File rows: the columns glob(), stat() and the accessors give for one file.

A file row has the columns of Velociraptor's glob(): Name, OSPath, FullPath, Size, Mode, Mtime,
Atime, Ctime, Btime, Data (Data.Link: where a link points), IsDir, IsLink. For a symlink the
columns describe what it points to (so a link to a directory has IsDir true) and IsLink says
that the path itself is a link.
"""

from __future__ import annotations

import os
import stat as stat_module
from datetime import UTC, datetime
from typing import Any

# Go's os.FileMode.String() prints these type letters, in this order, before the permissions.
_GO_TYPE_LETTERS = "dalTLDpSugct?"


def go_file_mode(st_mode: int) -> str:
    """The mode as Go's ``os.FileMode.String()`` writes it, e.g. ``-rw-r--r--``, ``drwxr-xr-x``."""
    kind = stat_module.S_IFMT(st_mode)
    letters: set[str] = set()
    if kind == stat_module.S_IFDIR:
        letters.add("d")
    elif kind == stat_module.S_IFLNK:
        letters.add("L")
    elif kind == stat_module.S_IFBLK:
        letters.add("D")
    elif kind == stat_module.S_IFCHR:
        letters.update("Dc")
    elif kind == stat_module.S_IFIFO:
        letters.add("p")
    elif kind == stat_module.S_IFSOCK:
        letters.add("S")
    elif kind != stat_module.S_IFREG:
        letters.add("?")
    if st_mode & stat_module.S_ISUID:
        letters.add("u")
    if st_mode & stat_module.S_ISGID:
        letters.add("g")
    if st_mode & stat_module.S_ISVTX:
        letters.add("t")
    kind_text = "".join(letter for letter in _GO_TYPE_LETTERS if letter in letters) or "-"
    permissions = "".join(
        letter if st_mode & (1 << (8 - position)) else "-"
        for position, letter in enumerate("rwxrwxrwx")
    )
    return kind_text + permissions


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def file_row(path: str, link_status: os.stat_result | None = None) -> dict[str, Any]:
    """The file row for ``path`` (already absolute); raises OSError when it cannot be stat'ed.

    ``link_status`` is the path's lstat() result when the caller already has it.
    """
    if link_status is None:
        link_status = os.lstat(path)
    is_link = stat_module.S_ISLNK(link_status.st_mode)
    status = link_status
    if is_link:
        try:
            status = os.stat(path)
        except OSError:
            pass  # a dangling link: describe the link itself
    name = os.path.basename(path.rstrip("/\\")) or path
    data: dict[str, Any] = {}
    if is_link:
        try:
            data["Link"] = os.readlink(path)
        except OSError:
            pass
    return {
        "Name": name,
        "OSPath": path,
        "FullPath": path,
        "Size": status.st_size,
        "Mode": go_file_mode(status.st_mode),
        "Mtime": _utc(status.st_mtime),
        "Atime": _utc(status.st_atime),
        "Ctime": _utc(status.st_ctime),
        # The birth time, where the platform's stat() tells it (not on Linux: NULL).
        "Btime": _utc(status.st_birthtime) if hasattr(status, "st_birthtime") else None,
        "Data": data,  # Link: where a symbolic link points, as Velociraptor's Data.Link
        "IsDir": stat_module.S_ISDIR(status.st_mode),
        "IsLink": is_link,
    }
