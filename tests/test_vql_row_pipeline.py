"""The row pipeline's fast paths give what the general path gives, and long filters share the loop.

Every SELECT compiles its per-row work once (``executor.prepare``). When WHERE and the columns
need no coroutine, rows are filtered without one; when they are pure (only the engine's own
operators see the scope), one scope serves every row of a run; arithmetic on numbers uses
Python's operators straight away. The general path (``prepare(plan, fast=False)``: a coroutine a
row, fresh scopes, the general row builder) is what every plan could take, and these tests hold
the fast paths to it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velotui.vql import Scope, builtins_registry, collect, default_registry
from velotui.vql import values as V
from velotui.vql.compiler import Compiler
from velotui.vql.engine import Program
from velotui.vql.executor import SelectPlan, SharedScope, prepare
from velotui.vql.parser import parse
from velotui.vql.registry import Registry


class Logs(list):
    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))


def compiled(text: str, fast: bool, registry: Registry | None = None) -> Program:
    """``text`` compiled afresh (not from the cache), its SELECTs on the fast or general path."""
    compiler = Compiler(registry or builtins_registry())
    statements = [compiler.statement(node) for node in parse(text)]
    if not fast:
        for statement in statements:
            if isinstance(statement, SelectPlan):
                prepare(statement, fast=False)
    return Program(text, statements)


async def both_paths(
    text: str, registry: Registry | None = None, **options: Any
) -> tuple[tuple[list[dict], Logs], tuple[list[dict], Logs]]:
    results = []
    for fast in (True, False):
        logs = Logs()
        program = compiled(text, fast, registry)
        rows = await collect(program, on_log=logs, registry=registry, **options)
        results.append((rows, logs))
    return results[0], results[1]


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself and 2 equal to 2.0 only when both are the same type."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# Hypothesis: simple WHERE expressions over random rows ------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 0.5, -2.5, 1e300]),
    st.sampled_from(["", "a", "xay", "Xy", "10", "b.c"]),
    st.lists(st.integers(-2, 2), max_size=3),
    st.dictionaries(st.sampled_from(["k", "A"]), st.integers(-2, 2), max_size=2),
)
ROWS = st.lists(
    st.fixed_dictionaries({"A": VALUES, "B": VALUES, "Name": VALUES}), max_size=6
)
ATOMS = st.sampled_from([
    "A", "B", "Name", "Missing", "D", "big", "1", "0", "2.5", "-3", "'a'", "'xay'", "NULL",
    "TRUE", "FALSE", "A.k", "B[0]", "-A", "(1, 'a')",
])
COMPARISONS = ["=", "!=", "<", ">", "<=", ">=", "IN"]
ARITHMETIC = ["+", "-", "*", "/"]
PATTERNS = ["'a'", "'x.+y'", "'^X'", "'.'", "''", "'('", "A"]


def _binary(ops: list[str]) -> Any:
    def build(parts: tuple[str, str, str]) -> str:
        left, op, right = parts
        return f"({left} {op} {right})"

    return lambda sub: st.tuples(sub, st.sampled_from(ops), sub).map(build)


EXPRESSIONS = st.recursive(
    ATOMS,
    lambda sub: st.one_of(
        _binary(COMPARISONS)(sub),
        _binary(ARITHMETIC)(sub),
        _binary(["AND", "OR", "&&", "||"])(sub),
        st.tuples(sub, st.sampled_from(PATTERNS)).map(lambda p: f"({p[0]} =~ {p[1]})"),
        sub.map(lambda e: f"(NOT {e})"),
        st.tuples(sub, sub, sub).map(
            lambda p: f"if(condition={p[0]}, then={p[1]}, else={p[2]})"
        ),
    ),
    max_leaves=6,
)
SHAPES = [
    "SELECT A, Name FROM rows WHERE {where}",
    "SELECT * FROM rows WHERE {where}",
    "SELECT Name, B * 2 AS D, A FROM rows WHERE {where}",
    "SELECT *, B * 2 AS D FROM rows WHERE {where} LIMIT 2",
    "LET big = D > 1 SELECT B * 2 AS D, A AS Name FROM rows WHERE {where}",
    "SELECT {where} AS X, A FROM rows",
    "SELECT A FROM rows WHERE {where} ORDER BY A",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(SHAPES), where=EXPRESSIONS, rows=ROWS)
def test_fast_and_general_paths_give_the_same_rows_and_errors(
    shape: str, where: str, rows: list[dict[str, Any]]
) -> None:
    text = shape.format(where=where)
    (fast_rows, fast_logs), (general_rows, general_logs) = asyncio.run(
        both_paths(text, env={"rows": rows})
    )
    assert same(fast_rows, general_rows), text
    assert fast_logs == general_logs, text


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(ARITHMETIC),
    left=VALUES,
    right=st.one_of(VALUES, st.sampled_from([0, 0.0, -1.5, True])),
    constant=st.booleans(),
)
def test_arithmetic_on_numbers_gives_what_vqls_operators_give(
    op: str, left: Any, right: Any, constant: bool
) -> None:
    # The number fast path is compiled for a symbol on the left and a symbol or a number on the
    # right; VQL's operator functions are what it must agree with.
    operators = {"+": V.add, "-": V.subtract, "*": V.multiply, "/": V.divide}
    right_text = "R"
    if constant:
        if not isinstance(right, int | float) or isinstance(right, bool):
            return
        right_text = repr(right)
    expected = operators[op](left, right)
    rows = asyncio.run(collect(
        compiled(f"SELECT L {op} {right_text} AS X FROM rows", fast=True),
        env={"rows": [{"L": left, "R": right}]},
    ))
    assert same(rows[0]["X"], expected), (left, op, right)


# Scopes: shared only where nothing can keep them -------------------------------------------------


async def test_code_reached_through_a_lazy_let_gets_a_scope_of_its_own() -> None:
    # WHERE is pure (a symbol and a comparison), so its rows share one scope; the lazy LET's
    # code calls a function, which could keep the scope it is given: it must get its own.
    kept: list[Any] = []
    registry = default_registry()

    @registry.function
    def keep(scope: Scope, *, value: Any) -> Any:
        kept.append(scope)
        return value

    text = "LET seen = keep(value=A) > 1 SELECT A, B * 2 AS D FROM rows WHERE seen AND D > 0"
    rows = [{"A": a, "B": a} for a in range(5)]
    result = await collect(compiled(text, True, registry), registry=registry,
                           env={"rows": rows})
    assert result == [{"A": a, "D": 2 * a} for a in range(2, 5)]
    assert len({id(scope) for scope in kept}) == len(kept) == 5
    assert not any(isinstance(scope, SharedScope) for scope in kept)
    # Each kept scope still reads its own row, and the alias computed in the row's own layer.
    assert [scope.lookup("A") for scope in kept] == [0, 1, 2, 3, 4]
    assert [scope.lookup("D") for scope in kept] == [0, 2, 4, 6, 8]


async def test_a_plan_that_calls_a_function_gets_a_fresh_scope_a_row() -> None:
    kept: list[Any] = []
    registry = default_registry()

    @registry.function
    def keep(scope: Scope, *, value: Any) -> Any:
        kept.append(scope)
        return value

    rows = [{"A": a} for a in range(3)]
    result = await collect("SELECT keep(value=A) AS K FROM rows WHERE A >= 0",
                           registry=registry, env={"rows": rows})
    assert result == [{"K": 0}, {"K": 1}, {"K": 2}]
    assert [scope.lookup("A") for scope in kept] == [0, 1, 2]


async def test_the_alias_a_lazy_let_reads_is_computed_once_for_where_and_the_row() -> None:
    calls: list[int] = []
    registry = default_registry()

    @registry.function
    def double(scope: Scope, *, value: int) -> int:
        calls.append(value)
        return value * 2

    text = "LET big = D > 2 SELECT A, double(value=A) AS D FROM rows WHERE big"
    (fast, _), (general, _) = await both_paths(
        text, registry, env={"rows": [{"A": a} for a in range(4)]}
    )
    assert fast == general == [{"A": 2, "D": 4}, {"A": 3, "D": 6}]
    assert calls == [0, 1, 2, 3] * 2  # once a row on each path


# Plugins read without a generator in between -----------------------------------------------------


class Exploding(Mapping[str, Any]):
    """A row whose columns cannot be read: the query's fault, not the plugin's."""

    def __getitem__(self, key: str) -> Any:
        raise LookupError("unreadable row")

    def get(self, key: str, default: Any = None) -> Any:
        raise LookupError("unreadable row")

    def __iter__(self) -> Iterator[str]:
        return iter(["A"])

    def __len__(self) -> int:
        return 1


async def test_a_failure_in_a_row_is_the_querys_and_a_failure_of_the_plugin_is_its_own() -> None:
    registry = default_registry()
    closed: list[str] = []

    @registry.plugin
    async def odd_rows(scope: Scope) -> AsyncIterator[Any]:
        try:
            yield {"A": 1}
            yield Exploding()
            yield {"A": 3}
        finally:
            closed.append("odd_rows")

    @registry.plugin
    async def failing(scope: Scope) -> AsyncIterator[Any]:
        yield {"A": 1}
        raise OSError("gone")

    logs = Logs()
    rows = await collect(
        "SELECT A FROM odd_rows() WHERE A > 0 SELECT A FROM failing() WHERE A > 0",
        registry=registry, on_log=logs,
    )
    assert rows == [{"A": 1}, {"A": 1}]
    assert [m for level, m in logs if level == "error"] == [
        "query failed: LookupError: unreadable row",
        "failing(): OSError: gone",
    ]
    assert closed == ["odd_rows"]


async def test_limit_closes_a_plugin_read_straight_from_its_generator() -> None:
    registry = default_registry()
    produced: list[int] = []
    closed: list[bool] = []

    @registry.plugin
    async def numbers(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield {"N": i}
        finally:
            closed.append(True)

    text = "LET q = SELECT N * 2 AS M FROM numbers() WHERE N > 1 SELECT M FROM q LIMIT 2"
    assert await collect(text, registry=registry) == [{"M": 4}, {"M": 6}]
    assert produced == [0, 1, 2, 3]
    assert closed == [True]


# Sharing the event loop --------------------------------------------------------------------------


class Ticker:
    """Counts the turns the event loop gives other tasks."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize(
    ("query", "env"),
    [
        # A million rows held in memory that WHERE drops: a loop that never waits on its own.
        ("SELECT Name FROM rows WHERE Size > 10", {"rows": [{"Name": "a", "Size": 1}] * 1_000_000}),
        # A plugin whose generator never waits either.
        ("SELECT _value FROM range(end=300000) WHERE _value < 0", {}),
    ],
    ids=["list", "plugin"],
)
async def test_a_long_filter_lets_other_tasks_run_while_it_works(
    query: str, env: dict[str, Any]
) -> None:
    async with Ticker() as ticker:
        before = ticker.ticks
        rows = await collect(query, env=env)
        ticks_while_filtering = ticker.ticks - before
    assert rows == []
    assert ticks_while_filtering >= 3
