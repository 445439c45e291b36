"""The VQL engine beyond the corpus: streaming, laziness, LET forms, the registry, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.vql_evaluate import Logs, rows_of
from velotui.vql import (
    DeadlineExceeded,
    Scope,
    UnknownName,
    VQLSyntaxError,
    builtins_registry,
    compile_query,
    default_registry,
    run,
)

# Streaming ---------------------------------------------------------------------------------------


async def test_limit_stops_the_source_early_and_closes_it() -> None:
    produced: list[int] = []
    closed: list[bool] = []
    registry = default_registry()

    @registry.plugin
    async def numbers(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield {"N": i}
        finally:
            closed.append(True)

    rows = await rows_of("SELECT N FROM numbers() WHERE N > 2 LIMIT 2", registry=registry)
    assert rows == [{"N": 3}, {"N": 4}]
    assert len(produced) == 5
    assert closed == [True]


async def test_rows_stream_before_the_source_finishes() -> None:
    registry = default_registry()
    release = asyncio.Event()

    @registry.plugin
    async def slow(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        yield {"A": 1}
        await release.wait()
        yield {"A": 2}

    stream = run("SELECT A FROM slow()", registry=registry)
    first = await asyncio.wait_for(stream.__anext__(), timeout=5)
    assert first == {"A": 1}
    release.set()
    assert await stream.__anext__() == {"A": 2}
    await stream.aclose()


async def test_columns_of_rows_dropped_by_where_are_never_computed() -> None:
    computed: list[Any] = []
    registry = default_registry()

    @registry.function
    def expensive(scope: Scope, *, value: Any) -> Any:
        computed.append(value)
        return value * 10

    rows = await rows_of(
        "SELECT _value AS x, expensive(value=_value) AS Big FROM range(end=5) WHERE _value > 2",
        registry=registry,
    )
    assert rows == [{"x": 3, "Big": 30}, {"x": 4, "Big": 40}]
    assert computed == [3, 4]


async def test_where_reads_an_alias_once_and_the_row_reuses_it() -> None:
    calls: list[int] = []
    registry = default_registry()

    @registry.function
    def double(scope: Scope, *, value: int) -> int:
        calls.append(value)
        return value * 2

    rows = await rows_of(
        "SELECT _value, double(value=_value) AS D FROM range(end=4) WHERE D >= 4",
        registry=registry,
    )
    assert rows == [{"_value": 2, "D": 4}, {"_value": 3, "D": 6}]
    assert calls == [0, 1, 2, 3]


async def test_column_order_is_kept_with_star_and_overrides() -> None:
    rows = await rows_of("SELECT Z, *, 1 AS A FROM r", env={"r": [{"A": 0, "B": 1, "Z": 2}]})
    assert list(rows[0].items()) == [("Z", 2), ("B", 1), ("A", 1)]


# LET ---------------------------------------------------------------------------------------------


async def test_materialised_let_is_evaluated_once() -> None:
    rows = await rows_of("LET n <= count() SELECT n AS A, n AS B FROM range(end=2)")
    assert rows == [{"A": 1, "B": 1}, {"A": 1, "B": 1}]


async def test_let_function_with_defaults_and_dynamic_scope() -> None:
    rows = await rows_of(
        "LET scale(x, by=10) = x * by + offset "
        "SELECT scale(x=2) AS A, scale(x=2, by=3) AS B FROM scope()",
        env={"offset": 1},
    )
    assert rows == [{"A": 21, "B": 7}]


async def test_parameterised_query_from_and_as_a_function() -> None:
    query = (
        "LET big(min) = SELECT Name FROM files WHERE Size > min "
        "SELECT * FROM big(min=15) "
        "SELECT len(list=big(min=25)) AS N FROM scope()"
    )
    files = [{"Name": "a", "Size": 10}, {"Name": "b", "Size": 20}, {"Name": "c", "Size": 30}]
    assert await rows_of(query, env={"files": files}) == [
        {"Name": "b"},
        {"Name": "c"},
        {"N": 1},
    ]


async def test_let_query_referenced_in_an_expression_is_its_rows() -> None:
    rows = await rows_of(
        "LET q = SELECT _value AS V FROM range(end=3) "
        "SELECT q.V AS Vs, len(list=q) AS N FROM scope()"
    )
    assert rows == [{"Vs": [0, 1, 2], "N": 3}]


async def test_subquery_column_gives_a_value_a_row_or_a_list() -> None:
    rows = await rows_of(
        "SELECT {SELECT 1 AS A FROM scope()} AS One, "
        "{SELECT 1 AS A, 2 AS B FROM scope()} AS Row, "
        "{SELECT _value FROM range(end=3)} AS Many, "
        "{SELECT * FROM range(end=0)} AS Nothing FROM scope()"
    )
    assert rows == [{"One": 1, "Row": {"A": 1, "B": 2}, "Many": [0, 1, 2], "Nothing": None}]


# Registry and errors -----------------------------------------------------------------------------


async def test_child_registry_adds_without_changing_the_builtins() -> None:
    registry = default_registry()

    @registry.function
    def shout(scope: Scope, *, text: str) -> str:
        return text.upper() + "!"

    assert await rows_of("SELECT shout(text='hi') AS S FROM scope()", registry=registry) == [
        {"S": "HI!"}
    ]
    logs = Logs()
    assert await rows_of("SELECT shout(text='hi') AS S FROM scope()", on_log=logs) == [{"S": None}]
    assert any("shout" in e for e in logs.errors)


async def test_async_functions_and_variables_from_the_registry() -> None:
    registry = default_registry()
    registry.set_variable("config", {"Labels": ["Finance"]})

    @registry.function
    async def later(scope: Scope, *, value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    rows = await rows_of(
        "SELECT later(value=config.Labels) AS L FROM scope() WHERE 'Finance' IN config.Labels",
        registry=registry,
    )
    assert rows == [{"L": ["Finance"]}]


async def test_an_exception_in_a_function_is_logged_and_null() -> None:
    registry = default_registry()

    @registry.function
    def broken(scope: Scope, *, value: Any) -> Any:
        raise RuntimeError("disk on fire")

    logs = Logs()
    rows = await rows_of(
        "SELECT broken(value=_value) AS B, _value FROM range(end=2)",
        registry=registry,
        on_log=logs,
    )
    assert rows == [{"B": None, "_value": 0}, {"B": None, "_value": 1}]
    assert logs.errors == ["broken(): RuntimeError: disk on fire"]


async def test_a_failing_plugin_ends_its_rows_and_the_next_statement_runs() -> None:
    registry = default_registry()

    @registry.plugin
    async def flaky(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        yield {"A": 1}
        raise OSError("gone")

    logs = Logs()
    rows = await rows_of(
        "SELECT * FROM flaky() SELECT 'after' AS B FROM scope()", registry=registry, on_log=logs
    )
    assert rows == [{"A": 1}, {"B": "after"}]
    assert logs.errors == ["flaky(): OSError: gone"]


async def test_wrong_arguments_are_named() -> None:
    logs = Logs()
    rows = await rows_of("SELECT upcase(strin='x') AS U FROM scope()", on_log=logs)
    assert rows == [{"U": None}]
    assert "upcase(): unexpected argument 'strin'" in logs.errors[0]
    logs.clear()
    assert await rows_of("SELECT * FROM range(start=1)", on_log=logs) == []
    assert logs.errors == ["range(): missing required argument 'end'"]


async def test_unknown_plugin_and_missing_variable_are_logged() -> None:
    logs = Logs()
    assert await rows_of("SELECT * FROM nope()", on_log=logs) == []
    assert await rows_of("SELECT * FROM nothing", on_log=logs) == []
    assert logs.errors == [
        "Plugin nope not found",
        "SELECT FROM nothing: no such variable or plugin",
    ]


async def test_errors_are_reported_once_per_run_not_per_row() -> None:
    logs = Logs()
    await rows_of("SELECT Missing FROM range(end=100)", on_log=logs)
    assert logs.errors == ["Symbol Missing not found"]


def test_compiled_programs_are_reused() -> None:
    registry = default_registry()
    assert compile_query("SELECT 1 FROM scope()", registry) is compile_query(
        "SELECT 1 FROM scope()", registry
    )


def test_syntax_error_names_line_and_column_of_a_multi_line_query() -> None:
    with pytest.raises(VQLSyntaxError) as caught:
        compile_query("SELECT Name\nFROM files\nWHERE Size >> 3")
    error = caught.value
    assert (error.line, error.column) == (3, 13)
    assert str(error).startswith("line 3, col 13: unexpected '>'")
    assert error.render().splitlines()[1:] == ["  WHERE Size >> 3", "              ^"]


# Built-ins ---------------------------------------------------------------------------------------


async def test_builtin_functions_beyond_the_corpus() -> None:
    rows = await rows_of(
        "SELECT get(item=d, member='a.b', default='?') AS Missing, "
        "get(item=d, field='x') AS Field, "
        "encode(string='hi', type='base64') AS B64, "
        "regex_replace(source='2024-01-02', re='(?P<y>\\\\d+)-(\\\\d+)', replace='${y}/$2') AS R, "
        "timestamp(string='2023-11-14T22:13:20Z').Unix AS T, "
        "format(format='%s has %d', args=['x', 2]) AS F, "
        "split(string='a b', sep_string=' ') AS S FROM scope()",
        env={"d": {"x": 5}},
    )
    assert rows == [
        {
            "Missing": "?",
            "Field": 5,
            "B64": "aGk=",
            "R": "2024/01-02",
            "T": 1700000000,
            "F": "x has 2",
            "S": ["a", "b"],
        }
    ]


async def test_timestamps_compare_and_serialise() -> None:
    rows = await rows_of(
        "SELECT timestamp(epoch=1700000000) AS T, "
        "timestamp(epoch=1700000000) > 1600000000 AS Later, "
        "timestamp(epoch=1700000000000) = timestamp(epoch=1700000000) AS Millis FROM scope()"
    )
    assert rows[0]["T"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert rows[0]["Later"] is True and rows[0]["Millis"] is True


async def test_group_by_several_keys_and_order_by_descending_is_stable() -> None:
    data = [
        {"OS": "linux", "Arch": "amd64"},
        {"OS": "linux", "Arch": "arm64"},
        {"OS": "linux", "Arch": "amd64"},
        {"OS": "windows", "Arch": "amd64"},
    ]
    rows = await rows_of(
        "SELECT OS, Arch, count() AS N FROM hosts GROUP BY OS, Arch ORDER BY N DESC",
        env={"hosts": data},
    )
    assert rows == [
        {"OS": "linux", "Arch": "amd64", "N": 2},
        {"OS": "linux", "Arch": "arm64", "N": 1},
        {"OS": "windows", "Arch": "amd64", "N": 1},
    ]


async def test_foreach_runs_the_query_per_row_with_its_columns() -> None:
    rows = await rows_of(
        "SELECT * FROM foreach(row={SELECT _value AS X FROM range(end=3)}, "
        "query={SELECT X * X AS Square FROM scope()})"
    )
    assert rows == [{"Square": 0}, {"Square": 1}, {"Square": 4}]


async def test_sleep_waits_without_blocking_the_loop() -> None:
    ticks: list[int] = []

    async def tick() -> None:
        for i in range(3):
            ticks.append(i)
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    rows = await rows_of("SELECT sleep(time=0.5) AS Slept FROM scope()")
    ticked_while_sleeping = list(ticks)
    await ticker
    assert rows == [{"Slept": True}]
    assert ticked_while_sleeping == [0, 1, 2]  # the other task ran while the query slept


# Deadlines and unknown names (the hooks the server's hidden condition uses) ----------------------

PAST = -1.0  # a time.monotonic() value long gone: the first check raises


async def test_a_deadline_stops_a_plugin_that_yields_rows() -> None:
    with pytest.raises(DeadlineExceeded):
        await rows_of("SELECT * FROM range(end=100000000) WHERE _value < 0", deadline=PAST)


async def test_a_deadline_is_read_on_the_clock_given() -> None:
    # The server counts its worker thread's CPU time, not the wall clock.
    query = "SELECT * FROM range(end=10)"
    later = time.monotonic() + 3600
    assert len(await rows_of(query, deadline=later)) == 10
    with pytest.raises(DeadlineExceeded):
        await rows_of(query, deadline=later, clock=lambda: later + 1)


@pytest.mark.parametrize("query", ["SELECT * FROM items WHERE N < 0",
                                   "SELECT count() AS C FROM items WHERE N < 0 GROUP BY N"])
async def test_a_deadline_stops_filtering_rows_held_in_memory(query: str) -> None:
    items = [{"N": n} for n in range(10)]
    assert await rows_of(query, env={"items": items}) == []
    with pytest.raises(DeadlineExceeded):
        await rows_of(query, env={"items": items}, deadline=PAST)


async def test_a_deadline_stops_lets_of_lets_that_expand_without_a_row() -> None:
    # Each LET reads the one before twice: a20 is a million additions, and no row at all.
    lets = "LET a0 = 1\n" + "".join(f"LET a{i} = a{i - 1} + a{i - 1}\n" for i in range(1, 21))
    with pytest.raises(DeadlineExceeded):
        await rows_of(lets + "LET total <= a20", deadline=PAST)


async def test_a_deadline_stops_a_let_function_that_branches_without_a_row() -> None:
    query = ("LET f(n) = if(condition=n > 0, then=f(n=n - 1) + f(n=n - 1), else=1)\n"
             "LET total <= f(n=18)")
    with pytest.raises(DeadlineExceeded):
        await rows_of(query, deadline=PAST)


async def test_a_deadline_stops_a_plugin_iterating_a_list_that_yields_nothing() -> None:
    query = "LET none <= SELECT * FROM foreach(row=items, query=[])"
    assert await rows_of(query, env={"items": list(range(10))}) == []
    with pytest.raises(DeadlineExceeded):
        await rows_of(query, env={"items": list(range(10))}, deadline=PAST)


async def test_a_deadline_passes_through_the_handlers_that_log_and_go_on() -> None:
    # A failing function or plugin is logged and the query goes on; a deadline met inside one
    # (an implementation checks it in a long loop) ends the run.
    registry = default_registry()

    @registry.function
    def expires(scope: Scope) -> bool:
        raise DeadlineExceeded("past")

    @registry.plugin
    async def expiring(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        raise DeadlineExceeded("past")
        yield {}

    logs = Logs()
    for query in ("SELECT expires() AS E FROM scope()", "SELECT * FROM expiring()",
                  "LET e <= expires()\nSELECT e FROM scope()"):
        with pytest.raises(DeadlineExceeded):
            await rows_of(query, registry=registry, on_log=logs)
    assert logs.errors == []


async def test_unknown_names_are_reported_by_kind_as_well_as_logged() -> None:
    unknown: list[UnknownName] = []
    logs = Logs()
    await rows_of(
        "SELECT Missing, nofunction() AS F FROM rows\n"
        "SELECT * FROM noplugin()\nSELECT * FROM nosource",
        env={"rows": [{"A": 1}, {"A": 2}]}, on_log=logs, on_unknown=unknown.append,
    )
    assert [(u.kind, u.name) for u in unknown] == [
        ("symbol", "Missing"), ("function", "nofunction"),
        ("symbol", "Missing"), ("function", "nofunction"),
        ("plugin", "noplugin"), ("source", "nosource"),
    ]
    assert logs.errors == [u.message for u in unknown[:2]] + [u.message for u in unknown[4:]]


async def test_a_registry_with_only_some_names_reaches_nothing_else() -> None:
    registry = builtins_registry().only({"len", "scope"})
    unknown: list[UnknownName] = []
    rows = await rows_of("SELECT len(list=[1, 2]) AS N, upcase(string='a') AS U FROM scope()",
                         registry=registry, on_unknown=unknown.append)
    assert rows == [{"N": 2, "U": None}]
    assert [(u.kind, u.name) for u in unknown] == [("function", "upcase")]
    assert registry.lookup_plugin("range") is None


def test_get_with_only_a_field_reads_the_scope_as_velociraptor_documents() -> None:
    from velotui.vql import run_sync

    rows = run_sync("LET Secret <= 'kept'\nLET Lazy = 1 + 1\n"
                    "SELECT get(field='Secret') AS A, get(field='Lazy') AS B, "
                    "get(field='Nope', default='none') AS C FROM scope()")
    assert rows == [{"A": "kept", "B": 2, "C": "none"}]


def test_dict_takes_any_argument_name_even_scope() -> None:
    from velotui.vql import run_sync

    assert run_sync("SELECT dict(scope=1, a=2) AS D FROM scope()") == [{"D": {"scope": 1,
                                                                                "a": 2}}]
