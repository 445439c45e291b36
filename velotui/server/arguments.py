"""Checks of what operators send: each argument's type and range, refused in one line.

Arguments come as JSON from the operator API (or as Python values in process), so a number may be
a string, a float may be NaN or infinite, and anything may be null or a list. Each check returns
the value in the type the server works with, or raises ``ServiceError`` naming the argument.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import Any

from velotui.server.errors import ServiceError
from velotui.server.hunts import parse_duration
from velotui.server.ids import HUNT_ID, is_flow_id
from velotui.wire.identity import CLIENT_ID_PATTERN

MAX_TEXT = 64 * 1024
MAX_QUERY = 256 * 1024
# Beyond this a count or a size means nothing real and only risks overflow downstream.
MAX_WHOLE = 2**53


def text(value: Any, name: str, *, maximum: int = MAX_TEXT, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ServiceError(f"{name} must be text")
    if len(value) > maximum:
        raise ServiceError(f"{name} is longer than {maximum} characters")
    if not empty and not value.strip():
        raise ServiceError(f"{name} is empty")
    if "\x00" in value:
        raise ServiceError(f"{name} holds a NUL character")
    return value


def number(value: Any, name: str, *, minimum: float = 0.0, maximum: float = float(MAX_WHOLE)
           ) -> float:
    """A finite number within [minimum, maximum] (numeric text is accepted)."""
    if isinstance(value, bool):
        raise ServiceError(f"{name} must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ServiceError(f"{name} must be a number, not {value[:40]!r}") from None
    if not isinstance(value, int | float):
        raise ServiceError(f"{name} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ServiceError(f"{name} must be a finite number")
    if not minimum <= value <= maximum:
        raise ServiceError(f"{name} must be between {minimum:g} and {maximum:g}")
    return value


def whole(value: Any, name: str, *, minimum: int = 0, maximum: int = MAX_WHOLE) -> int:
    """A whole number within [minimum, maximum] (whole-number text is accepted)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,19}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServiceError(f"{name} must be a whole number")
    if not minimum <= value <= maximum:
        raise ServiceError(f"{name} must be between {minimum} and {maximum}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ServiceError(f"{name} must be true or false")
    return value


def one_of(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ServiceError(f"{name} must be one of {', '.join(choices)}")
    return value


def duration(value: Any, name: str) -> float:
    """Seconds, given as a number of seconds or a duration like ``90m``, ``12h``, ``7d``."""
    if isinstance(value, str) and not re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        try:
            return parse_duration(value)
        except ValueError as error:
            raise ServiceError(f"{name}: {error}") from None
    seconds = number(value, name, maximum=100 * 365 * 86400.0)
    if seconds <= 0:
        raise ServiceError(f"{name} must be more than zero")
    return seconds


def moment(value: Any, name: str, now: float | None = None) -> float:
    """A point in time as epoch seconds, given as epoch seconds, ISO 8601 text
    (``2026-12-06T14:00``, local time when it names no zone) or ``+DURATION`` from ``now``
    (``+2h``, ``+90m``)."""
    now = time.time() if now is None else now
    if isinstance(value, str):
        written = value.strip()
        if written.startswith("+"):
            try:
                return now + parse_duration(written[1:])
            except ValueError as error:
                raise ServiceError(f"{name}: {error}") from None
        if re.fullmatch(r"\d+(\.\d+)?", written):
            value = float(written)
        else:
            try:
                when = datetime.fromisoformat(written)
            except ValueError:
                raise ServiceError(f"{name}: {written[:40]!r} is not a time (like"
                                   " 2026-12-06T14:00, +2h or epoch seconds)") from None
            return when.timestamp()  # a time with no zone is local time
    return number(value, name, maximum=float(MAX_WHOLE))


def until_moment(value: Any, name: str, now: float | None = None) -> float:
    """A point in time given as a duration from ``now`` (``12h``, or seconds) or as a time
    ``moment`` accepts."""
    now = time.time() if now is None else now
    if isinstance(value, str) and not value.strip().startswith("+"):
        try:
            return now + parse_duration(value)
        except ValueError:
            return moment(value, name, now)
    if isinstance(value, str):
        return moment(value, name, now)
    return now + duration(value, name)


def error_limit(value: Any, name: str = "max errors") -> tuple[int, float]:
    """A hunt's error limit as (count, percent), one of them 0: ``5`` clients, or ``"10%"``
    of the clients recruited; 0 for none."""
    if isinstance(value, str) and value.strip().endswith("%"):
        share = number(value.strip()[:-1], name, maximum=100.0)
        if share <= 0:
            raise ServiceError(f"{name}: a share must be more than 0%")
        return 0, share
    return whole(value, name, maximum=10**9), 0.0


def client_id(value: Any, name: str = "client ID") -> str:
    if not isinstance(value, str) or CLIENT_ID_PATTERN.fullmatch(value) is None:
        raise ServiceError(f"{name} must look like C.0123456789abcdef")
    return value


def hunt_id(value: Any) -> str:
    if not isinstance(value, str) or HUNT_ID.fullmatch(value) is None:
        raise ServiceError("hunt ID must look like H.0123456789ABC (see: velotui hunt list)")
    return value


def flow_id(value: Any) -> str:
    if not isinstance(value, str) or not is_flow_id(value):
        raise ServiceError("flow ID must look like F.0123456789ABC")
    return value


def labels(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 256:
        raise ServiceError(f"{name} must be a list of at most 256 labels")
    found = []
    for label in value:
        label = text(label, "a label", maximum=128, empty=False)
        if any(ord(character) < 32 for character in label):
            raise ServiceError(f"bad label {label!r}")
        found.append(label)
    return found
