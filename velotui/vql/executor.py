"""Running compiled queries: SELECT plans, what FROM reads, and the values LET binds.

Rows stream: a SELECT pulls one row at a time from its source, filters it, and builds the output
row only for rows that pass. A column that WHERE or GROUP BY mentions by alias is computed when
first read and kept for the output row; columns of rows that WHERE drops are never computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from velotui.vql.registry import Callee
from velotui.vql.scope import EMPTY, MISSING, RowSource, Scope
from velotui.vql.values import json_text, sort_key, truthy


class Code:
    """A compiled expression: ``fn(scope)`` gives its value, or an awaitable when ``is_async``."""

    __slots__ = ("boolean", "constant", "fn", "is_async", "symbol")

    def __init__(
        self,
        fn: Any,
        is_async: bool = False,
        *,
        constant: Any = MISSING,
        symbol: str | None = None,
        boolean: bool = False,
    ) -> None:
        self.fn = fn
        self.is_async = is_async
        self.constant = constant  # the value when the expression is a literal
        self.symbol = symbol  # the name when the expression is a bare symbol
        self.boolean = boolean  # always gives True or False, so truth needs no conversion


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
    call names an argument it does not take."""
    known = {p.name for p in parameters}
    for name in args:
        if name not in known:
            scope.error(f"{owner}(): unexpected argument '{name}'")
            return None
    bound: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.name in args:
            bound[parameter.name] = args[parameter.name]
        elif parameter.default is not None:
            bound[parameter.name] = parameter.default
        else:
            bound[parameter.name] = None
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

    async def rows(self, scope: Scope, args: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        if self.parameters is not None:
            bound = bind_parameters(self.parameters, args or {}, scope, self.name)
            if bound is None:
                return
            scope = Scope(await _resolve_defaults(bound, scope), scope)
        async with contextlib.aclosing(execute(self.plan, scope)) as rows:
            async for row in rows:
                yield row

    async def materialize(self, scope: Scope, args: Mapping[str, Any] | None = None) -> list[Any]:
        return [row async for row in self.rows(scope, args)]


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


class LazyRow(Mapping[str, Any]):
    """The output row as WHERE and GROUP BY see it: aliased columns computed on first read."""

    __slots__ = ("plan", "scope", "values")

    def __init__(self, plan: SelectPlan, scope: Scope) -> None:
        self.plan = plan
        self.scope = scope
        self.values: dict[str, Any] = {}

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


async def execute(plan: SelectPlan, scope: Scope) -> AsyncIterator[dict]:
    """Yield the output rows of one SELECT run in ``scope``."""
    if plan.limit == 0:
        return
    if plan.group_by is not None:
        rows = await _grouped_rows(plan, scope)
    elif plan.order_by is not None:
        rows = [pair async for pair in _filtered_rows(plan, scope)]
    else:
        emitted = 0
        limit = plan.limit
        async with contextlib.aclosing(_filtered_rows(plan, scope)) as filtered:
            async for out, _source in filtered:
                yield out
                emitted += 1
                if limit is not None and emitted >= limit:
                    return  # closing the source stops the plugin early
        return
    if plan.order_by is not None:
        name = plan.order_by
        rows.sort(
            key=lambda pair: sort_key(_order_value(pair[0], pair[1], name)), reverse=plan.descending
        )
    if plan.limit is not None:
        rows = rows[: plan.limit]
    for out, _source in rows:
        yield out


async def _filtered_rows(plan: SelectPlan, scope: Scope) -> AsyncIterator[tuple[dict, Any]]:
    """(output row, source row) for every source row that passes WHERE."""
    where = plan.where
    needs_lazy = plan.needs_lazy_row
    context = scope.context
    deadline = context.deadline
    source = open_source(plan.source, scope)
    if (
        isinstance(source, list)
        and where is not None
        and not where.is_async
        and not needs_lazy
        and plan.columns_sync
    ):
        # The common case of filtering rows held in memory, without awaiting per row.
        where_fn = where.fn
        boolean = where.boolean
        for row in source:
            if deadline is not None:
                context.check_deadline()
            row_scope = Scope(row if row.__class__ is dict else _row_vars(row), scope)
            verdict = where_fn(row_scope)
            if verdict if boolean else truthy(verdict):
                yield _build_row_sync(plan, row, row_scope, None), row
        return
    async with contextlib.aclosing(_iterate_source(source)) as rows:
        async for row in rows:
            if deadline is not None:
                context.check_deadline()
            row_scope = Scope(_row_vars(row), scope)
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
                    continue
            if plan.columns_sync:
                yield _build_row_sync(plan, row, row_scope, lazy), row
            else:
                yield await _build_row_async(plan, row, row_scope, lazy), row


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
    source = open_source(plan.source, scope)
    context = scope.context
    deadline = context.deadline
    async with contextlib.aclosing(_iterate_source(source)) as rows:
        async for row in rows:
            if deadline is not None:
                context.check_deadline()
            row_vars = _row_vars(row)
            row_scope = Scope(row_vars, scope)
            if plan.needs_lazy_row:
                test_scope = Scope(LazyRow(plan, row_scope), row_scope)
            else:
                test_scope = row_scope
            if plan.where is not None and not truthy(await evaluate(plan.where, test_scope)):
                continue
            key = _group_key(await evaluate(group_by, test_scope))
            group = bins.get(key)
            if group is None:
                group = bins[key] = _Bin(agg={})
            bin_scope = Scope(row_vars, scope, agg=group.agg)
            group.out = await build_row(plan, row, bin_scope, None)
            group.source_row = row
    return [(group.out, group.source_row) for group in bins.values() if group.out is not None]


# FROM --------------------------------------------------------------------------------------------


async def _iterate_source(source: Any) -> AsyncIterator[Any]:
    if isinstance(source, list):
        for row in source:
            yield row
        return
    async with contextlib.aclosing(source) as rows:
        async for row in rows:
            yield row


def _rows_of_value(value: Any, scope: Scope) -> Any:
    """A list or async iterator of the rows a variable's value stands for."""
    if isinstance(value, StoredQuery):
        return value.rows(scope)
    if isinstance(value, list | tuple):
        return list(value)
    if value is None:
        return []
    return [value]


async def _value_rows(value: Any, scope: Scope) -> AsyncIterator[Any]:
    value = await resolve_async(value, scope) if value.__class__ is LazyExpression else value
    source = _rows_of_value(value, scope)
    async with contextlib.aclosing(_iterate_source(source)) as rows:
        async for row in rows:
            yield row


def open_source(plan: SourcePlan, scope: Scope) -> Any:
    """The rows FROM reads: a list when they are already in memory, else an async iterator."""
    if plan.args is None:
        value = scope.lookup(plan.name)
        if value is MISSING:
            if plan.plugin is not None:
                return _plugin_rows(plan, scope)
            message = f"SELECT FROM {plan.name}: no such variable or plugin"
            scope.context.unknown("source", plan.name, message)
            return []
        if value.__class__ is list:
            return value
        return _value_rows(value, scope)
    if plan.plugin is not None:
        return _plugin_rows(plan, scope)
    value = scope.lookup(plan.name)
    if isinstance(value, StoredQuery):
        return _stored_query_rows(value, plan, scope)
    if value is MISSING:
        scope.context.unknown("plugin", plan.name, f"Plugin {plan.name} not found")
    else:
        scope.error(f"{plan.name} is a variable, not callable as a plugin: write FROM {plan.name}")
    return []


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


async def _stored_query_rows(query: StoredQuery, plan: SourcePlan, scope: Scope) -> AsyncIterator:
    args = await evaluate_arguments(plan.args or [], scope)
    async with contextlib.aclosing(query.rows(scope, args)) as rows:
        async for row in rows:
            yield row


async def _plugin_rows(plan: SourcePlan, scope: Scope) -> AsyncIterator[Any]:
    plugin = plan.plugin
    assert plugin is not None
    if plan.argument_error is not None:
        scope.error(plan.argument_error)
        return
    args = await evaluate_arguments(plan.args or [], scope)
    try:
        generator = plugin.impl(scope, **plugin.python_kwargs(args))
        async with contextlib.aclosing(generator) as rows:
            async for row in rows:
                yield row
    except Exception as error:  # a failing plugin ends its own rows, never the query
        scope.error(f"{plugin.name}(): {error.__class__.__name__}: {error}")
