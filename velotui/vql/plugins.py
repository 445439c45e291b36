"""VQL's built-in plugins: sources of rows that are not tied to any machine, and the few
functions that run queries or read the scope the way these plugins do (``scope()``,
``memoize()``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from velotui.vql.compiler import QUERY_ARGUMENTS
from velotui.vql.parser import VQLSyntaxError
from velotui.vql.registry import Registry
from velotui.vql.scope import MISSING, RowSource, Scope
from velotui.vql.values import truthy


def register(registry: Registry) -> None:
    """Add the built-in plugins (and the query functions) to ``registry``."""
    for fn in (scope_, range_, foreach, chain, flatten, items, if_, query_, switch):
        registry.plugin(fn)
    registry.function(scope_function, name="scope")
    registry.function(memoize)


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
    scope: Scope,
    *,
    row: Any,
    query: Any = None,
    column: str | None = None,
    workers: int | None = None,
    async_: bool = False,
) -> AsyncIterator[Any]:
    """For every row of ``row`` (a query or a list; items that are not rows appear as
    ``_value``, NULL items are skipped), run ``query`` with that row's columns in scope, or
    yield the row itself (or its ``column``, when that holds a dict). With ``workers`` above 1
    (``async`` implies 100) that many queries run at once and their rows come as they come."""
    width = _workers(workers, async_)

    async def rows_of_each() -> AsyncIterator[Any]:
        async for item in scope.iterate(row):
            if item is None:
                continue  # a NULL element of a list is no row (vfilter skips it too)
            current = _as_row(item)
            if column is not None:
                inner = current.get(column)
                current = _as_row(inner) if inner is not None else {}
            if query is None:
                yield [current]
            else:
                yield scope.child(current).iterate(query)

    if width == 1 or query is None:
        async for rows in rows_of_each():
            async for result in _each(rows):
                yield result
        return
    async for result in _concurrently(rows_of_each(), width):
        yield result


def _workers(workers: int | None, async_: bool) -> int:
    if workers is not None and workers > 0:
        return int(workers)
    return 100 if async_ else 1


async def _each(rows: Any) -> AsyncIterator[Any]:
    if isinstance(rows, list):
        for item in rows:
            yield item
        return
    async with contextlib.aclosing(rows):
        async for item in rows:
            yield item


_END = object()


async def _concurrently(sources: AsyncIterator[Any], width: int) -> AsyncIterator[Any]:
    """The rows of every row source ``sources`` gives, up to ``width`` of them read at once,
    each row as soon as it comes. A failure in any source ends the whole, as it would have run
    in sequence; closing the result cancels every reader."""
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue(maxsize=width)
    slots = asyncio.Semaphore(width)
    readers: set[asyncio.Task[None]] = set()

    async def read(rows: Any) -> None:
        try:
            async for item in _each(rows):
                await queue.put((item, None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # DeadlineExceeded too: the consumer re-raises it
            await queue.put((None, error))
        finally:
            slots.release()

    async def start_all() -> None:
        try:
            async with contextlib.aclosing(sources):  # type: ignore[type-var]
                async for rows in sources:
                    await slots.acquire()
                    reader = asyncio.create_task(read(rows))
                    readers.add(reader)
                    reader.add_done_callback(readers.discard)
            while readers:
                await asyncio.gather(*readers)
            await queue.put((_END, None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            await queue.put((None, error))

    starter = asyncio.create_task(start_all())
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        starter.cancel()
        for reader in list(readers):
            reader.cancel()
        await asyncio.gather(starter, *readers, return_exceptions=True)


async def chain(scope: Scope, /, *, async_: bool = False, **queries: Any) -> AsyncIterator[Any]:
    """The rows of each argument's query, one query after another, in argument order; with
    ``async``, all at once, each row as it comes (for event queries that never end)."""
    if not async_:
        for query in queries.values():
            async for row in scope.iterate(query):
                yield row
        return

    async def each_query() -> AsyncIterator[Any]:
        for query in queries.values():
            yield scope.iterate(query)

    async for row in _concurrently(each_query(), max(len(queries), 1)):
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


async def query_(
    scope: Scope,
    *,
    query: Any,
    env: Mapping[str, Any] | None = None,
    copy_env: Any = None,
    inherit: bool = False,
    timeout: float | None = None,
) -> AsyncIterator[Any]:
    """The rows of ``query`` (VQL text, or a stored query or subquery) run in a scope of its
    own: over the caller's scope when ``inherit``, else over the registry's globals only; with
    ``env``'s keys and the ``copy_env`` variables bound. Text is compiled once per registry;
    its LETs bind and every SELECT's rows are yielded in turn. ``timeout`` (seconds) ends the
    rows when it passes."""
    base = scope if inherit else Scope(scope.registry.variables(), context=scope.context)
    bound: dict[str, Any] = {}
    for name in _names(copy_env):
        value = scope.lookup(name)
        if value is MISSING:
            scope.warn(f"query(): copy_env: no variable {name}")
        else:
            bound[name] = value
    if env is not None and env != "":  # an artifact's empty parameter passes ''
        if not isinstance(env, Mapping):
            scope.error("query(): env must be a dict")
            return
        bound.update(env)
    inner = Scope({}, Scope(bound, base))
    if isinstance(query, str):
        from velotui.vql.engine import compile_query  # the engine registers this plugin

        try:
            program = compile_query(query, scope.registry)
        except VQLSyntaxError as error:
            scope.error(f"query(): {error}")
            return
        rows: AsyncIterator[Any] = program.rows(inner)
    elif isinstance(query, RowSource):
        rows = query.rows(inner)
    else:
        rows = inner.iterate(query)
    async with contextlib.aclosing(rows):  # type: ignore[type-var]
        if timeout is None:
            async for row in rows:
                yield row
            return
        deadline = asyncio.get_running_loop().time() + float(timeout)
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                row = await asyncio.wait_for(anext(rows), max(remaining, 0))
            except StopAsyncIteration:
                return
            except TimeoutError:
                scope.warn(f"query(): timed out after {timeout} seconds")
                return
            yield row


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(name) for name in value]


async def switch(scope: Scope, /, **queries: Any) -> AsyncIterator[Any]:
    """The rows of the first query (in argument order) that gives any; the rest never run."""
    for query in queries.values():
        found = False
        async for row in scope.iterate(query):
            found = True
            yield row
        if found:
            return


class ScopeView(Mapping[str, Any]):
    """``scope()`` as a value: the variables a query sees where it is called, innermost first,
    each read (a lazy LET evaluated, a stored query run) when it is looked up."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def __getitem__(self, name: str) -> Any:
        from velotui.vql.executor import DEFERRED, resolve_sync

        value = self._scope.lookup(name)
        if value is MISSING:
            raise KeyError(name)
        if value.__class__ in DEFERRED:
            return resolve_sync(value, self._scope)
        return value

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        layer: Scope | None = self._scope
        while layer is not None:
            for name in layer.vars:
                if name not in seen:
                    seen.add(name)
                    yield name
            layer = layer.parent

    def __len__(self) -> int:
        return sum(1 for _name in self)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._scope.lookup(name) is not MISSING


