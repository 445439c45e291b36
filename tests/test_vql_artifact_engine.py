"""What the artifact compiler's generated VQL relies on: stored queries with dotted names,
query(), switch(), scope() as a function, memoize() and the if() forms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tests.vql_evaluate import Logs, rows_of
from velotui.vql import Registry, Scope, default_registry, to_json_value


def marking_registry() -> tuple[Registry, list[str]]:
    """A registry with mark(name=): it notes each name it is called with, in order."""
    seen: list[str] = []
    registry = default_registry()

    @registry.function
    def mark(scope: Scope, *, name: str) -> str:
        seen.append(name)
        return name

    return registry, seen


# Stored queries with dotted names ----------------------------------------------------------------

USERS = (
    "LET `Artifact.Test.Users`(Prefix='u', Count=2) = "
    "SELECT Prefix + str(str=_value) AS Name FROM range(end=Count) "
)


async def test_a_dotted_source_finds_the_stored_query_of_that_name() -> None:
    rows = await rows_of(USERS + "SELECT * FROM Artifact.Test.Users(Prefix='x')")
    assert rows == [{"Name": "x0"}, {"Name": "x1"}]


async def test_omitted_parameters_take_their_defaults() -> None:
    rows = await rows_of(USERS + "SELECT * FROM Artifact.Test.Users()")
    assert rows == [{"Name": "u0"}, {"Name": "u1"}]
    rows = await rows_of(USERS + "SELECT * FROM Artifact.Test.Users(Count=1)")
    assert rows == [{"Name": "u0"}]


async def test_a_dotted_stored_query_wins_over_a_plugin_of_the_same_name() -> None:
    registry = default_registry()

    @registry.plugin(name="Artifact.Test.Users")
    async def impostor(scope: Scope, **args: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"Name": "plugin"}

    rows = await rows_of(USERS + "SELECT * FROM Artifact.Test.Users(Count=1)", registry=registry)
    assert rows == [{"Name": "u0"}]
    # Without the LET, the plugin still answers.
    rows = await rows_of("SELECT * FROM Artifact.Test.Users(Count=1)", registry=registry)
    assert rows == [{"Name": "plugin"}]


async def test_an_argument_the_stored_query_does_not_declare_is_a_clear_error() -> None:
    logs = Logs()
    rows = await rows_of(USERS + "SELECT * FROM Artifact.Test.Users(Bogus=1)", on_log=logs)
    assert rows == []
    assert logs.errors == [
        "Artifact.Test.Users(): unexpected argument 'Bogus' (accepts: Prefix, Count)"
    ]


async def test_a_dotted_stored_query_called_in_an_expression_gives_its_rows() -> None:
    rows = await rows_of(
        USERS + "SELECT Artifact.Test.Users(Count=1) AS Call, "
        "len(list=Artifact.Test.Users()) AS N FROM scope()"
    )
    assert rows == [{"Call": [{"Name": "u0"}], "N": 2}]


async def test_a_dotted_name_that_is_not_called_is_still_members_of_a_variable() -> None:
    rows = await rows_of("SELECT a.b.c AS V FROM scope()", env={"a": {"b": {"c": 7}}})
    assert rows == [{"V": 7}]


async def test_a_parameter_without_default_that_the_call_omits_is_the_callers_variable() -> None:
    # vfilter binds only the arguments given and the defaults, so the caller's value shows.
    rows = await rows_of(
        "LET q(x) = SELECT x AS X FROM scope() "
        "LET x = 'outer' "
        "SELECT * FROM q() SELECT * FROM q(x='given')"
    )
    assert rows == [{"X": "outer"}, {"X": "given"}]


async def test_a_stored_query_without_parameters_sees_call_arguments_as_variables() -> None:
    rows = await rows_of("LET q = SELECT Extra FROM scope() SELECT * FROM q(Extra=3)")
    assert rows == [{"Extra": 3}]


# query() -----------------------------------------------------------------------------------------


async def test_query_runs_text_with_its_lets_and_every_select_in_order() -> None:
    rows = await rows_of(
        "SELECT * FROM query(query='LET x = 3 SELECT x + y AS S FROM scope() "
        "SELECT 1 AS One FROM scope()', env=dict(y=4))"
    )
    assert rows == [{"S": 7}, {"One": 1}]


async def test_query_is_isolated_unless_it_inherits() -> None:
    logs = Logs()
    rows = await rows_of(
        "LET outer = 5 "
        "SELECT * FROM query(query='SELECT outer AS O FROM scope()') "
        "SELECT * FROM query(query='SELECT outer AS O FROM scope()', inherit=TRUE)",
        on_log=logs,
    )
    assert rows == [{"O": None}, {"O": 5}]
    assert logs.errors == ["Symbol outer not found"]


async def test_query_sees_the_registrys_globals_and_env_and_copy_env() -> None:
    registry = default_registry()
    registry.set_variable("Global", "g")
    rows = await rows_of(
        "LET a = 1 LET b = 2 "
        "SELECT * FROM query(query={ SELECT Global, a, b, c FROM scope() }, "
        "copy_env=['a', 'b'], env=dict(c=3))",
        registry=registry,
    )
    assert rows == [{"Global": "g", "a": 1, "b": 2, "c": 3}]


async def test_query_runs_a_stored_query_passed_in_env() -> None:
    rows = await rows_of(
        "LET Foo(X) = SELECT X * 2 AS D FROM scope() "
        "SELECT * FROM query(query='SELECT * FROM Foo(X=4)', env=dict(Foo=Foo))"
    )
    assert rows == [{"D": 8}]


async def test_query_text_with_a_syntax_error_logs_line_and_column_and_yields_nothing() -> None:
    logs = Logs()
    rows = await rows_of(
        "SELECT * FROM query(query='SELECT 1 AS A FROM scope()\nSELECT * FROM') "
        "SELECT 2 AS B FROM scope()",
        on_log=logs,
    )
    assert rows == [{"B": 2}]
    assert logs.errors == [
        "query(): line 2, col 14: unexpected end of the query (expected a name)"
    ]


async def test_query_compiles_a_text_once_per_registry() -> None:
    registry = default_registry()
    registry.function(lambda scope: 1, name="one")  # its own programs, not the built-ins'
    text = "SELECT 1 AS A FROM scope()"
    query = f"SELECT * FROM foreach(row=[1, 2, 3], query={{ SELECT * FROM query(query='{text}') }})"
    assert await rows_of(query, registry=registry) == [{"A": 1}] * 3
    program = registry.program_cache[text]
    await rows_of(query, registry=registry)
    assert registry.program_cache[text] is program


async def test_query_timeout_ends_its_rows_and_the_outer_query_goes_on() -> None:
    registry = default_registry()
    never = asyncio.Event()

    @registry.plugin
    async def stalls(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        yield {"N": 1}
        await never.wait()
        yield {"N": 2}

    logs = Logs()
    rows = await rows_of(
        "SELECT * FROM query(query={ SELECT * FROM stalls() }, timeout=0.05) "
        "SELECT 'after' AS Then FROM scope()",
        registry=registry,
        on_log=logs,
    )
    assert rows == [{"N": 1}, {"Then": "after"}]
    assert ("warning", "query(): timed out after 0.05 seconds") in logs


# switch(), scope(), memoize(), if() -------------------------------------------------------------


async def test_switch_gives_the_first_query_with_rows_and_runs_no_later_one() -> None:
    registry, seen = marking_registry()

    rows = await rows_of(
        "SELECT * FROM switch("
        "a={ SELECT mark(name='a') AS M FROM range(end=0) }, "
        "b={ SELECT mark(name='b') AS M FROM scope() WHERE FALSE }, "
        "c={ SELECT mark(name='c') AS M FROM range(end=2) }, "
        "d={ SELECT mark(name='d') AS M FROM scope() })",
        registry=registry,
    )
    assert rows == [{"M": "c"}, {"M": "c"}]
    assert seen == ["c", "c"]


async def test_scope_function_gives_the_variables_where_it_is_called() -> None:
    rows = await rows_of(
        "LET `100` = 'hundred' "
        "SELECT get(item=scope(), member='100') AS G, scope().`100` AS M, "
        "scope()._value AS Row FROM range(end=1)"
    )
    assert rows == [{"G": "hundred", "M": "hundred", "Row": 0}]
    # ... and scope() stays a plugin of one empty row.
    assert await rows_of("SELECT * FROM scope()") == [{}]


async def test_memoize_keys_rows_by_a_column_and_runs_the_query_once() -> None:
    runs: list[int] = []
    registry = default_registry()

    @registry.plugin
    async def processes(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        runs.append(1)
        for pid, name in ((1, "init"), (42, "sshd")):
            yield {"Pid": pid, "Name": name}

    rows = await rows_of(
        "LET m = memoize(query={ SELECT Pid AS Key, Name FROM processes() }, key='Key') "
        "SELECT get(item=m, field=Pid).Name AS Name, m.`42`.Name AS Direct "
        "FROM foreach(row=[dict(Pid=42), dict(Pid=1), dict(Pid=7)])",
        registry=registry,
    )
    assert rows == [
        {"Name": "sshd", "Direct": "sshd"},
        {"Name": "init", "Direct": "sshd"},
        {"Name": None, "Direct": "sshd"},
    ]
    assert runs == [1]


async def test_memoize_runs_the_query_again_once_its_period_has_passed() -> None:
    runs: list[int] = []
    registry = default_registry()

    @registry.plugin
    async def counter(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        runs.append(1)
        yield {"K": "k", "Run": len(runs)}

    rows = await rows_of(
        "LET m = memoize(query={ SELECT * FROM counter() }, key='K', period=0) "
        "SELECT m.k.Run AS Run FROM range(end=3)",
        registry=registry,
    )
    assert rows == [{"Run": 1}, {"Run": 2}, {"Run": 3}]


async def test_if_plugin_runs_only_the_branch_it_takes_and_a_query_condition_is_its_rows() -> None:
    registry, seen = marking_registry()

    rows = await rows_of(
        "LET empty = SELECT * FROM range(end=0) "
        "LET yes = SELECT mark(name='then') AS M FROM scope() "
        "LET no = SELECT mark(name='else') AS M FROM scope() "
        "SELECT * FROM if(condition=empty, then=yes, else=no) "
        "SELECT * FROM if(condition=TRUE, then={ SELECT mark(name='sub') AS M FROM scope() })",
        registry=registry,
    )
    assert rows == [{"M": "else"}, {"M": "sub"}]
    assert seen == ["else", "sub"]


async def test_if_function_evaluates_only_the_branch_it_takes() -> None:
    registry, seen = marking_registry()

    rows = await rows_of(
        "LET q = SELECT mark(name='query') AS M FROM scope() "
        "SELECT if(condition=FALSE, then=q, else=mark(name='else')) AS A, "
        "if(condition=TRUE, then=q.M) AS B, if(condition=FALSE, then=1) AS C FROM scope()",
        registry=registry,
    )
    assert rows == [{"A": "else", "B": ["query"], "C": None}]
    assert seen == ["else", "query"]


# foreach(workers=, async=) and chain(async=) -----------------------------------------------------


def _rendezvous_registry() -> Any:
    """A registry whose ``meet(name=...)`` plugin waits until both 'a' and 'b' have started:
    two of them finish only when they run at once, and never one after the other."""
    registry = default_registry()
    arrived: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    @registry.plugin
    async def meet(scope: Scope, *, name: str) -> AsyncIterator[dict[str, Any]]:
        arrived[name].set()
        for event in arrived.values():
            await event.wait()
        yield {"Met": name}

    return registry


async def test_foreach_with_workers_runs_queries_at_once() -> None:
    query = (
        "SELECT * FROM foreach(row=['a', 'b'], "
        "query={ SELECT * FROM meet(name=_value) }, workers=2)"
    )
    rows = await asyncio.wait_for(rows_of(query, registry=_rendezvous_registry()), 30)
    assert sorted(row["Met"] for row in rows) == ["a", "b"]


async def test_foreach_async_runs_queries_at_once() -> None:
    query = (
        "SELECT * FROM foreach(row=['a', 'b'], "
        "query={ SELECT * FROM meet(name=_value) }, async=TRUE)"
    )
    rows = await asyncio.wait_for(rows_of(query, registry=_rendezvous_registry()), 30)
    assert sorted(row["Met"] for row in rows) == ["a", "b"]


async def test_chain_async_runs_its_queries_at_once_and_is_no_query_itself() -> None:
    query = (
        "SELECT * FROM chain(a={ SELECT * FROM meet(name='a') }, "
        "b={ SELECT * FROM meet(name='b') }, async=TRUE)"
    )
    rows = await asyncio.wait_for(rows_of(query, registry=_rendezvous_registry()), 30)
    assert sorted(row["Met"] for row in rows) == ["a", "b"]


async def test_foreach_with_workers_keeps_every_row_and_stops_at_limit() -> None:
    rows = await rows_of(
        "SELECT * FROM foreach(row={ SELECT * FROM range(end=50) }, "
        "query={ SELECT _value AS V FROM range(start=_value, end=_value + 2) }, workers=4)"
    )
    assert sorted(row["V"] for row in rows) == sorted(list(range(50)) + list(range(1, 51)))
    limited = await rows_of(
        "SELECT * FROM foreach(row={ SELECT * FROM range(end=1000) }, "
        "query={ SELECT _value AS V FROM scope() }, workers=4) LIMIT 3"
    )
    assert len(limited) == 3


async def test_a_failing_query_under_workers_is_logged_like_one_in_sequence() -> None:
    registry = default_registry()

    @registry.plugin
    async def breaks(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        yield {"X": 1}
        raise ValueError("broken")

    logs = Logs()
    rows = await rows_of(
        "SELECT * FROM foreach(row=[1, 2], query={ SELECT * FROM breaks() }, workers=2)",
        registry=registry,
        on_log=logs,
    )
    assert rows == [{"X": 1}, {"X": 1}]
    assert logs.errors == ["breaks(): ValueError: broken"]


async def test_chain_and_switch_take_a_query_argument_named_scope() -> None:
    rows = await rows_of(
        "SELECT * FROM chain(scope={ SELECT 1 AS A FROM scope() }, "
        "b={ SELECT 2 AS B FROM scope() })"
    )
    assert rows == [{"A": 1}, {"B": 2}]
    rows = await rows_of("SELECT * FROM switch(scope={ SELECT 1 AS A FROM scope() })")
    assert rows == [{"A": 1}]


async def test_a_dotted_name_not_called_is_the_let_of_that_name_when_there_is_one() -> None:
    rows = await rows_of(
        USERS + "LET `Settings.Local` <= dict(Depth=5) "
        "SELECT * FROM foreach(row=Artifact.Test.Users) "
        "SELECT Settings.Local.Depth AS Depth, other.field AS Other FROM scope()",
        env={"other": {"field": "plain members"}},
    )
    assert rows == [{"Name": "u0"}, {"Name": "u1"}, {"Depth": 5, "Other": "plain members"}]


async def test_a_stored_query_handed_on_in_a_dict_prints_as_what_it_is() -> None:
    rows = await rows_of(
        "LET Foo(X) = SELECT X FROM scope() LET f(y) = y "
        "SELECT dict(Foo=Foo, f=f) AS D FROM scope()"
    )
    assert to_json_value(rows) == [
        {"D": {"Foo": "<stored query Foo(X)>", "f": "<stored function f(y)>"}}
    ]
