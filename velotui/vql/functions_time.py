"""VQL functions on time: timestamp() from every encoding Velociraptor reads (Unix epochs,
Cocoa and HFS+ times, Windows FILETIME, date text guessed or read with a Go layout) and now().
Times are timezone-aware datetimes in UTC; text without a zone is taken to be in the zone
the ``PARSE_TZ`` variable names (UTC when unset), as in Velociraptor."""

from __future__ import annotations

import email.utils
import functools
import math
import re
import time
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from velotui.vql.executor import resolve_sync
from velotui.vql.gofmt import go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import MISSING, Scope


def register(registry: Registry) -> None:
    """Add the time functions to ``registry``."""
    for fn in (timestamp, timestamp_format, now):
        registry.function(fn)


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOWS_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_COCOA_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
_HFS_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)


def from_epoch(value: float) -> datetime:
    """A Unix time whose unit is guessed from its size, as Velociraptor does: seconds, or
    milli-, micro- or nanoseconds for numbers too large to be seconds."""
    magnitude = abs(value)
    if magnitude > 1e17:
        value /= 1e9
    elif magnitude > 1e14:
        value /= 1e6
    elif magnitude > 1e11:
        value /= 1e3
    return _UNIX_EPOCH + timedelta(seconds=value)


# Go layouts --------------------------------------------------------------------------------------

_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_NAMED_LAYOUTS = {
    "ANSIC": "Mon Jan _2 15:04:05 2006",
    "UnixDate": "Mon Jan _2 15:04:05 MST 2006",
    "RubyDate": "Mon Jan 02 15:04:05 -0700 2006",
    "RFC822": "02 Jan 06 15:04 MST",
    "RFC822Z": "02 Jan 06 15:04 -0700",
    "RFC850": "Monday, 02-Jan-06 15:04:05 MST",
    "RFC1123": "Mon, 02 Jan 2006 15:04:05 MST",
    "RFC1123Z": "Mon, 02 Jan 2006 15:04:05 -0700",
    "RFC3339": "2006-01-02T15:04:05Z07:00",
    "RFC3339Nano": "2006-01-02T15:04:05.999999999Z07:00",
    "Kitchen": "3:04PM",
    "Stamp": "Jan _2 15:04:05",
    "StampMilli": "Jan _2 15:04:05.000",
    "StampMicro": "Jan _2 15:04:05.000000",
    "StampNano": "Jan _2 15:04:05.000000000",
    "DateTime": "2006-01-02 15:04:05",
    "DateOnly": "2006-01-02",
    "TimeOnly": "15:04:05",
}
# Each Go layout element and the text it reads (longest elements first, as Go matches them).
_LAYOUT_ELEMENTS = [
    ("January", r"(?P<month_name>[A-Za-z]+)"),
    ("Monday", r"[A-Za-z]+"),
    ("Z07:00", r"(?P<zone>Z|[+-]\d\d:\d\d)"),
    ("-07:00", r"(?P<zone>[+-]\d\d:\d\d)"),
    ("Z0700", r"(?P<zone>Z|[+-]\d{4})"),
    ("-0700", r"(?P<zone>[+-]\d{4})"),
    ("Z07", r"(?P<zone>Z|[+-]\d\d)"),
    ("-07", r"(?P<zone>[+-]\d\d)"),
    ("2006", r"(?P<year>\d{4})"),
    ("Jan", r"(?P<month_name>[A-Za-z]{3})"),
    ("Mon", r"[A-Za-z]{3}"),
    ("MST", r"(?P<zone_name>[A-Za-z]{3,5}|[+-]\d{2,4})"),
    ("__2", r" {0,2}(?P<yday>\d{1,3})"),
    ("002", r"(?P<yday>\d{3})"),
    ("_2", r" ?(?P<day>\d{1,2})"),
    ("01", r"(?P<month>\d{2})"),
    ("02", r"(?P<day>\d{2})"),
    ("03", r"(?P<hour12>\d{2})"),
    ("04", r"(?P<minute>\d{2})"),
    ("05", r"(?P<second>\d{2})"),
    ("06", r"(?P<year2>\d{2})"),
    ("15", r"(?P<hour>\d{1,2})"),
    ("PM", r"(?P<ampm>[AaPp][Mm])"),
    ("pm", r"(?P<ampm>[AaPp][Mm])"),
    ("1", r"(?P<month>\d{1,2})"),
    ("2", r"(?P<day>\d{1,2})"),
    ("3", r"(?P<hour12>\d{1,2})"),
    ("4", r"(?P<minute>\d{1,2})"),
    ("5", r"(?P<second>\d{1,2})"),
]
_ELEMENT = re.compile(
    r"[.,](?:0+|9+)|" + "|".join(re.escape(element) for element, _ in _LAYOUT_ELEMENTS)
)
_ELEMENT_PATTERNS = dict(_LAYOUT_ELEMENTS)
_ZONE_NAMES = {
    "UTC": 0,
    "GMT": 0,
    "CET": 1,
    "CEST": 2,
    "BST": 1,
    "EET": 2,
    "EEST": 3,
    "SAST": 2,
    "IST": 5.5,
    "JST": 9,
    "AEST": 10,
    "AEDT": 11,
    "HST": -10,
    "AKST": -9,
    "AKDT": -8,
    "Z": 0,
    "EST": -5,
    "EDT": -4,
    "CST": -6,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
}
_layout_cache: dict[str, re.Pattern[str]] = {}


