"""Running compiled queries: SELECT plans, what FROM reads, and the values LET binds.

Rows stream: a SELECT pulls one row at a time from its source, filters it, and builds the output
row only for rows that pass. A column that WHERE or GROUP BY mentions by alias is computed when
first read and kept for the output row; columns of rows that WHERE drops are never computed.

Each plan's per-row work is compiled once (``prepare``) into a step, and one loop (``_stream``)
runs every SELECT: it reads a list, or a plugin's generator, directly, with no generator in
between; it awaits nothing per row when WHERE and the columns need no coroutine; it reuses one
scope for every row when they are pure; and it lets the event loop run once its time slice has
passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from velotui.vql.registry import Callee
from velotui.vql.scope import EMPTY, MISSING, RowSource, Scope
from velotui.vql.values import json_text, sort_key, truthy


class Code:
    """A compiled expression: ``fn(scope)`` gives its value, or an awaitable when ``is_async``."""

    __slots__ = ("boolean", "constant", "fn", "is_async", "pure", "row_key", "symbol")

    def __init__(
        self,
        fn: Any,
        is_async: bool = False,
        *,
        constant: Any = MISSING,
        symbol: str | None = None,
        boolean: bool = False,
        pure: bool = False,
        row_key: str | None = None,
    ) -> None:
        self.fn = fn
        self.is_async = is_async
        self.constant = constant  # the value when the expression is a literal
        self.symbol = symbol  # the name when the expression is a bare symbol
        self.boolean = boolean  # always gives True or False, so truth needs no conversion
        # Only the engine's own operators see the scope (no function, plugin or subquery gets
        # it), so nothing can keep it once the value is computed.
        self.pure = pure
        # The name, when the value is the innermost layer's (the row's) column of that name
        # whenever it holds one that is not a lazy LET: a bare symbol, so callers may read it.
        self.row_key = row_key


async def evaluate(code: Code, scope: Scope) -> Any:
    """The value of ``code`` in ``scope``, awaiting it when it is asynchronous."""
    value = code.fn(scope)
    if code.is_async:
        value = await value
    return value


def drive(awaitable: Any, scope: Scope) -> Any:
    """Run a coroutine to completion without an event loop, for the rare asynchronous value met
    where the compiler expected none (a LET bound after it was referenced). Pure computation
    completes; a coroutine that must wait for I/O cannot, so it is logged and gives NULL."""
    coroutine = awaitable.__await__() if not hasattr(awaitable, "send") else awaitable
    try:
        while True:
            if coroutine.send(None) is not None:
                coroutine.close()
                scope.error("a value needed I/O where it cannot wait; bind it before use")
                return None
    except StopIteration as stop:
        return stop.value


# LET bindings ------------------------------------------------------------------------------------


class LazyExpression:
    """``LET name = expression``: evaluated again, in the caller's scope, at every reference."""

    __slots__ = ("code", "name")

    def __init__(self, name: str, code: Code) -> None:
        self.name = name
        self.code = code


@dataclass
class BoundParameter:
    name: str
    default: Code | None


def bind_parameters(
    parameters: list[BoundParameter], args: Mapping[str, Any], scope: Scope, owner: str
) -> dict[str, Any] | None:
    """The variables a LET function or parameterised query sees, or None (logged) when the
    call names an argument it does not take. A parameter the call omits takes its default; one
    without a default stays unbound, so the name is looked up in the caller's scope (as vfilter
    does)."""
    known = {p.name for p in parameters}
    for name in args:
        if name not in known:
            accepts = ", ".join(p.name for p in parameters) or "none"
            scope.error(f"{owner}(): unexpected argument '{name}' (accepts: {accepts})")
            return None
    bound: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.name in args:
            bound[parameter.name] = args[parameter.name]
        elif parameter.default is not None:
            bound[parameter.name] = parameter.default
    return bound


async def _resolve_defaults(bound: dict[str, Any], scope: Scope) -> dict[str, Any]:
    for name, value in bound.items():
        if isinstance(value, Code):
            bound[name] = await evaluate(value, scope)
    return bound


