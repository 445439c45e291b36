"""Parse VQL text into syntax trees, or refuse it with a message naming line and column."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from velotui.vql import ast


@dataclass
class VQLSyntaxError(Exception):
    """The text is not VQL. ``line`` and ``column`` are 1-based; ``message`` says what is wrong."""

    message: str
    line: int
    column: int
    source: str

    def __str__(self) -> str:
        return f"line {self.line}, col {self.column}: {self.message}"

    def render(self) -> str:
        """The one-line message, the offending source line, and a caret under the spot."""
        lines = self.source.splitlines() or [""]
        text = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        caret = " " * (max(self.column, 1) - 1) + "^"
        return f"{self}\n  {text}\n  {caret}"


# What each terminal is called in an error message.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "QUOTED_NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "RAW_STRING": "a string",
    "NEG_NAME": "a negated name",
    "GROUP_BY": "GROUP BY",
    "ORDER_BY": "ORDER BY",
    "AND_OP": "AND",
    "OR_OP": "OR",
    "EQ": "'='",
    "NE": "'!='",
    "LT": "'<'",
    "GT": "'>'",
    "LE": "'<='",
    "GE": "'>='",
    "REGEX": "'=~'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "DOT": "'.'",
    "COMMA": "','",
    "COLON": "':'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "$END": "the end of the query",
}


def _describe_terminal(name: str) -> str:
    return _TERMINAL_NAMES.get(name, name)


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "the end of the query"
    kind = _TERMINAL_NAMES.get(token.type)
    text = str(token)
    if kind and kind.startswith("a "):
        return f"{kind[2:]} {text!r}"
    return repr(text)


def _expected_phrase(expected: set[str]) -> str:
    names = sorted({_describe_terminal(e) for e in expected if not e.startswith("__")})
    if not names:
        return ""
    if len(names) > 8:
        return ""
    return " (expected " + (names[0] if len(names) == 1 else "one of " + ", ".join(names)) + ")"


def _syntax_error(error: UnexpectedInput, text: str) -> VQLSyntaxError:
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        message = f"unexpected character {char!r}"
        if char == "%":
            message += " (VQL has no '%' operator)"
        elif char in "'\"":
            message = "unterminated string"
        elif char == "`":
            message = "unterminated `name`"
        return VQLSyntaxError(message, error.line, error.column, text)
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            line, column = _end_position(text)
            message = "unexpected end of the query" + _expected_phrase(error.expected)
            return VQLSyntaxError(message, line, column, text)
        message = f"unexpected {_describe_token(token)}"
        if token.type == "NUMBER" and str(token)[0] in "-+":
            message += f" (write '{str(token)[0]} {str(token)[1:]}' with a space for arithmetic)"
        elif token.type == "NEG_NAME":
            message += f" (write '- {str(token)[1:]}' with a space for arithmetic)"
        elif token.type == "LSQB":
            message += " ('[...]' lists are only argument values; write (a, b) instead)"
        elif token.type == "MINUS":
            message += " ('-' only negates a number or a name, as in -3 or -x)"
        else:
            message += _expected_phrase(error.expected)
        return VQLSyntaxError(message, token.line or 1, token.column or 1, text)
    if isinstance(error, UnexpectedEOF):
        line, column = _end_position(text)
        return VQLSyntaxError("unexpected end of the query", line, column, text)
    return VQLSyntaxError(str(error), getattr(error, "line", 1), getattr(error, "column", 1), text)


def _end_position(text: str) -> tuple[int, int]:
    stripped = text.rstrip()
    lines = stripped.split("\n")
    return len(lines), len(lines[-1]) + 1


# Literals ----------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "0": "\0",
}


def _unescape(body: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if code[0] in "xuU" and len(code) > 1:
            return chr(int(code[1:], 16))
        # An unknown escape is kept as written, so regex escapes like '\d' survive.
        return "\\" + code

    return _ESCAPE.sub(replace, body) if "\\" in body else body


def parse_number(text: str) -> int | float:
    """VQL number literal: 0x hex, leading-zero octal, else int, else float."""
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    lowered = digits.lower()
    try:
        if lowered.startswith("0x"):
            return sign * int(lowered[2:], 16)
        if len(digits) > 1 and digits.startswith("0") and digits.isdigit():
            return sign * int(digits, 8)
        return sign * int(digits, 10)
    except ValueError:
        return sign * float(digits)


def _position(token: Any) -> ast.Position:
    if isinstance(token, Token):
        return ast.Position(token.line or 0, token.column or 0)
    if isinstance(token, ast.Node):
        return token.position
    return ast.NOWHERE


def _name(token: Token) -> str:
    text = str(token)
    return text[1:-1] if text.startswith("`") else text


class _ToAst(Transformer):
    """Turns lark's parse tree into ``velotui.vql.ast`` nodes as the parser reduces."""

    # Names and literals

    def ident(self, children: list[Token]) -> Token:
        token = children[0]
        return Token(token.type, _name(token), line=token.line, column=token.column)

    def number(self, children: list[Token]) -> ast.Literal:
        token = children[0]
        return ast.Literal(parse_number(str(token)), str(token), _position(token))

    def string(self, children: list[Token]) -> ast.Literal:
        token = children[0]
        return ast.Literal(_unescape(str(token)[1:-1]), str(token), _position(token))

    def raw_string(self, children: list[Token]) -> ast.Literal:
        token = children[0]
        return ast.Literal(str(token)[3:-3], str(token), _position(token))

    def true(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(True, str(children[0]), _position(children[0]))

    def false(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(False, str(children[0]), _position(children[0]))

    def null(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(None, str(children[0]), _position(children[0]))

    def symbol(self, children: list[Token]) -> ast.Symbol:
        return ast.Symbol(str(children[0]), _position(children[0]))

    def neg_symbol(self, children: list[Token]) -> ast.NegatedSymbol:
        name = str(children[0])[1:]
        name = name[1:-1] if name.startswith("`") else name
        return ast.NegatedSymbol(name, _position(children[0]))

    # Calls and arguments

    def arg(self, children: list[Any]) -> ast.Argument:
        name, _eq, value = children
        return ast.Argument(str(name), value, _position(name))

    def call_args(self, children: list[Any]) -> list[ast.Argument]:
        return [c for c in children if isinstance(c, ast.Argument)]

    def call(self, children: list[Any]) -> ast.Call:
        name, args = children
        return ast.Call(str(name), args, _position(name))

    def dotted_call(self, children: list[Any]) -> ast.Call:
        # `Artifact.Linux.Sys.Users(...)`: a call of the stored query with that dotted name.
        names = [str(c) for c in children[:-1] if isinstance(c, Token) and c.type != "DOT"]
        return ast.Call(".".join(names), children[-1], _position(children[0]))

    def dotted_symbol(self, children: list[Any]) -> ast.Node:
        # `a.b.c` that is not called: members of the symbol a.
        names = [c for c in children if isinstance(c, Token) and c.type != "DOT"]
        node: ast.Node = ast.Symbol(str(names[0]), _position(names[0]))
        for name in names[1:]:
            node = ast.Member(node, str(name), _position(names[0]))
        return node

    def array(self, children: list[Any]) -> ast.ArrayLiteral:
        items = [c for c in children if isinstance(c, ast.Node)]
        return ast.ArrayLiteral(items, _position(children[0]))

    def subquery(self, children: list[Any]) -> ast.Subquery:
        return ast.Subquery(children[1], _position(children[0]))

    def paren(self, children: list[Any]) -> ast.Parenthesised:
        items = [c for c in children if isinstance(c, ast.Node)]
        has_comma = any(isinstance(c, Token) and c.type == "COMMA" for c in children)
        return ast.Parenthesised(items, _position(children[0]), is_list=has_comma)

    # Operators

    def and_op(self, children: list[Any]) -> ast.Logical:
        left, op, right = children
        spelling = "&&" if str(op) == "&&" else "AND"
        return ast.Logical(spelling, left, right, _position(left))

    def or_op(self, children: list[Any]) -> ast.Logical:
        left, op, right = children
        text = str(op)
        spelling = text if text.startswith("|") else "OR"
        return ast.Logical(spelling, left, right, _position(left))

    def not_op(self, children: list[Any]) -> ast.Not:
        return ast.Not(children[1], _position(children[0]))

    def compare(self, children: list[Any]) -> ast.BinaryOp:
        left, op, right = children
        text = str(op)
        spelling = "IN" if op.type == "IN" else ("!=" if text == "<>" else text)
        return ast.BinaryOp(spelling, left, right, _position(left))

    def binop(self, children: list[Any]) -> ast.BinaryOp:
        left, op, right = children
        return ast.BinaryOp(str(op), left, right, _position(left))

    def member(self, children: list[Any]) -> ast.Member:
        target, _dot, name = children
        return ast.Member(target, str(name), _position(target))

    def index(self, children: list[Any]) -> ast.Index:
        target, _open, index, _close = children
        return ast.Index(target, index, _position(target))

    def slice(self, children: list[Any]) -> ast.Slice:
        target = children[0]
        inner = children[2:-1]  # between '[' and ']'
        colon = next(i for i, c in enumerate(inner) if isinstance(c, Token) and c.type == "COLON")
        start = inner[colon - 1] if colon > 0 else None
        stop = inner[colon + 1] if colon + 1 < len(inner) else None
        return ast.Slice(target, start, stop, _position(target))

    # SELECT

    def star(self, children: list[Token]) -> ast.Star:
        return ast.Star(_position(children[0]))

    def column(self, children: list[Any]) -> ast.Column:
        expr = children[0]
        alias = str(children[2]) if len(children) > 2 else None
        return ast.Column(expr, alias, _position(expr))

    def source(self, children: list[Any]) -> ast.Source:
        names = [
            str(c) for c in children if isinstance(c, Token) and c.type in ("NAME", "QUOTED_NAME")
        ]
        args = children[-1] if isinstance(children[-1], list) else None
        return ast.Source(".".join(names), args, _position(children[0]))

    def where(self, children: list[Any]) -> tuple[str, Any]:
        items = [c for c in children[1:] if isinstance(c, ast.Node)]
        if len(items) == 1 and len(children) == 2:
            return ("where", items[0])
        # `WHERE a, b` is vfilter's comma expression: the condition is the list (a, b).
        return ("where", ast.Parenthesised(items, _position(items[0]), is_list=True))

    def group_by(self, children: list[Any]) -> tuple[str, Any]:
        return ("group_by", [c for c in children[1:] if isinstance(c, ast.Node)])

    def order_by(self, children: list[Any]) -> tuple[str, Any]:
        name = children[1]
        return ("order_by", ast.OrderBy(str(name), len(children) > 2, _position(name)))

    def limit(self, children: list[Token]) -> tuple[str, Any]:
        value = parse_number(str(children[1]))
        if not isinstance(value, int) or value < 0:
            raise _BadLiteral("LIMIT takes a whole number of rows", children[1])
        return ("limit", value)

    def select(self, children: list[Any]) -> ast.Select:
        columns = [c for c in children if isinstance(c, ast.Column | ast.Star)]
        source = next(c for c in children if isinstance(c, ast.Source))
        clauses = dict(c for c in children if isinstance(c, tuple))
        return ast.Select(
            columns=columns,
            source=source,
            where=clauses.get("where"),
            group_by=clauses.get("group_by", []),
            order_by=clauses.get("order_by"),
            limit=clauses.get("limit"),
            position=_position(children[0]),
        )

    # LET

    def let_param(self, children: list[Any]) -> ast.Parameter:
        default = children[2] if len(children) > 2 else None
        return ast.Parameter(str(children[0]), default, _position(children[0]))

    def let_params(self, children: list[Any]) -> list[ast.Parameter]:
        return [c for c in children if isinstance(c, ast.Parameter)]

    def let(self, children: list[Any]) -> ast.Let:
        keyword, name = children[0], children[1]
        rest = children[2:]
        parameters = rest.pop(0) if isinstance(rest[0], list) else None
        operator, value = rest
        return ast.Let(str(name), parameters, str(operator) == "<=", value, _position(keyword))

    def start(self, children: list[Any]) -> list[ast.Node]:
        return list(children)


class _BadLiteral(Exception):
    def __init__(self, message: str, token: Token) -> None:
        super().__init__(message)
        self.message = message
        self.token = token


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("velotui.vql").joinpath("vql.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="basic", transformer=_ToAst(), cache=False)


@functools.cache
def _lexer_only() -> Lark:
    grammar = resources.files("velotui.vql").joinpath("vql.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="basic")


def parse(text: str) -> list[ast.Node]:
    """Parse VQL text into its statements (``ast.Select`` and ``ast.Let``).

    Raises ``VQLSyntaxError`` naming line and column when the text is not VQL. Trees are cached
    by text (they are never changed once built), so a query run by many agents or checked at
    every keystroke is parsed once.
    """
    return list(_parse_cached(text))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> tuple[ast.Node, ...]:
    try:
        return tuple(_parser().parse(text))
    except UnexpectedInput as error:
        raise _syntax_error(error, text) from None
    except Exception as error:  # a transformer rejecting a literal is still a syntax error
        bad = error if isinstance(error, _BadLiteral) else getattr(error, "orig_exc", None)
        if isinstance(bad, _BadLiteral):
            raise VQLSyntaxError(bad.message, bad.token.line, bad.token.column, text) from None
        raise


def check(text: str) -> VQLSyntaxError | None:
    """The syntax error in ``text``, or None when it parses."""
    try:
        parse(text)
    except VQLSyntaxError as error:
        return error
    return None


@dataclass(frozen=True)
class LexedToken:
    """One token of VQL text, for highlighting: its kind and where it sits (0-based offsets)."""

    kind: str
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[LexedToken]:
    """Tokens of ``text`` as far as it lexes (stops quietly at the first bad character)."""
    tokens: list[LexedToken] = []
    try:
        for token in _lexer_only().lex(text):
            start = token.start_pos or 0
            tokens.append(LexedToken(token.type, str(token), start, start + len(token)))
    except UnexpectedInput:
        pass
    return tokens