def _layout_regex(layout: str) -> re.Pattern[str]:
    compiled = _layout_cache.get(layout)
    if compiled is not None:
        return compiled
    parts: list[str] = []
    position = 0
    used: set[str] = set()
    for found in _ELEMENT.finditer(layout):
        parts.append(re.escape(layout[position : found.start()]))
        element = found.group(0)
        if element[0] in ".,":
            # Fractional seconds: .000 needs exactly that many digits, .999 any number.
            digits = f"{{{len(element) - 1}}}" if element[1] == "0" else "*"
            pattern = rf"(?:[.,](?P<fraction>\d{digits}))" + ("?" if element[1] == "9" else "")
        else:
            pattern = _ELEMENT_PATTERNS[element]
        # A layout naming one field twice reads it once (later copies only match).
        for name in re.findall(r"\?P<(\w+)>", pattern):
            if name in used:
                pattern = pattern.replace(f"?P<{name}>", "?:")
            used.add(name)
        parts.append(pattern)
        position = found.end()
    parts.append(re.escape(layout[position:]))
    compiled = re.compile("".join(parts) + r"\Z", re.IGNORECASE)
    if len(_layout_cache) > 256:
        _layout_cache.clear()
    _layout_cache[layout] = compiled
    return compiled


def parse_go_layout(text: str, layout: str, zone: tzinfo = UTC) -> datetime | None:
    """``text`` read with a Go time layout (``2006-01-02 15:04:05``, or a name such as RFC3339
    or DateTime), None when it does not fit. No year means the current year; a time that
    names no zone is in ``zone``. The result is in UTC."""
    layout = _NAMED_LAYOUTS.get(layout, layout)
    found = _layout_regex(layout).match(text.strip())
    if found is None:
        return None
    fields = {k: v for k, v in found.groupdict().items() if v is not None}
    try:
        if "year" in fields:
            year = int(fields["year"])
        elif "year2" in fields:
            short = int(fields["year2"])
            year = short + (1900 if short >= 69 else 2000)
        else:
            year = datetime.now(UTC).year if fields.keys() & {"month", "month_name"} else 0
            year = year or 1
        month = int(fields.get("month", 1))
        if "month_name" in fields:
            name = fields["month_name"].lower()
            month = next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(name[:3]))
        hour = int(fields.get("hour", 0))
        if "hour12" in fields:
            hour = int(fields["hour12"]) % 12
            if fields.get("ampm", "am").lower() == "pm":
                hour += 12
        fraction = fields.get("fraction", "")
        microsecond = int((fraction + "000000")[:6]) if fraction else 0
        moment = datetime(
            year,
            month,
            int(fields.get("day", 1)),
            hour,
            int(fields.get("minute", 0)),
            int(fields.get("second", 0)),
            microsecond,
            tzinfo=_zone(fields, zone),
        )
        if "yday" in fields:
            moment = moment.replace(month=1, day=1) + timedelta(days=int(fields["yday"]) - 1)
    except (ValueError, StopIteration, OverflowError):
        return None
    return moment.astimezone(UTC)


def _zone(fields: dict[str, str], default: tzinfo) -> tzinfo:
    text = fields.get("zone") or fields.get("zone_name")
    if text is None:
        return default
    if text.upper() in _ZONE_NAMES:
        return timezone(timedelta(hours=_ZONE_NAMES[text.upper()]))
    digits = text[1:].replace(":", "")
    if not digits.isdigit():
        return UTC
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


# Guessing a time from text -----------------------------------------------------------------------

