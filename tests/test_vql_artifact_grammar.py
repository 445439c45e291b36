"""Constructs Velociraptor's artifact library writes that vfilter's grammar accepts: trailing
commas, one-element lists, `*` without its comma, comma expressions in WHERE, and the NULL rules
of comparisons, IN and foreach()."""

from __future__ import annotations

from typing import Any

import pytest

from velotui.vql import Scope, collect, default_registry, parse


async def rows_of(query: str, **options: Any) -> list[dict[str, Any]]:
    return await collect(query, **options)


async def value_of(expression: str) -> Any:
    rows = await rows_of(f"SELECT {expression} AS V FROM scope()")
    return rows[0]["V"]


# Trailing commas ---------------------------------------------------------------------------------


async def test_a_trailing_comma_in_an_array_argument_is_ignored() -> None:
    rows = await rows_of("SELECT * FROM foreach(row=[dict(a=1), dict(a=2), ])")
    assert rows == [{"a": 1}, {"a": 2}]


async def test_a_trailing_comma_in_call_arguments_is_ignored() -> None:
    assert await value_of("dict(x=1, y=2, )") == {"x": 1, "y": 2}
    rows = await rows_of("SELECT _value FROM range(start=1, end=3, )")
    assert rows == [{"_value": 1}, {"_value": 2}]


async def test_a_trailing_comma_in_a_parenthesised_list_is_ignored() -> None:
    assert await value_of("(1, 2, )") == [1, 2]


async def test_a_trailing_comma_in_let_parameters_and_group_by_is_ignored() -> None:
    rows = await rows_of(
        "LET f(a, b, ) = a + b "
        "SELECT f(a=1, b=2) AS S FROM range(end=2) GROUP BY _value, "
    )
    assert rows == [{"S": 3}, {"S": 3}]


# Parentheses with a comma are lists -------------------------------------------------------------


async def test_a_paren_with_a_comma_is_a_list_and_without_one_a_group() -> None:
    assert await value_of("(7,)") == [7]
    assert await value_of("(1, 2)") == [1, 2]
    assert await value_of("(7)") == 7


def test_a_one_element_list_keeps_its_comma_in_normal_form() -> None:
    select = parse("SELECT (7,) FROM scope()")[0]
    assert select.columns[0].name == "(7,)"


async def test_in_tests_membership_of_a_parenthesised_list() -> None:
    assert await value_of("2 IN (1, 2, 3)") is True
    assert await value_of("4 IN (1, 2, 3)") is False
    assert await value_of("'b' IN ('b',)") is True


async def test_nothing_is_in_null() -> None:
    assert await value_of("NULL IN NULL") is False
    assert await value_of("1 IN NULL") is False
    assert await value_of("'' IN NULL") is False


# SELECT * ----------------------------------------------------------------------------------------


async def test_star_without_its_comma_then_more_columns() -> None:
    rows = await rows_of("SELECT * _value * 10 AS Ten FROM range(end=2)")
    assert rows == [{"_value": 0, "Ten": 0}, {"_value": 1, "Ten": 10}]


async def test_star_without_its_comma_then_a_subquery_column() -> None:
    rows = await rows_of("SELECT * { SELECT 5 AS X FROM scope() } AS Sub FROM range(end=1)")
    assert rows == [{"_value": 0, "Sub": 5}]


async def test_star_with_its_comma_and_star_after_columns() -> None:
    assert await rows_of("SELECT *, 1 AS One FROM range(end=1)") == [{"_value": 0, "One": 1}]
    assert await rows_of("SELECT 1 AS One, * FROM range(end=1)") == [{"One": 1, "_value": 0}]


def test_star_without_a_comma_is_only_allowed_first() -> None:
    from velotui.vql import VQLSyntaxError

    with pytest.raises(VQLSyntaxError):
        parse("SELECT _value * FROM range(end=1)")
    with pytest.raises(VQLSyntaxError):
        parse("SELECT a b FROM scope()")


# WHERE with commas -------------------------------------------------------------------------------


async def test_where_with_commas_tests_the_list_so_every_term_runs_and_the_row_stays() -> None:
    # vfilter reads WHERE as a comma expression: the list (a, b) is true when it is not empty.
    seen: list[str] = []
    registry = default_registry()

    @registry.function
    def note(scope: Scope, *, message: str) -> bool:
        seen.append(message)
        return True

    rows = await rows_of(
        "SELECT _value FROM range(end=2) WHERE note(message='first ' + str(str=_value)), "
        "note(message='second ' + str(str=_value))",
        registry=registry,
    )
    assert rows == [{"_value": 0}, {"_value": 1}]
    assert seen == ["first 0", "second 0", "first 1", "second 1"]


async def test_where_with_commas_keeps_the_row_even_when_every_term_is_false() -> None:
    assert await rows_of("SELECT _value FROM range(end=1) WHERE FALSE, FALSE") == [{"_value": 0}]
    assert await rows_of("SELECT _value FROM range(end=1) WHERE FALSE") == []


# NULL in comparisons and foreach() ---------------------------------------------------------------


async def test_null_is_less_or_equal_and_greater_or_equal_to_null() -> None:
    assert await value_of("NULL >= NULL") is True
    assert await value_of("NULL <= NULL") is True
    assert await value_of("NULL < NULL") is False
    assert await value_of("NULL > NULL") is False
    assert await value_of("NULL >= 1") is False
    assert await value_of("1 <= NULL") is False


async def test_foreach_skips_null_elements_of_its_row_list() -> None:
    rows = await rows_of("SELECT * FROM foreach(row=[dict(a=1), NULL, dict(a=2)])")
    assert rows == [{"a": 1}, {"a": 2}]
    rows = await rows_of(
        "SELECT * FROM foreach(row=[1, NULL, 2], query={ SELECT _value AS V FROM scope() })"
    )
    assert rows == [{"V": 1}, {"V": 2}]


# Names -------------------------------------------------------------------------------------------


async def test_a_negated_backquoted_name() -> None:
    rows = await rows_of("SELECT -`a b` AS N FROM scope()", env={"a b": 3})
    assert rows == [{"N": -3}]
    assert parse("SELECT -`a b` FROM scope()")[0].columns[0].name == "-`a b`"


def test_a_dotted_call_is_one_call_of_the_dotted_name_and_keeps_its_form() -> None:
    select = parse("SELECT Artifact.Linux.Sys.Users(Param1='x'), a.b.c FROM scope()")[0]
    call = select.columns[0].expr
    assert call.name == "Artifact.Linux.Sys.Users"
    assert [arg.name for arg in call.args] == ["Param1"]
    assert select.columns[0].name == "Artifact.Linux.Sys.Users(Param1='x')"
    assert select.columns[1].name == "a.b.c"
    backquoted = parse("SELECT `Artifact.Linux.Sys.Users`(Param1='x') FROM scope()")[0]
    assert backquoted.columns[0].expr.name == "Artifact.Linux.Sys.Users"
