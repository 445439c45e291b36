"""How the console writes times, durations and counts: UTC (incident timelines are UTC), short,
and the same at every size."""

from __future__ import annotations

import math
import time


def utc(timestamp: float | None) -> str:
    """``2026-11-27 22:13`` in UTC, or ``-``."""
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


def utc_seconds(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def duration(seconds: float | None) -> str:
    """A short duration: ``45s``, ``2m``, ``3m20s``, ``1h05m``, ``2h``, ``3d04h``; ``-`` for
    nothing and ``—`` for no finite figure. Rounded to the second; trailing zero parts are left
    out so round figures read as such."""
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return "—"
    total = max(round(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if hours else f"{days}d"


def age(timestamp: float | None, now: float) -> str:
    """How long ago: ``now`` within a few seconds, else ``5m10s ago``."""
    if not timestamp:
        return "never"
    seconds = now - timestamp
    if seconds < 5:
        return "now"
    return f"{duration(seconds)} ago"


def size(count: int) -> str:
    """Bytes as ``512 B``, ``1.5 MB``."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def rate(per_minute: float) -> str:
    return f"{per_minute:g}/min" if per_minute else "unlimited"


def countdown(start_at: float | None, now: float) -> str:
    """How long until a scheduled start, to the minute beyond an hour and to the second
    within it: ``starts in 2d 3h``, ``starts in 1h 59m``, ``starts in 4m 10s``; ``starting``
    once due (the server starts it within a moment)."""
    if not start_at:
        return "-"
    left = int(start_at - now)  # whole seconds left: 1h 59m until it is 1h 59m away
    if left <= 0:
        return "starting"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        parts = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        parts = f"{hours}h {minutes}m" if minutes else f"{hours}h"
    elif minutes:
        parts = f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    else:
        parts = f"{seconds}s"
    return f"starts in {parts}"