_GUESSED_LAYOUTS = (
    "Mon Jan _2 15:04:05 MST 2006",
    "Mon Jan _2 15:04:05 2006",
    "Mon Jan 02 15:04:05 -0700 2006",
    "Mon, 02 Jan 2006 15:04:05 MST",
    "Mon, 02 Jan 2006 15:04:05 -0700",
    "02 Jan 2006 15:04:05",
    "Jan _2 15:04:05.999999999",
    "Jan _2 2006 15:04:05",
    "2006/01/02 15:04:05.999999999",
    "2006/01/02",
    "01/02/2006 15:04:05.999999999",
    "01/02/2006 3:04:05 PM",
    "01/02/2006",
    "2006-01-02 15:04:05.999999999 -0700 MST",
    "2006-01-02 15:04:05.999999999 -0700",
    "2006-01-02 15:04:05.999999999 MST",
    "2006-01-02T15:04:05.999999999-0700",
    "20060102150405",
    "2006-01-02T15:04:05.999999999",
    "Mon Jan _2 2006 15:04:05.999999999 MST",
    "Mon Jan _2 2006 15:04:05.999999999",
    "Mon Jan _2 2006 15:04 MST",
    "Mon Jan _2 2006 15:04",
    "January _2 2006 15:04:05.999999999",
    "January _2 2006 15:04",
    "January _2 2006",
    "January _2, 2006",
    "_2 January 2006",
    "01/02/2006 3pm",
    "01/02/2006 3:04pm",
    "02/01/2006 15:04:05.999999999",
    "02/01/2006",
)


@functools.lru_cache(maxsize=4096)
def parse_time_text(text: str, zone: tzinfo = UTC) -> datetime | None:
    """A time from text in any of the common forms (RFC 3339 / ISO 8601, RFC 2822, syslog,
    ctime, dates with month names, US then European numeric dates, Unix epoch digits), as
    Velociraptor guesses; one that names no zone is in ``zone``. None when none fits. Cached:
    a log repeats its time forms, and a guess tries many layouts."""
    cleaned = text.strip()
    if not cleaned:
        return None
    try:
        return (
            from_epoch(float(cleaned))
            if re.fullmatch(r"-?\d+(\.\d+)?", cleaned)
            and (len(cleaned.split(".")[0].lstrip("-")) != 14)
            else _guess(cleaned, zone)
        )
    except (OverflowError, ValueError):
        return None


def _guess(cleaned: str, zone: tzinfo) -> datetime | None:
    iso = cleaned[:-1] + "+00:00" if cleaned[-1] in "Zz" else cleaned
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        pass
    else:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(UTC)
    for layout in _GUESSED_LAYOUTS:
        parsed = parse_go_layout(cleaned, layout, zone)
        if parsed is not None:
            return parsed
    try:
        parsed = email.utils.parsedate_to_datetime(cleaned)
    except (TypeError, ValueError, IndexError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(UTC)


# The functions -----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def timestamp(
    scope: Scope,
    *,
    epoch: Any = None,
    cocoatime: Any = None,
    mactime: Any = None,
    winfiletime: Any = None,
    string: Any = None,
    format: Any = None,
) -> Any:
    """A time from one of: ``epoch`` (Unix seconds, or milli/micro/nanoseconds when too large
    for seconds; also a time, or text as for ``string``), ``cocoatime`` (seconds since 2001),
    ``mactime`` (HFS+ seconds since 1904), ``winfiletime`` (100 ns since 1601) or ``string``
    (guessed from the common forms, or read with the Go layout ``format``, e.g.
    ``2006-01-02 15:04:05`` or ``RFC3339``). A time of 0 means unset and gives NULL; text that is
    not a time is logged and gives NULL. Text without a zone is UTC."""
    try:
        if epoch is not None:
            if isinstance(epoch, datetime):
                return epoch if epoch.tzinfo else epoch.replace(tzinfo=UTC)
            if isinstance(epoch, str) and _number(epoch) is None:
                return _from_text(scope, epoch, format)
            seconds = _number(epoch)
            if seconds is None:
                scope.error(f"timestamp(): epoch is not a time: {go_text(epoch)!r}")
                return None
            return None if seconds == 0 else from_epoch(seconds)
        for value, start, scale in (
            (cocoatime, _COCOA_EPOCH, 1.0),
            (mactime, _HFS_EPOCH, 1.0),
            (winfiletime, _WINDOWS_EPOCH, 1e-7),
        ):
            if value is None:
                continue
            count = _number(value)
            if count is None:
                scope.error(f"timestamp(): not a number: {go_text(value)!r}")
                return None
            if count <= 0:
                return None
            return start + timedelta(seconds=count * scale)
        if string is not None:
            if isinstance(string, datetime):
                return string
            return _from_text(scope, go_text(string), format)
    except (OverflowError, ValueError, OSError) as error:
        scope.error(f"timestamp(): out of range: {error}")
    return None


PARSE_ZONE_VARIABLE = "PARSE_TZ"
"""The VQL variable naming the zone of times read from text that name none (an IANA name
such as Europe/Berlin, or "local" for this machine's); UTC when unset."""
OUTPUT_ZONE_VARIABLE = "TZ"
"""The VQL variable naming the zone timestamp_format() writes times in; UTC when unset."""