class StoredQuery(RowSource):
    """A SELECT kept unevaluated: ``LET q = SELECT ...``, a ``{ SELECT ... }`` argument, or a
    parameterised query ``LET q(x) = SELECT ...``. It runs in the scope it is given."""

    __slots__ = ("name", "parameters", "plan")

    def __init__(
        self, plan: SelectPlan, name: str = "", parameters: list[BoundParameter] | None = None
    ) -> None:
        self.plan = plan
        self.name = name
        self.parameters = parameters

    def rows(self, scope: Scope, args: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        """The query's rows run in ``scope`` (with ``args`` bound when it takes parameters), as
        an async generator. A query declared without parameters sees the call's arguments as
        variables, as vfilter binds them."""
        if self.parameters is None:
            if args:
                return execute(self.plan, Scope(dict(args), scope))
            return execute(self.plan, scope)
        return self._bound_rows(scope, self.parameters, args or {})

    async def _bound_rows(
        self, scope: Scope, parameters: list[BoundParameter], args: Mapping[str, Any]
    ) -> AsyncIterator[Any]:
        bound = bind_parameters(parameters, args, scope, self.name)
        if bound is None:
            return
        scope = Scope(await _resolve_defaults(bound, scope), scope)
        async with contextlib.aclosing(execute(self.plan, scope)) as rows:
            async for row in rows:
                yield row

    async def materialize(self, scope: Scope, args: Mapping[str, Any] | None = None) -> list[Any]:
        return [row async for row in self.rows(scope, args)]

    def __repr__(self) -> str:  # how a query held in a value prints, e.g. in a row's dict
        return _callable_text("query", self.name, self.parameters)


class LetFunction:
    """``LET f(a, b=1) = expression``: called as ``f(a=...)`` in the caller's scope."""

    __slots__ = ("code", "name", "parameters")

    def __init__(self, name: str, parameters: list[BoundParameter], code: Code) -> None:
        self.name = name
        self.parameters = parameters
        self.code = code

    async def call(self, scope: Scope, args: Mapping[str, Any]) -> Any:
        scope.context.check_deadline()  # a recursive LET function may branch without a row
        bound = bind_parameters(self.parameters, args, scope, self.name)
        if bound is None:
            return None
        return await evaluate(self.code, Scope(await _resolve_defaults(bound, scope), scope))

    def __repr__(self) -> str:
        return _callable_text("function", self.name, self.parameters)


def _callable_text(kind: str, name: str, parameters: list[BoundParameter] | None) -> str:
    params = "" if parameters is None else "(" + ", ".join(p.name for p in parameters) + ")"
    return f"<stored {kind} {name or 'subquery'}{params}>"


DEFERRED = frozenset({LazyExpression, StoredQuery})


async def resolve_async(value: Any, scope: Scope) -> Any:
    """The value a symbol stands for: lazy LETs evaluated here, stored queries as row lists."""
    cls = value.__class__
    if cls is LazyExpression:
        scope.context.check_deadline()  # LETs of LETs can expand exponentially without a row
        return await evaluate(value.code, scope)
    if cls is StoredQuery:
        return await value.materialize(scope)
    return value


def resolve_sync(value: Any, scope: Scope) -> Any:
    scope = unshared(scope)  # a lazy LET's code may call anything, which may keep its scope
    if value.__class__ is LazyExpression and not value.code.is_async:
        scope.context.check_deadline()
        return value.code.fn(scope)
    return drive(resolve_async(value, scope), scope)


# SELECT plans ------------------------------------------------------------------------------------


@dataclass
class ColumnPlan:
    name: str
    code: Code


STAR = object()
"""Marks where ``*`` stands among the columns."""


@dataclass
class SourcePlan:
    """FROM: a plugin call (``args`` not None) or a variable."""

    name: str
    args: list[tuple[str, Code, str]] | None  # (name, code, kind: "expr" | "query" | "raw")
    plugin: Callee | None
    argument_error: str | None = None

    @property
    def dotted(self) -> bool:
        return "." in self.name


@dataclass
class SelectPlan:
    source: SourcePlan
    items: list[Any]  # ColumnPlan or STAR, each name once, at its first position
    where: Code | None = None
    group_by: Code | None = None
    order_by: str | None = None
    descending: bool = False
    limit: int | None = None
    # Columns that WHERE / GROUP BY may read by alias (bare same-name symbols excluded).
    aliases: dict[str, ColumnPlan] = field(default_factory=dict)
    columns: list[ColumnPlan] = field(default_factory=list)
    explicit_names: frozenset[str] = frozenset()
    has_star: bool = False
    columns_sync: bool = True
    needs_lazy_row: bool = False
    # Set by ``prepare`` once the plan is complete: the work for one source row.
    pure: bool = False  # WHERE and every column pure (see Code.pure)
    build: Callable[[Any, Scope, LazyRow | None], dict] | None = None
    steps: Callable[[Scope], RowStep] | None = None  # a run's step, given the run's scope
    step_is_async: bool = True


class LazyRow(Mapping[str, Any]):
    """The output row as WHERE and GROUP BY see it: aliased columns computed on first read."""

    __slots__ = ("plan", "scope", "values")

    def __init__(self, plan: SelectPlan, scope: Scope) -> None:
        self.plan = plan
        self.scope = scope
        self.values: dict[str, Any] = {}

    def moved_to(self, scope: Scope) -> LazyRow:
        """The same row's aliases (the same computed values) read in ``scope``."""
        moved = LazyRow(self.plan, scope)
        moved.values = self.values
        return moved

    def value(self, name: str) -> Any:
        value = self.values.get(name, MISSING)
        if value is MISSING:
            code = self.plan.aliases[name].code
            value = code.fn(self.scope)
            if code.is_async:
                value = drive(value, self.scope)
            self.values[name] = value
        return value

    async def value_async(self, name: str) -> Any:
        value = self.values.get(name, MISSING)
        if value is MISSING:
            value = await evaluate(self.plan.aliases[name].code, self.scope)
            self.values[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:
        if name in self.plan.aliases:
            return self.value(name)
        return default

    def __getitem__(self, name: str) -> Any:
        if name in self.plan.aliases:
            return self.value(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.plan.aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan.aliases)

    def __len__(self) -> int:
        return len(self.plan.aliases)


def _row_vars(row: Any) -> Mapping[str, Any]:
    if row.__class__ is dict:
        return row
    return row if isinstance(row, Mapping) else EMPTY


def _copy_star_columns(plan: SelectPlan, row: Any, out: dict[str, Any]) -> None:
    # `*` takes the row's columns, except those the SELECT names itself (they keep their place).
    if isinstance(row, Mapping):
        explicit = plan.explicit_names
        for key, value in row.items():
            if key not in explicit:
                out[key] = value


def _build_row_sync(plan: SelectPlan, row: Any, scope: Scope, lazy: LazyRow | None) -> dict:
    if not plan.has_star and lazy is None:
        return {column.name: column.code.fn(scope) for column in plan.columns}
    out: dict[str, Any] = {}
    for item in plan.items:
        if item is STAR:
            _copy_star_columns(plan, row, out)
        elif lazy is not None and item.name in lazy.values:
            out[item.name] = lazy.values[item.name]
        else:
            out[item.name] = item.code.fn(scope)
    return out


async def _build_row_async(plan: SelectPlan, row: Any, scope: Scope, lazy: LazyRow | None) -> dict:
    out: dict[str, Any] = {}
    for item in plan.items:
        if item is STAR:
            _copy_star_columns(plan, row, out)
        elif lazy is not None and item.name in lazy.values:
            out[item.name] = lazy.values[item.name]
        else:
            value = item.code.fn(scope)
            if item.code.is_async:
                value = await value
            out[item.name] = value
    return out


async def build_row(plan: SelectPlan, row: Any, scope: Scope, lazy: LazyRow | None) -> dict:
    if plan.columns_sync:
        return _build_row_sync(plan, row, scope, lazy)
    return await _build_row_async(plan, row, scope, lazy)


def _group_key(value: Any) -> Any:
    """A hashable bin key that keeps values of different types apart ('1' is not 1)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(_group_key(v) for v in value))
    return (type(value).__name__, json_text(value))


def _order_value(out: Mapping[str, Any], source_row: Any, name: str) -> Any:
    if name in out:
        return out[name]
    if isinstance(source_row, Mapping):
        return source_row.get(name)
    return None


# Row steps: the work a SELECT does for one source row ---------------------------------------------

RowStep = Callable[[Any], Any]
"""``step(row)``: the output row for one source row, or None when WHERE drops it (an awaitable
of that when the plan's step is asynchronous)."""


class SharedScope(Scope):
    """A row's scope that a row loop reuses for the next row instead of making a new one: only
    for plans whose expressions are pure (see ``Code.pure``), so no code that could keep a
    scope ever sees it (``unshared`` gives such code a copy of its own)."""

    __slots__ = ()


def unshared(scope: Scope) -> Scope:
    """``scope``, with fresh copies of any layers a row loop reuses from row to row."""
    if scope.__class__ is not SharedScope:
        return scope
    assert scope.parent is not None  # a row's scope always has its query's above it
    parent = unshared(scope.parent)
    layer = scope.vars
    if isinstance(layer, LazyRow):
        layer = layer.moved_to(parent)  # the same row's aliases, computed once between them
    return Scope(layer, parent)


def prepare(plan: SelectPlan, fast: bool = True) -> None:
    """Compile ``plan``'s per-row work once, when the plan is complete: plain functions when
    WHERE and every column are, so that rows need no coroutine, and one scope reused for every
    row when they are pure. ``fast=False`` gives the general path every plan can take (a
    coroutine a row, fresh scopes, the general row builder), which tests hold the fast one to."""
    synchronous = plan.columns_sync and (plan.where is None or not plan.where.is_async)
    if not fast:
        plan.pure = False
        plan.build = lambda row, scope, lazy: _build_row_sync(plan, row, scope, lazy)
        plan.steps = _async_steps(plan)
        plan.step_is_async = True
        return
    plan.pure = synchronous and (plan.where is None or plan.where.pure) and all(
        column.code.pure for column in plan.columns
    )
    plan.build = _row_builder(plan)
    plan.steps = _sync_steps(plan) if synchronous else _async_steps(plan)
    plan.step_is_async = not synchronous


def _row_builder(plan: SelectPlan) -> Callable[[Any, Scope, LazyRow | None], dict]:
    """The output row for a row that passed: columns computed in the row's scope, except
    those WHERE already computed by alias."""
    pairs = tuple((column.name, column.code.fn) for column in plan.columns)
    keyed = tuple((column.name, column.code.fn, column.code.row_key) for column in plan.columns)
    if plan.has_star:
        if not pairs:

            def build_star(row: Any, scope: Scope, lazy: LazyRow | None) -> dict:
                if row.__class__ is dict:
                    return dict(row)
                out: dict[str, Any] = {}
                _copy_star_columns(plan, row, out)
                return out

            return build_star
        return lambda row, scope, lazy: _build_row_sync(plan, row, scope, lazy)

    def build_columns(row: Any, scope: Scope, lazy: LazyRow | None) -> dict:
        out = {}
        if lazy is None:
            layer = scope.vars
            for name, fn, key in keyed:
                if key is None:
                    out[name] = fn(scope)
                    continue
                value = layer.get(key, MISSING)  # a bare symbol read inline
                out[name] = fn(scope) if value is MISSING or value.__class__ in DEFERRED else value
            return out
        computed = lazy.values
        for name, fn in pairs:
            value = computed.get(name, MISSING)
            out[name] = fn(scope) if value is MISSING else value
        return out

    return build_columns


def _sync_steps(plan: SelectPlan) -> Callable[[Scope], RowStep]:
    """``steps(scope)``: the step for one run of ``plan`` in ``scope``. A pure plan's step
    reuses one scope (and one alias layer) for every row of the run."""
    where = plan.where
    build = plan.build
    pure = plan.pure
    if where is None:

        def steps_selecting_all(parent: Scope) -> RowStep:
            shared = SharedScope(EMPTY, parent)

            def select_every_row(row: Any) -> dict:
                layer = row if row.__class__ is dict else _row_vars(row)
                if pure:
                    shared.vars = layer
                    return build(row, shared, None)
                return build(row, Scope(layer, parent), None)

            return select_every_row

        return steps_selecting_all
    test = where.fn
    boolean = where.boolean
    if not plan.needs_lazy_row:

        def steps_filtering(parent: Scope) -> RowStep:
            shared = SharedScope(EMPTY, parent)

            def select_where(row: Any) -> dict | None:
                layer = row if row.__class__ is dict else _row_vars(row)
                if pure:
                    row_scope: Scope = shared
                    shared.vars = layer
                else:
                    row_scope = Scope(layer, parent)
                verdict = test(row_scope)
                if verdict if boolean else truthy(verdict):
                    return build(row, row_scope, None)
                return None

            return select_where

        return steps_filtering

    def steps_filtering_by_alias(parent: Scope) -> RowStep:
        shared_row = SharedScope(EMPTY, parent)
        shared_lazy = LazyRow(plan, shared_row)
        shared_test = SharedScope(shared_lazy, shared_row)

        def select_where_aliases(row: Any) -> dict | None:
            layer = row if row.__class__ is dict else _row_vars(row)
            if pure:
                row_scope: Scope = shared_row
                shared_row.vars = layer
                lazy = shared_lazy
                lazy.values = {}
                test_scope: Scope = shared_test
            else:
                row_scope = Scope(layer, parent)
                lazy = LazyRow(plan, row_scope)
                test_scope = Scope(lazy, row_scope)
            verdict = test(test_scope)
            if verdict if boolean else truthy(verdict):
                return build(row, row_scope, lazy)
            return None

        return select_where_aliases

    return steps_filtering_by_alias


def _async_steps(plan: SelectPlan) -> Callable[[Scope], RowStep]:
    where = plan.where
    needs_lazy = plan.needs_lazy_row
    build = plan.build

    def steps_awaiting(parent: Scope) -> RowStep:
        async def select_awaiting(row: Any) -> dict | None:
            row_scope = Scope(_row_vars(row), parent)
            lazy = None
            if where is not None:
                if needs_lazy:
                    lazy = LazyRow(plan, row_scope)
                    test_scope = Scope(lazy, row_scope)
                else:
                    test_scope = row_scope
                verdict = where.fn(test_scope)
                if where.is_async:
                    verdict = await verdict
                if not truthy(verdict):
                    return None
            if plan.columns_sync:
                return build(row, row_scope, lazy)
            return await _build_row_async(plan, row, row_scope, lazy)

        return select_awaiting

    return steps_awaiting


# Running a SELECT ---------------------------------------------------------------------------------


def execute(plan: SelectPlan, scope: Scope) -> AsyncGenerator[dict, None]:
    """The output rows of one SELECT run in ``scope``, as an async generator: rows stream one
    at a time, and closing it (or LIMIT) closes the source."""
    if plan.limit == 0:
        return _no_rows()
    if plan.group_by is not None or plan.order_by is not None:
        return _gathered_rows(plan, scope)
    return _stream(plan, scope, plan.steps(scope), plan.step_is_async, plan.limit, pairs=False)


async def _no_rows() -> AsyncIterator[dict]:
    return
    yield  # an async generator that yields nothing


async def _gathered_rows(plan: SelectPlan, scope: Scope) -> AsyncIterator[dict]:
    """GROUP BY and ORDER BY: every row first, then sorted and cut to LIMIT."""
    if plan.group_by is not None:
        rows = await _grouped_rows(plan, scope)
    else:
        stream = _stream(plan, scope, plan.steps(scope), plan.step_is_async, None, pairs=True)
        rows = [pair async for pair in stream]
    if plan.order_by is not None:
        name = plan.order_by
        rows.sort(
            key=lambda pair: sort_key(_order_value(pair[0], pair[1], name)), reverse=plan.descending
        )
    if plan.limit is not None:
        rows = rows[: plan.limit]
    for out, _source in rows:
        yield out


def time_slice() -> float:
    """Seconds a row loop runs before it lets the event loop run (the agent and the server
    share their loop with networking): twice the interpreter's switch interval (10 ms unless
    changed), never less than 2 ms. Not shorter: a thread waiting for the GIL restarts its wait
    each time the loop lets go of the GIL to poll, so yielding more often than the switch
    interval starves the server's loop while its condition worker filters a long list."""
    return max(0.002, 2 * sys.getswitchinterval())


class _Pacer:
    """Tells a row loop when to let the event loop run: once a time slice has passed, reading
    the clock only every ``every`` rows, fewer rows apart when rows are slow."""

    __slots__ = ("every", "last_read", "slice", "slice_end")

    def __init__(self) -> None:
        self.every = 16
        self.slice = time_slice()
        self.last_read = time.monotonic()
        self.slice_end = self.last_read + self.slice

    def due(self) -> bool:
        now = time.monotonic()
        gap = now - self.last_read
        self.last_read = now
        if gap < self.slice / 16:
            if self.every < 1024:
                self.every *= 2
        elif gap > self.slice / 4 and self.every > 1:
            self.every //= 2
        if now < self.slice_end:
            return False
        self.slice_end = now + self.slice
        return True


async def _stream(
    plan: SelectPlan, scope: Scope, step: RowStep, step_is_async: bool, limit: int | None,
    pairs: bool,
) -> AsyncIterator[Any]:
    """``step``'s output for every row of the plan's source that it keeps (with that source row
    when ``pairs``), stopping after ``limit``. The one loop every SELECT runs: rows held in a
    list are read straight from it, and a plugin's rows straight from its generator, without a
    generator in between."""
    context = scope.context
    deadline = context.deadline
    source, plugin_name = await _open_source(plan.source, scope)
    pacer = _Pacer()
    countdown = pacer.every
    emitted = 0
    # The two loops below are the same per row, written out twice on purpose: this is the
    # engine's hottest code, and a shared helper (or a generator over both) costs a call per row.
    if source.__class__ is list:
        for row in source:
            if deadline is not None:
                context.check_deadline()
            countdown -= 1
            if not countdown:
                if pacer.due():
                    await asyncio.sleep(0)
                countdown = pacer.every
            out = step(row)
            if step_is_async:
                out = await out
            if out is not None:
                yield (out, row) if pairs else out
                emitted += 1
                if emitted == limit:
                    return
        return
    # A failing plugin ends its own rows, never the query: what its generator raises is logged;
    # what a row's step raises (or the consumer throws in) is not the plugin's.
    in_step = False
    try:
        async with contextlib.aclosing(source):
            async for row in source:
                in_step = True
                if deadline is not None:
                    context.check_deadline()
                countdown -= 1
                if not countdown:
                    if pacer.due():
                        await asyncio.sleep(0)
                    countdown = pacer.every
                out = step(row)
                if step_is_async:
                    out = await out
                if out is not None:
                    yield (out, row) if pairs else out
                    emitted += 1
                    if emitted == limit:
                        in_step = False
                        return  # closing the source stops the plugin early
                in_step = False
    except Exception as error:
        if in_step or plugin_name is None:
            raise
        scope.error(f"{plugin_name}(): {error.__class__.__name__}: {error}")


@dataclass
class _Bin:
    agg: dict[Any, Any]
    out: dict | None = None
    source_row: Any = None


async def _grouped_rows(plan: SelectPlan, scope: Scope) -> list[tuple[dict, Any]]:
    """GROUP BY: one row per bin, in first-seen order; aggregates run with the bin's state and
    the other columns take the bin's last row."""
    bins: dict[Any, _Bin] = {}
    group_by = plan.group_by
    assert group_by is not None

    async def add_to_bin(row: Any) -> None:
        parent = scope
        row_vars = _row_vars(row)
        row_scope = Scope(row_vars, parent)
        if plan.needs_lazy_row:
            test_scope = Scope(LazyRow(plan, row_scope), row_scope)
        else:
            test_scope = row_scope
        if plan.where is not None and not truthy(await evaluate(plan.where, test_scope)):
            return
        key = _group_key(await evaluate(group_by, test_scope))
        group = bins.get(key)
        if group is None:
            group = bins[key] = _Bin(agg={})
        bin_scope = Scope(row_vars, parent, agg=group.agg)
        group.out = await build_row(plan, row, bin_scope, None)
        group.source_row = row

    async for _nothing in _stream(plan, scope, add_to_bin, True, None, pairs=False):
        pass  # add_to_bin keeps no row of its own
    return [(group.out, group.source_row) for group in bins.values() if group.out is not None]


# FROM --------------------------------------------------------------------------------------------


def _rows_of_value(value: Any, scope: Scope) -> Any:
    """A list or async iterator of the rows a variable's value stands for."""
    if isinstance(value, StoredQuery):
        return value.rows(scope)
    if isinstance(value, list | tuple):
        return list(value)
    if value is None:
        return []
    return [value]


async def _open_source(plan: SourcePlan, scope: Scope) -> tuple[Any, str | None]:
    """The rows FROM reads: a list when they are already in memory, else an async generator;
    and the plugin's name when that generator is a plugin's (whose failures end only its rows)."""
    if plan.args is None:
        value = scope.lookup(plan.name)
        if value is MISSING:
            if plan.plugin is not None:
                return await _start_plugin(plan, scope)
            message = f"SELECT FROM {plan.name}: no such variable or plugin"
            scope.context.unknown("source", plan.name, message)
            return [], None
        if value.__class__ is list:
            return value, None
        if value.__class__ is LazyExpression:
            value = await resolve_async(value, scope)
        return _rows_of_value(value, scope), None
    # A plugin wins over a variable of the same plain name, as in vfilter; a dotted name
    # (`Artifact.Linux.Sys.Users(...)`) is a stored query's first, so that a LET can define it.
    if plan.plugin is not None and not plan.dotted:
        return await _start_plugin(plan, scope)
    value = scope.lookup(plan.name)
    if isinstance(value, StoredQuery):
        args = await evaluate_arguments(plan.args or [], scope)
        return value.rows(scope, args), None
    if plan.plugin is not None:
        return await _start_plugin(plan, scope)
    if value is MISSING:
        scope.context.unknown("plugin", plan.name, f"Plugin {plan.name} not found")
    else:
        scope.error(f"{plan.name} is a variable, not callable as a plugin: write FROM {plan.name}")
    return [], None


async def evaluate_arguments(args: list[tuple[str, Code, str]], scope: Scope) -> dict[str, Any]:
    """Argument values for a plugin or stored query: subqueries stay unevaluated so the plugin
    runs them in the scope it chooses; a bare stored-query variable is passed as the query."""
    values: dict[str, Any] = {}
    for name, code, kind in args:
        if kind == "query":
            values[name] = code.constant
        elif kind == "raw":
            raw = scope.lookup(code.symbol)
            if isinstance(raw, StoredQuery):
                values[name] = raw
            else:
                values[name] = await evaluate(code, scope)
        else:
            values[name] = await evaluate(code, scope)
    return values


async def _start_plugin(plan: SourcePlan, scope: Scope) -> tuple[Any, str | None]:
    """The plugin's generator, or no rows (logged) when it cannot start."""
    plugin = plan.plugin
    assert plugin is not None
    if plan.argument_error is not None:
        scope.error(plan.argument_error)
        return [], None
    args = await evaluate_arguments(plan.args or [], scope)
    try:
        return plugin.impl(scope, **plugin.python_kwargs(args)), plugin.name
    except Exception as error:
        scope.error(f"{plugin.name}(): {error.__class__.__name__}: {error}")
        return [], None
