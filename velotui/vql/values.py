"""What VQL's operators mean on Python values: truth, equality, order, arithmetic, membership,
regular expressions, member access, and the JSON form of a row.

VQL values are None (NULL), bool, int, float, str, bytes, list, dict and timezone-aware datetime.
Operators never raise: a combination that has no meaning is NULL (arithmetic) or FALSE (tests).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from velotui.vql.gofmt import go_text

_NUMBER_TYPES = (int, float)


def is_number(value: Any) -> bool:
    """True for int and float (bool included, as VQL compares TRUE with 1)."""
    return isinstance(value, _NUMBER_TYPES)


# Truth -------------------------------------------------------------------------------------------


def truthy(value: Any) -> bool:
    """VQL truth: NULL is false, numbers only when > 0, strings and containers when non-empty."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    cls = value.__class__
    if cls is int or cls is float:
        return value > 0
    if cls is str or cls is list or cls is dict or cls is tuple or cls is bytes:
        return len(value) > 0
    if isinstance(value, Mapping):
        return len(value) > 0
    if isinstance(value, _NUMBER_TYPES):
        return value > 0
    return True


# Equality and order ------------------------------------------------------------------------------


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def equals(left: Any, right: Any) -> bool:
    """VQL ``=``: numbers by value (TRUE is 1), strings exactly, NULL equals only NULL."""
    if left is None or right is None:
        return left is None and right is None
    lc, rc = left.__class__, right.__class__
    if lc is str or rc is str:
        return lc is rc and left == right
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        return left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            equals(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(equals(left[k], right[k]) for k in left)
    if isinstance(left, datetime):
        if isinstance(right, datetime):
            return _epoch(left) == _epoch(right)
        if isinstance(right, _NUMBER_TYPES):
            return _epoch(left) == right
        return False
    if isinstance(right, datetime) and isinstance(left, _NUMBER_TYPES):
        return left == _epoch(right)
    try:
        return bool(left == right)
    except Exception:
        return False


def _orderable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both sides in a form Python can order, or None when VQL calls them unordered."""
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        return left, right
    lc, rc = left.__class__, right.__class__
    if lc is str and rc is str:
        return left, right
    if isinstance(left, datetime) or isinstance(right, datetime):
        left_value = _epoch(left) if isinstance(left, datetime) else left
        right_value = _epoch(right) if isinstance(right, datetime) else right
        if isinstance(left_value, _NUMBER_TYPES) and isinstance(right_value, _NUMBER_TYPES):
            return left_value, right_value
    return None


def less_than(left: Any, right: Any) -> bool:
    pair = _orderable(left, right)
    return pair is not None and pair[0] < pair[1]


def greater_than(left: Any, right: Any) -> bool:
    pair = _orderable(left, right)
    return pair is not None and pair[0] > pair[1]


def less_or_equal(left: Any, right: Any) -> bool:
    """``<=`` is ``<`` or ``=``, as vfilter defines it: so NULL <= NULL is TRUE."""
    pair = _orderable(left, right)
    if pair is not None:
        return pair[0] <= pair[1]
    return equals(left, right)


def greater_or_equal(left: Any, right: Any) -> bool:
    """``>=`` is ``>`` or ``=``: NULL >= NULL is TRUE."""
    pair = _orderable(left, right)
    if pair is not None:
        return pair[0] >= pair[1]
    return equals(left, right)


def sort_key(value: Any) -> tuple[int, Any]:
    """A total order for ORDER BY: NULL, then numbers and times, then strings, then the rest."""
    if value is None:
        return (0, 0)
    if isinstance(value, _NUMBER_TYPES):
        return (1, value if not (isinstance(value, float) and math.isnan(value)) else -math.inf)
    if isinstance(value, datetime):
        return (1, _epoch(value))
    if isinstance(value, str):
        return (2, value)
    return (3, json_text(value))


# Arithmetic --------------------------------------------------------------------------------------


def add(left: Any, right: Any) -> Any:
    """``+``: numbers (not booleans), strings, lists and dicts; anything else is NULL."""
    lc, rc = left.__class__, right.__class__
    if (lc is int or lc is float) and (rc is int or rc is float):
        return left + right
    if lc is str and rc is str:
        return left + right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return [*left, *right]
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return {**left, **right}
    return None


def subtract(left: Any, right: Any) -> Any:
    """``-``: numbers, booleans counting as 1 and 0 (so TRUE - 1 is 0); times give seconds."""
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        return int(left) - int(right) if _both_integral(left, right) else left - right
    if isinstance(left, datetime) and isinstance(right, datetime):
        return _epoch(left) - _epoch(right)
    return None


def multiply(left: Any, right: Any) -> Any:
    """``*``: numbers, or a string on the left repeated an int number of times."""
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        return int(left) * int(right) if _both_integral(left, right) else left * right
    if left.__class__ is str and isinstance(right, int) and not isinstance(right, bool):
        return left * max(right, 0)
    return None


def divide(left: Any, right: Any) -> Any:
    """``/``: always a float; NULL when dividing by zero or by something that is not a number."""
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        if right == 0:
            return None
        return left / right
    return None


def _both_integral(left: Any, right: Any) -> bool:
    return not isinstance(left, float) and not isinstance(right, float)


def negate(value: Any) -> Any:
    """``-x``: numbers only."""
    if isinstance(value, bool):
        return -int(value)
    if isinstance(value, _NUMBER_TYPES):
        return -value
    return None


# Membership and regular expressions --------------------------------------------------------------


def contains(container: Any, item: Any) -> bool:
    """``item IN container``: list membership, dict key, or substring of a string."""
    if container is None:
        return False
    cc = container.__class__
    if cc is list or cc is tuple:
        return any(equals(item, element) for element in container)
    if cc is str:
        return item.__class__ is str and item in container
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return equals(item, container)


_MATCH_ANYTHING = frozenset({"", ".", ".*"})
_regex_cache: dict[str, re.Pattern[str] | None] = {}


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a VQL pattern: always case-insensitive. Raises ``re.error`` when invalid."""
    # Python only accepts global inline flags at the start; VQL authors write (?i) anywhere.
    cleaned = pattern.replace("(?i)", "") if "(?i)" in pattern[1:] else pattern
    return re.compile(cleaned, re.IGNORECASE)


def cached_regex(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None when it is invalid (cached either way)."""
    try:
        return _regex_cache[pattern]
    except KeyError:
        pass
    try:
        compiled: re.Pattern[str] | None = compile_regex(pattern)
    except (re.error, OverflowError, RecursionError):
        compiled = None
    if len(_regex_cache) > 4096:
        _regex_cache.clear()
    _regex_cache[pattern] = compiled
    return compiled


def matches_anything(pattern: Any) -> bool:
    return pattern.__class__ is str and pattern in _MATCH_ANYTHING


def regex_search(compiled: re.Pattern[str], value: Any) -> bool:
    """``value =~ pattern`` for an already compiled pattern: lists match if any element does,
    numbers match as their text and dicts as their JSON."""
    if value.__class__ is str:
        return compiled.search(value) is not None
    if value is None:
        return False
    if isinstance(value, list | tuple):
        return any(regex_search(compiled, element) for element in value)
    if isinstance(value, Mapping):
        return compiled.search(json_text(value)) is not None
    return compiled.search(go_text(value)) is not None


# Member access, indexing and slicing -------------------------------------------------------------

_DATETIME_MEMBERS = {
    "Unix": lambda t: int(_epoch(t)),
    "UnixNano": lambda t: int(_epoch(t) * 1_000_000_000),
    "Year": lambda t: t.year,
    "Month": lambda t: t.month,
    "Day": lambda t: t.day,
    "Hour": lambda t: t.hour,
    "Minute": lambda t: t.minute,
    "Second": lambda t: t.second,
    "String": lambda t: rfc3339(t),
}


def get_member(target: Any, name: str) -> Any:
    """``target.name``: a dict key (``@Keys``, ``@Values``, ``@Len`` on dicts), projected over a
    list of dicts, a few fields of a time; NULL when missing."""
    if isinstance(target, Mapping):
        value = target.get(name)
        if value is None and name.startswith("@") and name not in target:
            if name == "@Keys":
                return list(target.keys())
            if name == "@Values":
                return list(target.values())
            if name == "@Len":
                return len(target)
        return value
    if isinstance(target, list | tuple):
        projected = [get_member(element, name) for element in target]
        return projected if any(v is not None for v in projected) else None
    if isinstance(target, datetime):
        getter = _DATETIME_MEMBERS.get(name)
        return getter(target) if getter else None
    return None


def get_index(target: Any, index: Any) -> Any:
    """``target[index]``: 0-based with negatives from the end; a string gives a byte value."""
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if isinstance(index, int) and not isinstance(index, bool):
        if isinstance(target, Mapping):
            return target.get(index)  # memoize()'s rows are found by a number's text
        if isinstance(target, list | tuple):
            sequence: Any = target
        elif isinstance(target, str):
            sequence = target.encode("utf-8")
        elif isinstance(target, bytes):
            sequence = target
        else:
            return None
        if -len(sequence) <= index < len(sequence):
            return sequence[index]
        return None
    if isinstance(index, str):
        return get_member(target, index)
    return None


def get_slice(target: Any, start: Any, stop: Any) -> Any:
    """``target[start:stop]``: Python slice rules, clamped; strings slice by bytes."""
    bounds = []
    for bound in (start, stop):
        if bound is None:
            bounds.append(None)
        elif isinstance(bound, int | float) and not isinstance(bound, bool):
            bounds.append(int(bound))
        else:
            return None
    lower, upper = bounds
    if isinstance(target, list | tuple):
        return list(target[lower:upper])
    if isinstance(target, str):
        return target.encode("utf-8")[lower:upper].decode("utf-8", errors="replace")
    if isinstance(target, bytes):
        return target[lower:upper]
    return None


# Output forms ------------------------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    """A time as RFC 3339 in UTC with a Z, fractional seconds only when present."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def to_json_value(value: Any) -> Any:
    """A value reduced to what JSON (and msgpack) can carry: times become RFC 3339 strings,
    bytes become text, tuples become lists, NaN and infinities become NULL."""
    cls = value.__class__
    if value is None or cls is str or cls is bool or cls is int:
        return value
    if cls is float:
        return value if math.isfinite(value) else None
    if cls is dict:
        return {str(k): to_json_value(v) for k, v in value.items()}
    if cls is list or cls is tuple:
        return [to_json_value(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    return str(value)


def cell_text(value: Any) -> str:
    """A value as one CSV or table cell: text as is, NULL empty, nested values as JSON."""
    value = to_json_value(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json_text(value)


def json_text(value: Any) -> str:
    """Compact JSON text of a value (key order kept)."""
    return json.dumps(to_json_value(value), separators=(",", ":"), ensure_ascii=False)
