"""VQL's built-in plugins: sources of rows that are not tied to any machine."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import truthy


def register(registry: Registry) -> None:
    """Add the built-in plugins to ``registry``."""
    for fn in (scope_, range_, foreach, chain, flatten, items, if_):
        registry.plugin(fn)


async def scope_(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One empty row, so that columns are computed once: ``SELECT 1 + 1 FROM scope()``."""
    yield {}


async def range_(
    scope: Scope, *, end: int, start: int = 0, step: int = 1
) -> AsyncIterator[dict[str, Any]]:
    """Rows ``_value`` from ``start`` up to (not including) ``end``."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end, step)):
        scope.error("range(): start, end and step must be integers")
        return
    if step == 0:
        scope.error("range(): step must not be 0")
        return
    # No deadline check here: every row goes to a SELECT, which checks between rows.
    for value in range(start, end, step):
        yield {"_value": value}


def _as_row(item: Any) -> Mapping[str, Any]:
    return item if isinstance(item, Mapping) else {"_value": item}


async def foreach(
    scope: Scope, *, row: Any, query: Any = None, column: str | None = None
) -> AsyncIterator[Any]:
    """For every row of ``row`` (a query or a list; items that are not rows appear as
    ``_value``), run ``query`` with that row's columns in scope, or yield the row itself
    (or its ``column``, when that holds a dict)."""
    async for item in scope.iterate(row):
        if item is None:
            continue  # a NULL element of a list is no row (vfilter skips it too)
        current = _as_row(item)
        if column is not None:
            inner = current.get(column)
            current = _as_row(inner) if inner is not None else {}
        if query is None:
            yield current
            continue
        async for result in scope.child(current).iterate(query):
            yield result


async def chain(scope: Scope, **queries: Any) -> AsyncIterator[Any]:
    """The rows of each argument's query, one query after another, in argument order."""
    for query in queries.values():
        async for row in scope.iterate(query):
            yield row


async def flatten(scope: Scope, *, query: Any) -> AsyncIterator[dict[str, Any]]:
    """Every row of ``query`` with its list-valued columns expanded: one row per combination."""
    async for row in scope.iterate(query):
        if not isinstance(row, Mapping):
            yield {"_value": row}
            continue
        names = list(row.keys())
        choices = [
            list(value) if isinstance(value, list | tuple) and value else [value]
            for value in row.values()
        ]
        for combination in itertools.product(*choices):
            yield dict(zip(names, combination, strict=True))


async def items(scope: Scope, *, item: Any) -> AsyncIterator[dict[str, Any]]:
    """One row per key of a dict (``_key``, ``_value``), or per element of a list."""
    if isinstance(item, Mapping):
        for key, value in item.items():
            yield {"_key": key, "_value": value}
    elif isinstance(item, list | tuple):
        for index, value in enumerate(item):
            yield {"_key": index, "_value": value}
    else:
        item = await scope.materialize(item)
        if isinstance(item, list):
            for index, value in enumerate(item):
                yield {"_key": index, "_value": value}


async def if_(
    scope: Scope, *, condition: Any, then: Any = None, else_: Any = None
) -> AsyncIterator[Any]:
    """The rows of ``then`` when ``condition`` is true (a query is true when it has a row),
    else the rows of ``else``."""
    condition = await scope.materialize(condition)
    branch = then if truthy(condition) else else_
    async for row in scope.iterate(branch):
        yield row
