"""Compile and run VQL: the entry points the agent, the server and the command line use."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from velotui.vql import (
    aggregates,
    artifact_source,
    functions,
    functions_data,
    functions_grok,
    functions_network,
    functions_paths,
    functions_runtime,
    functions_text,
    functions_time,
    plugins,
)
from velotui.vql.compiler import Compiler, LetPlan
from velotui.vql.executor import (
    LazyExpression,
    LetFunction,
    SelectPlan,
    StoredQuery,
    evaluate,
    execute,
)
from velotui.vql.parser import parse
from velotui.vql.registry import Registry
from velotui.vql.scope import LogSink, QueryContext, Scope, UnknownSink


@functools.cache
def builtins_registry() -> Registry:
    """The engine's own functions and plugins. Shared: add yours to ``.child()``, not here."""
    registry = Registry()
    functions.register(registry)
    for module in (
        functions_text, functions_data, functions_paths, functions_runtime, functions_time,
        functions_network, functions_grok,
    ):
        module.register(registry)
    aggregates.register(registry)
    plugins.register(registry)
    artifact_source.register(registry)
    return registry


def default_registry() -> Registry:
    """A fresh registry over the built-ins, for a caller to add its own to."""
    return builtins_registry().child()


@dataclass
class Program:
    """A parsed and compiled VQL text: its statements in order."""

    text: str
    statements: list[LetPlan | SelectPlan]

    def rows(self, scope: Scope) -> AsyncGenerator[dict[str, Any], None]:
        """Run every statement in ``scope`` (whose innermost layer takes the LETs) and yield
        the rows of each SELECT in turn. A statement that fails is logged and the next runs."""
        return _statement_rows(self, None, lambda: scope)


async def _statement_rows(
    query: str | Program, registry: Registry | None, make_scope: Callable[[], Scope]
) -> AsyncGenerator[dict[str, Any], None]:
    # What Program.rows and run both are, without a generator in between, because each row
    # passes through every generator on its way out.
    program = query if isinstance(query, Program) else compile_query(query, registry)
    scope = make_scope()
    for statement in program.statements:
        if isinstance(statement, LetPlan):
            try:
                await _bind(statement, scope)
            except Exception as error:
                scope.error(f"LET {statement.name}: {error.__class__.__name__}: {error}")
            continue
        try:
            async with contextlib.aclosing(execute(statement, scope)) as rows:
                async for row in rows:
                    yield row
        except Exception as error:
            scope.error(f"query failed: {error.__class__.__name__}: {error}")


async def _bind(plan: LetPlan, scope: Scope) -> None:
    if plan.masks_builtin:
        scope.warn(f"LET {plan.name} masks a built-in function: {plan.name}() still calls it")
    if plan.materialised and plan.parameters is not None:
        scope.warn(f"LET {plan.name} takes parameters but is materialised; did you mean '='?")
    value: Any
    if plan.select is not None:
        if plan.materialised and plan.parameters is None:
            value = [row async for row in execute(plan.select, scope)]
        else:
            value = StoredQuery(plan.select, plan.name, plan.parameters)
    else:
        assert plan.code is not None
        if plan.parameters is not None:
            value = LetFunction(plan.name, plan.parameters, plan.code)
        elif plan.materialised:
            value = await evaluate(plan.code, scope)
        else:
            value = LazyExpression(plan.name, plan.code)
    scope.vars[plan.name] = value  # type: ignore[index]  # the LET layer is a plain dict


_PROGRAM_CACHE_SIZE = 512


def compile_query(text: str, registry: Registry | None = None) -> Program:
    """Parse and compile ``text`` against ``registry`` (the built-ins by default).

    Raises ``VQLSyntaxError`` (with line and column) when the text is not VQL. Compiled
    programs are cached per registry, so running one text many times compiles it once.
    """
    registry = registry if registry is not None else builtins_registry()
    # Registries that add only variables share their parent's programs: a fleet of simulated
    # agents, each with its own labels, compiles a hunt's query once.
    owner = registry
    while owner.compiles_like_parent():
        owner = owner.parent  # type: ignore[assignment]
    cache = owner.program_cache
    program = cache.get(text)
    if program is None:
        compiler = Compiler(owner)
        program = Program(text, [compiler.statement(node) for node in parse(text)])
        if len(cache) >= _PROGRAM_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[text] = program
    return program


def new_scope(
    registry: Registry | None = None,
    env: Mapping[str, Any] | None = None,
    on_log: LogSink | None = None,
    services: dict[str, Any] | None = None,
    deadline: float | None = None,
    on_unknown: UnknownSink | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Scope:
    """A root scope for one run: the registry's globals, then ``env``, then a layer for LETs.
    ``deadline`` (a value of ``clock()``) and ``on_unknown``: see ``QueryContext``."""
    registry = registry if registry is not None else builtins_registry()
    context = QueryContext(
        registry, on_log=on_log, services=services, deadline=deadline, on_unknown=on_unknown,
        clock=clock,
    )
    globals_scope = Scope(registry.variables(), context=context)
    env_scope = Scope(dict(env or {}), globals_scope)
    return Scope({}, env_scope)


def run(
    query: str | Program,
    *,
    env: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    on_log: LogSink | None = None,
    services: dict[str, Any] | None = None,
    deadline: float | None = None,
    on_unknown: UnknownSink | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[dict[str, Any], None]:
    """The rows of every statement of ``query``, as an async generator.

    Raises ``VQLSyntaxError`` before yielding anything when the text is not VQL. Errors while
    running (unknown symbols, failing functions) go to ``on_log`` and never stop the query;
    unknown names also go to ``on_unknown``. Raises ``DeadlineExceeded`` once ``clock()``
    (``time.monotonic`` unless given; ``time.thread_time`` counts only this thread's work) has
    passed ``deadline``, checked between rows and in loops that yield none. A long filter
    lets the event loop run about every 10 ms (``executor.time_slice``).
    """

    def make_scope() -> Scope:
        return new_scope(registry, env, on_log, services, deadline, on_unknown, clock)

    return _statement_rows(query, registry, make_scope)


async def collect(query: str | Program, **options: Any) -> list[dict[str, Any]]:
    """Every row of ``query`` as a list (see ``run`` for the options)."""
    return [row async for row in run(query, **options)]


def run_sync(query: str | Program, **options: Any) -> list[dict[str, Any]]:
    """``collect`` for callers without an event loop (tests, scripts)."""
    return asyncio.run(collect(query, **options))
