"""The syntax tree of a VQL text, and its normal form.

A column without AS is named by its expression written back in normal form (single spaces around
binary operators, literals as they were typed), which is what these ``to_vql`` methods produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEYWORDS = frozenset(
    [
        "select",
        "from",
        "where",
        "let",
        "as",
        "limit",
        "desc",
        "not",
        "in",
        "null",
        "true",
        "false",
        "and",
        "or",
        "group",
        "order",
        "by",
    ]
)


def quote_name(name: str) -> str:
    """A name as it must be written in VQL: bare when it can be, in backticks otherwise."""
    if _PLAIN_NAME.match(name) and name.lower() not in KEYWORDS:
        return name
    return f"`{name}`"


@dataclass(frozen=True)
class Position:
    line: int
    column: int


NOWHERE = Position(0, 0)


class Node:
    """Base of every syntax node."""

    position: Position

    def to_vql(self) -> str:  # pragma: no cover - every node overrides it
        raise NotImplementedError


# Expressions -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Literal(Node):
    value: Any
    text: str
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return self.text


@dataclass(eq=False)
class Symbol(Node):
    name: str
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return quote_name(self.name)


@dataclass(eq=False)
class NegatedSymbol(Node):
    """``-x``: the value of x negated (VQL has no general unary minus)."""

    name: str
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"-{quote_name(self.name)}"


@dataclass(eq=False)
class Argument(Node):
    name: str
    value: Node  # an expression, a Subquery or an ArrayLiteral
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{quote_name(self.name)}={self.value.to_vql()}"


@dataclass(eq=False)
class Call(Node):
    name: str
    args: list[Argument]
    position: Position = NOWHERE

    def to_vql(self) -> str:
        # A dotted name (a stored query's) is written as it is called: Artifact.Foo.Bar(...).
        name = ".".join(quote_name(part) for part in self.name.split("."))
        return f"{name}({', '.join(a.to_vql() for a in self.args)})"


@dataclass(eq=False)
class ArrayLiteral(Node):
    """``[a, b]``: only allowed as an argument value."""

    items: list[Node]
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"[{', '.join(i.to_vql() for i in self.items)}]"


@dataclass(eq=False)
class Parenthesised(Node):
    """``(x)`` groups; a comma makes a list: ``(a, b)``, and ``(x,)`` of one element."""

    items: list[Node]
    position: Position = NOWHERE
    is_list: bool = False  # written with a comma (always so for more than one item)

    def to_vql(self) -> str:
        inner = ", ".join(i.to_vql() for i in self.items)
        if self.is_list and len(self.items) == 1:
            inner += ","
        return f"({inner})"


@dataclass(eq=False)
class BinaryOp(Node):
    """Arithmetic and comparison: + - * / = != < > <= >= =~ IN."""

    op: str
    left: Node
    right: Node
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{self.left.to_vql()} {self.op} {self.right.to_vql()}"


@dataclass(eq=False)
class Logical(Node):
    """AND / && / OR / || / |: ``op`` keeps the spelling because the spellings differ in value."""

    op: str
    left: Node
    right: Node
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{self.left.to_vql()} {self.op} {self.right.to_vql()}"


@dataclass(eq=False)
class Not(Node):
    operand: Node
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"NOT {self.operand.to_vql()}"


@dataclass(eq=False)
class Member(Node):
    target: Node
    name: str
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{self.target.to_vql()}.{quote_name(self.name)}"


@dataclass(eq=False)
class Index(Node):
    target: Node
    index: Node
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{self.target.to_vql()}[{self.index.to_vql()}]"


@dataclass(eq=False)
class Slice(Node):
    target: Node
    start: Node | None
    stop: Node | None
    position: Position = NOWHERE

    def to_vql(self) -> str:
        start = self.start.to_vql() if self.start else ""
        stop = self.stop.to_vql() if self.stop else ""
        return f"{self.target.to_vql()}[{start}:{stop}]"


@dataclass(eq=False)
class Subquery(Node):
    """``{ SELECT ... }`` as a column or an argument value."""

    select: Select
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return f"{{ {self.select.to_vql()} }}"


# Statements --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Star(Node):
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return "*"


@dataclass(eq=False)
class Column(Node):
    expr: Node
    alias: str | None
    position: Position = NOWHERE

    @property
    def name(self) -> str:
        """The output column's name: the alias, or the expression in normal form."""
        if self.alias is not None:
            return self.alias
        if isinstance(self.expr, Symbol):
            return self.expr.name
        return self.expr.to_vql()

    def to_vql(self) -> str:
        text = self.expr.to_vql()
        return f"{text} AS {quote_name(self.alias)}" if self.alias is not None else text


@dataclass(eq=False)
class Source(Node):
    """What FROM reads: a plugin call, or a variable when there are no parentheses."""

    name: str
    args: list[Argument] | None
    position: Position = NOWHERE

    def to_vql(self) -> str:
        name = ".".join(quote_name(part) for part in self.name.split("."))
        if self.args is None:
            return name
        return f"{name}({', '.join(a.to_vql() for a in self.args)})"


@dataclass(eq=False)
class OrderBy(Node):
    name: str
    descending: bool
    position: Position = NOWHERE

    def to_vql(self) -> str:
        return quote_name(self.name) + (" DESC" if self.descending else "")


@dataclass(eq=False)
class Select(Node):
    columns: list[Node]  # Column or Star
    source: Source
    where: Node | None = None
    group_by: list[Node] = field(default_factory=list)
    order_by: OrderBy | None = None
    limit: int | None = None
    position: Position = NOWHERE

    def to_vql(self) -> str:
        parts = [
            "SELECT",
            ", ".join(c.to_vql() for c in self.columns),
            "FROM",
            self.source.to_vql(),
        ]
        if self.where is not None:
            parts += ["WHERE", self.where.to_vql()]
        if self.group_by:
            parts += ["GROUP BY", ", ".join(g.to_vql() for g in self.group_by)]
        if self.order_by is not None:
            parts += ["ORDER BY", self.order_by.to_vql()]
        if self.limit is not None:
            parts += ["LIMIT", str(self.limit)]
        return " ".join(parts)


@dataclass(eq=False)
class Parameter(Node):
    name: str
    default: Node | None
    position: Position = NOWHERE

    def to_vql(self) -> str:
        if self.default is None:
            return quote_name(self.name)
        return f"{quote_name(self.name)}={self.default.to_vql()}"


@dataclass(eq=False)
class Let(Node):
    """``LET name = ...`` (lazy), ``LET name <= ...`` (materialised once), with optional params."""

    name: str
    parameters: list[Parameter] | None
    materialised: bool
    value: Node  # a Select or an expression
    position: Position = NOWHERE

    def to_vql(self) -> str:
        params = ""
        if self.parameters is not None:
            params = f"({', '.join(p.to_vql() for p in self.parameters)})"
        op = "<=" if self.materialised else "="
        return f"LET {quote_name(self.name)}{params} {op} {self.value.to_vql()}"


def walk(node: Node) -> Any:
    """Yield ``node`` and every node below it, depth first."""
    yield node
    for value in vars(node).values():
        if isinstance(value, Node):
            yield from walk(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Node):
                    yield from walk(item)
