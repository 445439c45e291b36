"""VQL functions that build, change and convert structured values: arrays, dicts from rows,
filtering lists, and JSON, YAML and CSV text (Velociraptor's names and arguments). Bad input
is logged and gives NULL; nothing here raises into a query."""

from __future__ import annotations

import base64
import builtins
import csv
import io
import json
import uuid as uuid_module
from collections.abc import AsyncIterator, Mapping
from typing import Any

import yaml

from velotui.vql.gofmt import go_format, go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import (
    cell_text,
    compile_regex,
    json_text,
    regex_search,
    to_json_value,
    truthy,
)


def register(registry: Registry) -> None:
    """Add the structured-value functions to ``registry``."""
    for fn in (
        array,
        set_,
        to_dict,
        items,
        filter_,
        all_,
        any_,
        slice_,
        typeof,
        lazy_dict,
        uuid,
        parse_json,
        parse_json_array,
        serialize,
    ):
        registry.function(fn)
    # Velociraptor has parse_json_array as a plugin too (SELECT * FROM parse_json_array(...)).
    registry.plugin(parse_json_array_rows, name="parse_json_array")


async def array(scope: Scope, **items: Any) -> list[Any]:
    """The arguments' values as a list, in the order given (their names do not matter). A
    lone argument named ``_`` that is a list, a dict or a query gives its items or rows
    instead of being nested."""
    if list(items) == ["_"]:
        only = await scope.materialize(items["_"])
        if isinstance(only, list | tuple):
            return list(only)
        if isinstance(only, Mapping):
            return list(only.values())
        return [] if only is None else [only]
    return [await scope.materialize(value) for value in items.values()]


def set_(scope: Scope, *, item: Any, field: Any, value: Any) -> Any:
    """Set ``field`` of the dict ``item`` to ``value`` in place (so a dict held in a LET
    changes for later rows) and give the dict. An item that is not a dict is logged and gives
    NULL."""
    if not isinstance(item, dict):
        scope.error(f"set(): item must be a dict, not {go_text(item)!r}")
        return None
    if field is None:
        scope.error("set(): field must not be NULL")
        return None
    item[go_text(field)] = value
    return item


async def to_dict(scope: Scope, *, item: Any = None) -> Any:
    """A dict from rows with ``_key`` and ``_value`` columns (a query or a list of such rows),
    in row order; rows whose ``_key`` is empty or not text are skipped. A dict gives a copy;
    NULL gives an empty dict."""
    item = await scope.materialize(item)
    if item is None:
        return {}
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, list | tuple):
        result: dict[str, Any] = {}
        for row in item:
            if not isinstance(row, Mapping):
                continue
            key = row.get("_key")
            if not isinstance(key, str) or key == "":
                continue
            result[key] = row.get("_value")
        return result
    scope.error(f"to_dict(): cannot make a dict of {go_text(item)!r}")
    return None


async def items(scope: Scope, *, item: Any = None) -> Any:
    """A list of rows with ``_key`` and ``_value`` for each member of the dict ``item`` (a
    query's rows give their members in turn); any other value gives one row with just
    ``_value``. The function form of the items() plugin, which to_dict() reverses."""
    item = await scope.materialize(item)
    if isinstance(item, Mapping):
        return [{"_key": key, "_value": value} for key, value in item.items()]
    return [{"_value": item}]


async def filter_(scope: Scope, *, list: Any, regex: Any = None, condition: Any = None) -> Any:
    """The items of ``list`` that match ``regex`` (case-insensitive; items that are not text
    match as their text) or for which ``condition`` is true. ``condition`` must be a LET
    function of one parameter (``LET big(x) = x > 3`` then ``condition=big``): this engine has
    no lambda syntax (``x=>x > 3``), so a lambda given as text is logged and gives NULL. As in
    Velociraptor, a condition wins over a regex."""
    items = await scope.materialize(list)
    if items is None:
        return None
    if not isinstance(items, tuple | builtins.list):
        items = [items]
    if condition is not None:
        call = getattr(condition, "call", None)
        parameters = getattr(condition, "parameters", None)
        if call is None or not parameters:
            scope.error(
                "filter(): condition must be a LET function of one parameter "
                "(lambdas such as x=>x > 3 are not supported)"
            )
            return None
        kept = []
        for element in items:
            verdict = await call(scope, {parameters[0].name: element})
            if truthy(verdict):
                kept.append(element)
        return kept
    if regex is None:
        return [*items]
    try:
        compiled = compile_regex(go_text(regex))
    except Exception as error:
        scope.error(f"filter(): invalid regex {regex!r}: {error}")
        return None
    return [element for element in items if regex_search(compiled, element)]


async def _verdicts(scope: Scope, name: str, items: Any, filter: Any, regex: Any) -> Any:
    """Each item's truth for all() and any(): by ``filter`` (a LET function of one parameter),
    else whether any of the ``regex`` match it, else the item's own truth."""
    values = await scope.materialize(items)
    if values is None:
        values = []
    elif not isinstance(values, tuple | builtins.list):
        values = [values]
    if filter is not None:
        call = getattr(filter, "call", None)
        parameters = getattr(filter, "parameters", None)
        if call is None or not parameters:
            scope.error(
                f"{name}(): filter must be a LET function of one parameter "
                "(lambdas such as x=>x > 3 are not supported)"
            )
            return None
        return [truthy(await call(scope, {parameters[0].name: value})) for value in values]
    if regex is not None:
        patterns = regex if isinstance(regex, tuple | builtins.list) else [regex]
        try:
            compiled = [compile_regex(go_text(pattern)) for pattern in patterns]
        except Exception as error:
            scope.error(f"{name}(): invalid regex: {error}")
            return None
        return [any(regex_search(c, value) for c in compiled) for value in values]
    return [truthy(value) for value in values]


