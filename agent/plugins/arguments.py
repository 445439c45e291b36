"""Checking the arguments that queries pass to the client plugins."""

from __future__ import annotations

import os
from typing import Any

from velotui.vql.scope import Scope


def path_argument(scope: Scope, function: str, argument: str, value: Any) -> str | None:
    """The argument as a path string, or None after logging an error when it is not one."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    if value is None:
        scope.error(f"{function}(): {argument} is NULL")
    else:
        scope.error(f"{function}(): {argument} must be a path string, not {value!r}")
    return None


def int_argument(
    scope: Scope, function: str, argument: str, value: Any, *, minimum: int = 0
) -> int | None:
    """The argument as an int no smaller than ``minimum``, or None after logging an error."""
    try:
        if isinstance(value, bool | float):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        scope.error(f"{function}(): {argument} must be an integer, not {value!r}")
        return None
    if number < minimum:
        scope.error(f"{function}(): {argument} must be at least {minimum}, not {number}")
        return None
    return number


def os_error_text(error: OSError) -> str:
    """The reason an OS call failed, without the path (callers name the path themselves)."""
    return error.strerror or str(error) or type(error).__name__
