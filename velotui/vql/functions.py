"""VQL's built-in scalar functions (Velociraptor's names and arguments)."""

from __future__ import annotations

import asyncio
import base64
import builtins
import math
import re
from typing import Any

from velotui.vql import functions_data
from velotui.vql.executor import resolve_sync
from velotui.vql.functions_text import go_expand
from velotui.vql.gofmt import go_format, go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import MISSING, Scope
from velotui.vql.values import compile_regex, get_index, get_member, truthy


def register(registry: Registry) -> None:
    """Add the built-in functions to ``registry``."""
    for fn in (
        format_,
        len_,
        split,
        get,
        if_,
        dict_,
        lowcase,
        upcase,
        regex_replace,
        encode,
        sleep,
        str_,
        int_,
        join,
        strip,
    ):
        registry.function(fn)


def format_(scope: Scope, *, format: str, args: Any = None) -> str:
    """Format ``args`` with a Go-style template (%v %s %d %x %f, with width and precision)."""
    if args is None:
        values: list[Any] = []
    elif isinstance(args, list | tuple):
        values = list(args)
    else:
        values = [args]
    return go_format(str(format), values)


def len_(scope: Scope, *, list: Any) -> int:
    """The number of items in a list or dict, or of bytes in a string."""
    if list is None:
        return 0
    if isinstance(list, str):
        return len(list.encode("utf-8"))
    try:
        return len(list)
    except TypeError:
        return 0


def split(
    scope: Scope, *, string: str, sep: str | None = None, sep_string: str | None = None
) -> list[str] | None:
    """``string`` split on the regular expression ``sep`` or the literal ``sep_string``."""
    if not isinstance(string, str):
        return None
    if sep_string is not None:
        return string.split(str(sep_string)) if sep_string != "" else list(string)
    if sep is None:
        scope.error("split(): needs sep or sep_string")
        return None
    try:
        return re.split(str(sep), string)
    except re.error as error:
        scope.error(f"split(): invalid sep {sep!r}: {error}")
        return None


def get(
    scope: Scope,
    *,
    item: Any = MISSING,
    member: str | None = None,
    field: Any = None,
    default: Any = None,
) -> Any:
    """A nested value: ``member`` is a dotted path (numeric parts index lists); ``field`` one key.
    Without ``item`` the path starts from the scope's variables."""
    if member is not None:
        parts = [p for p in str(member).split(".") if p != ""]
        if item is MISSING:
            if not parts:
                return default
            value = scope.lookup(parts.pop(0))
            if value is MISSING:
                return default
        else:
            value = item
        for part in parts:
            if value is None:
                break
            if isinstance(value, list | tuple) and _is_integer_text(part):
                value = get_index(value, int(part))
            else:
                value = get_member(value, part)
        return default if value is None else value
    if field is not None and item is not MISSING:
        value = get_index(item, field) if isinstance(field, int) else get_member(item, str(field))
        return default if value is None else value
    if field is not None:
        # get(field=name) reads the scope, as get(item=scope(), field=name) would.
        value = scope.lookup(str(field))
        if value is MISSING:
            return default
        value = resolve_sync(value, scope)
        return default if value is None else value
    return default


def _is_integer_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def if_(scope: Scope, *, condition: Any, then: Any = None, else_: Any = None) -> Any:
    """``then`` when ``condition`` is true, else ``else``. (The compiler evaluates only the branch
    taken; this body serves calls it cannot see, such as from Python.)"""
    return then if truthy(condition) else else_


def dict_(scope: Scope, /, **items: Any) -> dict[str, Any]:
    """A dict of the arguments, in the order given."""
    return dict(items)


def lowcase(scope: Scope, *, string: Any) -> str | None:
    """The string in lower case."""
    return string.lower() if isinstance(string, str) else None


def upcase(scope: Scope, *, string: Any) -> str | None:
    """The string in upper case."""
    return string.upper() if isinstance(string, str) else None


def regex_replace(
    scope: Scope, *, source: Any, re: str, replace: str = "", replace_lambda: Any = None
) -> str | None:
    """``source`` with every match of ``re`` (case-insensitive) replaced; ``$1`` expands groups.
    ``replace_lambda`` (a VQL lambda computing each replacement) is refused with an error: this
    engine has no lambda syntax."""
    if not isinstance(source, str):
        return None
    if replace_lambda is not None:
        scope.error("regex_replace(): replace_lambda is not supported (no lambdas); use replace")
        return None
    try:
        pattern = compile_regex(str(re))
    except Exception as error:
        scope.error(f"regex_replace(): invalid re {re!r}: {error}")
        return None
    template = str(replace)
    return pattern.sub(lambda match: go_expand(template, match), source)


def encode(scope: Scope, *, string: Any, type: str) -> str | None:
    """``string`` encoded as hex, base64 or base64url (text is encoded as UTF-8 first), or, as
    an alias of serialize(), as json, yaml or csv."""
    kind = str(type).lower()
    if kind in ("json", "yaml", "csv"):
        return functions_data.serialize(scope, item=string, format=kind)
    data = string if isinstance(string, bytes) else go_text(string).encode("utf-8")
    if kind == "hex":
        return data.hex()
    if kind == "base64":
        return base64.b64encode(data).decode("ascii")
    if kind in ("base64url", "base64_url"):
        return base64.urlsafe_b64encode(data).decode("ascii")
    if kind == "string":
        return data.decode("utf-8", errors="replace")
    scope.error(
        f"encode(): unknown type {type!r} (hex, base64, base64url, string, json, yaml, csv)"
    )
    return None


async def sleep(scope: Scope, *, time: Any = None, ms: Any = None) -> bool:
    """Wait ``time`` seconds plus ``ms`` milliseconds, then give TRUE (Velociraptor's sleep())."""
    total = 0.0
    for value, scale, name in ((time, 1.0, "time"), (ms, 0.001, "ms")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            scope.error(f"sleep(): {name} must be a non-negative number")
            return False
        total += value * scale
    await asyncio.sleep(total)
    return True


def str_(scope: Scope, *, str: Any) -> str:
    """Any value as text."""
    return go_text(str)


def int_(scope: Scope, *, int: Any) -> Any:
    """A value as an integer (floats truncated, numeric text parsed), or NULL."""
    value = int
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, builtins.int):
        return value
    if isinstance(value, float):
        return builtins.int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return builtins.int(value.strip(), 0)
        except ValueError:
            try:
                return builtins.int(float(value))
            except (ValueError, OverflowError):
                return None
    return None


def join(scope: Scope, *, array: Any, sep: str = "") -> str | None:
    """The items of ``array`` as text, joined by ``sep``."""
    if not isinstance(array, list | tuple):
        return None
    return str(sep).join(go_text(item) for item in array)


def strip(
    scope: Scope, *, string: Any, prefix: str | None = None, suffix: str | None = None
) -> str | None:
    """``string`` without surrounding whitespace, or without the given prefix / suffix."""
    if not isinstance(string, str):
        return None
    if prefix is None and suffix is None:
        return string.strip()
    if prefix and string.startswith(prefix):
        string = string[len(prefix) :]
    if suffix and string.endswith(suffix):
        string = string[: -len(suffix)]
    return string