async def all_(scope: Scope, *, items: Any, filter: Any = None, regex: Any = None) -> Any:
    """TRUE when every item of ``items`` (a list or a query) is true, matches one of ``regex``
    or passes ``filter`` (a LET function of one parameter; this engine has no lambdas); TRUE for
    no items."""
    verdicts = await _verdicts(scope, "all", items, filter, regex)
    return None if verdicts is None else all(verdicts)


async def any_(scope: Scope, *, items: Any, filter: Any = None, regex: Any = None) -> Any:
    """TRUE when some item of ``items`` (a list or a query) is true, matches one of ``regex`` or
    passes ``filter`` (a LET function of one parameter); FALSE for no items."""
    verdicts = await _verdicts(scope, "any", items, filter, regex)
    return None if verdicts is None else any(verdicts)


async def slice_(scope: Scope, *, list: Any, start: Any, end: Any) -> Any:
    """The items of ``list`` from index ``start`` up to, not including, ``end`` (clamped to
    the list). Bounds that are not non-negative integers are logged and give NULL."""
    values = await scope.materialize(list)
    if values is None:
        return None
    if not isinstance(values, tuple | builtins.list):
        values = [values]
    bounds = []
    for bound in (start, end):
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
            scope.error("slice(): start and end must be non-negative integers")
            return None
        bounds.append(bound)
    return builtins.list(values[bounds[0] : bounds[1]])


def typeof(scope: Scope, **item: Any) -> Any:
    """The Go type Velociraptor would report for the first argument's value (whatever its
    name): string, int64, float64, bool, []interface {}, *ordereddict.Dict, time.Time or
    <nil>."""
    if not item:
        return None
    return go_format("%T", [next(iter(item.values()))])


def lazy_dict(scope: Scope, **items: Any) -> dict[str, Any]:
    """A dict of the arguments, like dict(). Velociraptor leaves the values unevaluated until
    used; here they are evaluated when the call is, which gives the same values."""
    return dict(items)


def uuid(scope: Scope) -> str:
    """A new random UUID (version 4) as text."""
    return str(uuid_module.uuid4())


# JSON --------------------------------------------------------------------------------------------


def _json_data(name: str, data: Any, scope: Scope) -> Any:
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8", errors="replace")
    if not isinstance(data, str):
        scope.error(f"{name}(): data must be text")
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        scope.error(f"{name}(): invalid JSON: {error}")
        return None


def parse_json(scope: Scope, *, data: Any, schema: Any = None) -> Any:
    """The value the JSON text ``data`` holds (objects become dicts in key order). Invalid JSON
    is logged and gives NULL; NULL gives NULL. ``schema`` (JSON schemas to validate against)
    is accepted and not applied: no schema validator is among our dependencies."""
    if data is None:
        return None
    return _json_data("parse_json", data, scope)


def parse_json_array(scope: Scope, *, data: Any, schema: Any = None) -> Any:
    """The list the JSON text ``data`` holds. Text that is not a JSON array is logged and gives
    NULL; NULL gives NULL. ``schema`` is accepted and not applied (see parse_json())."""
    if data is None:
        return None
    value = _json_data("parse_json_array", data, scope)
    if value is None:
        return None
    if not isinstance(value, list):
        scope.error("parse_json_array(): the JSON is not an array")
        return None
    return value


async def parse_json_array_rows(
    scope: Scope, *, data: Any, schema: Any = None
) -> AsyncIterator[dict[str, Any]]:
    """The plugin parse_json_array(): one row for each item of the JSON array ``data`` (an item
    that is not an object is the row's ``_value``). Text that is not a JSON array is logged and
    gives no rows. ``schema`` is accepted and not applied (see parse_json())."""
    value = parse_json_array(scope, data=data)
    for item in value or []:
        yield item if isinstance(item, dict) else {"_value": item}


# Serializing -------------------------------------------------------------------------------------


def _csv_text(item: Any) -> str:
    rows = item if isinstance(item, list | tuple) else [item]
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, Mapping):
            columns.update(dict.fromkeys(str(key) for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if columns:
        writer.writerow(columns)
        for row in rows:
            if isinstance(row, Mapping):
                writer.writerow(cell_text(row.get(name)) for name in columns)
    else:
        for row in rows:
            writer.writerow([cell_text(row)])
    return buffer.getvalue()


def serialize(scope: Scope, *, item: Any, format: Any = "json") -> Any:
    """``item`` as text in ``format``: json (the default; compact, key order kept), yaml, csv
    (a header of every column, then one line a row), hex or base64 (of the item's text)."""
    kind = "json" if format is None else go_text(format).lower()
    value = to_json_value(item)
    if kind == "json":
        return json_text(item)
    if kind == "yaml":
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    if kind == "csv":
        return _csv_text(value)
    if kind in ("hex", "base64"):
        data = go_text(item).encode("utf-8") if not isinstance(item, bytes) else item
        return data.hex() if kind == "hex" else base64.b64encode(data).decode("ascii")
    scope.error(f"serialize(): unknown format {format!r} (json, yaml, csv, hex, base64)")
    return None