def _variable_zone(scope: Scope, name: str) -> tzinfo | None:
    """The zone the VQL variable ``name`` names, None when it is unset; a name that is no zone
    is logged and counts as unset."""
    value = scope.lookup(name)
    if value is MISSING or value is None:
        return None
    value = resolve_sync(value, scope)
    if not isinstance(value, str) or not value:
        return None
    if value.lower() == "local":
        return datetime.now().astimezone().tzinfo
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        scope.error(f"{name}: unknown time zone {value!r}; using UTC")
        return None


def _from_text(scope: Scope, text: str, layout: Any) -> datetime | None:
    zone = _variable_zone(scope, PARSE_ZONE_VARIABLE) or UTC
    if layout is not None:
        parsed = parse_go_layout(text, go_text(layout), zone)
        if parsed is None:
            scope.error(f"timestamp(): {text!r} does not fit the layout {go_text(layout)!r}")
        return parsed
    parsed = parse_time_text(text, zone)
    if parsed is None and text.strip():
        scope.error(f"timestamp(): cannot read a time from {text!r}")
    return parsed


_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _zone_text(moment: datetime, element: str) -> str:
    offset = moment.utcoffset() or timedelta(0)
    if element.startswith("Z") and not offset:
        return "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    body = element.lstrip("Z-")
    if body == "07":
        return f"{sign}{hours:02d}"
    if body == "07:00":
        return f"{sign}{hours:02d}:{minutes:02d}"
    return f"{sign}{hours:02d}{minutes:02d}"


def _format_element(moment: datetime, element: str) -> str:
    if element[0] in ".,":
        digits = f"{moment.microsecond:06d}000"[: len(element) - 1]
        if element[1] == "9":
            digits = digits.rstrip("0")
            return element[0] + digits if digits else ""
        return element[0] + digits
    hour12 = moment.hour % 12 or 12
    values = {
        "January": _MONTHS[moment.month - 1].capitalize(),
        "Monday": _DAYS[moment.weekday()],
        "2006": f"{moment.year:04d}",
        "Jan": _MONTHS[moment.month - 1][:3].capitalize(),
        "Mon": _DAYS[moment.weekday()][:3],
        "MST": moment.tzname() or _zone_text(moment, "-0700"),
        "002": f"{moment.timetuple().tm_yday:03d}",
        "_2": f"{moment.day:2d}",
        "01": f"{moment.month:02d}",
        "02": f"{moment.day:02d}",
        "03": f"{hour12:02d}",
        "04": f"{moment.minute:02d}",
        "05": f"{moment.second:02d}",
        "06": f"{moment.year % 100:02d}",
        "15": f"{moment.hour:02d}",
        "PM": "PM" if moment.hour >= 12 else "AM",
        "pm": "pm" if moment.hour >= 12 else "am",
        "1": str(moment.month),
        "2": str(moment.day),
        "3": str(hour12),
        "4": str(moment.minute),
        "5": str(moment.second),
    }
    if element in values:
        return values[element]
    return _zone_text(moment, element)


def format_go_layout(moment: datetime, layout: str) -> str:
    """``moment`` written with a Go time layout (``2006-01-02 15:04:05``, or a name such as
    RFC3339), as Go's Time.Format writes it."""
    layout = _NAMED_LAYOUTS.get(layout, layout)
    parts: list[str] = []
    position = 0
    for found in _ELEMENT.finditer(layout):
        parts.append(layout[position : found.start()])
        parts.append(_format_element(moment, found.group(0)))
        position = found.end()
    parts.append(layout[position:])
    return "".join(parts)


def _quiet_time(value: Any) -> datetime | None:
    """What timestamp(epoch=value) gives, without logging why it gives nothing."""
    seconds = _number(value)
    try:
        if seconds is not None:
            return None if seconds == 0 else from_epoch(seconds)
        return parse_time_text(value) if isinstance(value, str) else None
    except (OverflowError, ValueError, OSError):
        return None


def timestamp_format(scope: Scope, *, time: Any, format: Any = None) -> Any:
    """``time`` (a time, or anything timestamp() reads as its epoch) as text in UTC, or in the
    zone the ``TZ`` variable names, written with the Go layout ``format`` (default RFC3339;
    names such as RFC1123 or DateTime work). Something that is not a time is logged and gives
    NULL."""
    if time is None:
        return None
    moment = time if isinstance(time, datetime) else _quiet_time(time)
    if moment is None:
        scope.error(f"timestamp_format(): not a time: {go_text(time)!r}")
        return None
    zone = _variable_zone(scope, OUTPUT_ZONE_VARIABLE) or UTC
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone)
    return format_go_layout(moment, "RFC3339" if format is None else go_text(format))


def now(scope: Scope, *, ns: Any = False) -> int:
    """Seconds since 1970 as an integer (not a time), or nanoseconds with ``ns``."""
    if ns is True or (ns not in (None, False) and bool(ns)):
        return time.time_ns()
    return int(time.time())
