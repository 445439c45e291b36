"""Parsing: what is refused, how the refusal reads, and that nothing else escapes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velotui.vql import VQLSyntaxError, check, collect, parse, tokenize


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("SELECT 2-1 FROM scope()", 1, 9, "write '- 1' with a space"),
        ("SELECT * FROM x WHERE a = 'unterminated", 1, 27, "unterminated string"),
        ("SELECT *\nFROM info(\n", 2, 11, "unexpected end of the query"),
        ("LET x = \nFROM y", 2, 1, "unexpected 'FROM'"),
        ("SELECT a FROM b LIMIT 1.5", 1, 23, "LIMIT takes a whole number"),
        ("SELECT a b FROM c", 1, 10, "unexpected name 'b'"),
    ],
)
def test_refusals_name_line_column_and_the_problem(
    text: str, line: int, column: int, fragment: str
) -> None:
    error = check(text)
    assert error is not None
    assert (error.line, error.column) == (line, column)
    assert fragment in error.message
    assert str(error).startswith(f"line {line}, col {column}: ")


def test_render_points_at_the_spot() -> None:
    error = check("SELECT *\n  FROM x WHERE a =! 1")
    assert error is not None
    rendered = error.render().splitlines()
    assert rendered[1] == "    FROM x WHERE a =! 1"
    assert rendered[2].index("^") == rendered[1].index("!")


def test_valid_texts_parse_including_empty() -> None:
    assert parse("") == []
    assert check("-- only a comment") is None
    assert len(parse("LET a = 1 LET b <= SELECT * FROM scope() SELECT a FROM b")) == 3


def test_tokens_for_highlighting_cover_the_text() -> None:
    tokens = tokenize("SELECT Name FROM glob(globs='/tmp/*') -- files")
    kinds = [t.kind for t in tokens]
    assert kinds[:3] == ["SELECT", "NAME", "FROM"]
    assert ("STRING", "'/tmp/*'") in [(t.kind, t.text) for t in tokens]
    assert tokens[0].start == 0 and tokens[0].end == 6


VQL_PIECES = st.sampled_from(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "LET",
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "DESC",
        "x",
        "Name",
        "info()",
        "scope()",
        "1",
        "-2",
        "0x1f",
        "'a'",
        '"b"',
        "'''r'''",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ",",
        ".",
        "=",
        "=~",
        "!=",
        "<",
        "<=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "`q n`",
        "--c\n",
        "/*c*/",
        "\n",
        "TRUE",
        "NULL",
        "'unterminated",
        "`",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VQL_PIECES, max_size=14).map(" ".join))
def test_any_text_parses_or_is_refused_with_a_position(text: str) -> None:
    try:
        parse(text)
    except VQLSyntaxError as error:
        assert 1 <= error.line <= text.count("\n") + 1
        assert error.column >= 1
        assert error.render()


LITERALS = st.sampled_from(
    [
        "1",
        "-1",
        "2.5",
        "0",
        "'a'",
        "''",
        "TRUE",
        "FALSE",
        "NULL",
        "x",
        "l",
        "d",
        "(1, 2)",
        "dict(a=1)",
        "l[0]",
        "d.a",
        "'ab'[1:]",
    ]
)
OPERATORS = st.sampled_from(
    ["+", "-", "*", "/", "=", "!=", "<", ">", "<=", ">=", "=~", "IN", "AND", "OR", "||", "&&"]
)


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return draw(LITERALS)
    left = draw(expressions(depth - 1))
    right = draw(expressions(depth - 1))
    op = draw(OPERATORS)
    form = draw(st.sampled_from(["({l} {op} {r})", "(NOT {l})"]))
    return form.format(l=left, op=op, r=right)


@settings(max_examples=300, deadline=None)
@given(expressions())
def test_operators_never_raise_whatever_the_operands(expression: str) -> None:
    errors: list[str] = []
    rows = asyncio.run(
        collect(
            f"SELECT {expression} AS V FROM scope()",
            env={"x": 3, "l": [1, "a", None], "d": {"a": [1]}},
            on_log=lambda level, message: errors.append(message),
        )
    )
    assert len(rows) == 1 and list(rows[0]) == ["V"]
    assert not [e for e in errors if "query failed" in e]