def scope_function(scope: Scope) -> ScopeView:
    """The calling scope's variables as a dict: ``get(item=scope(), member='x')``."""
    return ScopeView(scope)


class Memoized(Mapping[str, Any]):
    """What ``memoize()`` gives: a query's rows by the text of their key column."""

    __slots__ = ("made", "rows")

    def __init__(self, rows: dict[str, Any], made: float) -> None:
        self.rows = rows
        self.made = made

    def __getitem__(self, key: Any) -> Any:
        return self.rows[_key_text(key)]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.rows.get(_key_text(key), default)

    def __contains__(self, key: object) -> bool:
        return _key_text(key) in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


async def memoize(
    scope: Scope,
    *,
    query: Any,
    key: str,
    period: int | None = None,
    name: str | None = None,
    filename: str | None = None,
) -> Memoized:
    """The rows of ``query`` as a dict keyed by each row's ``key`` column (the last row of a
    key wins). Kept for the run and reused by later calls at the same place (or of the same
    ``name``) until ``period`` seconds have passed; without a period, for the whole run."""
    if filename is not None:
        scope.warn("memoize(): filename is not supported; the rows stay in memory")
    cache = scope.context.memo
    cache_key = ("name", name) if name else ("query", id(getattr(query, "plan", query)), key)
    now = time.monotonic()
    cached = cache.get(cache_key)
    if cached is not None and (period is None or now - cached.made < period):
        return cached
    by_key: dict[str, Any] = {}
    async for row in scope.iterate(query):
        if isinstance(row, Mapping) and row.get(key) is not None:
            by_key[_key_text(row.get(key))] = row
    result = Memoized(by_key, now)
    cache[cache_key] = result
    return result


setattr(memoize, QUERY_ARGUMENTS, frozenset({"query"}))  # run by memoize, not before it
