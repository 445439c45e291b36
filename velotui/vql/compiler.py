"""Compile syntax trees into closures.

Every expression becomes a ``Code``: a Python function of the scope. An expression that needs to
await (a subquery, an async function, a stored query) is compiled as a coroutine function, and so
is everything around it; the rest stays plain functions, so filtering rows in memory never pays
for the event loop. Which LET names hold stored queries is known while compiling, because LETs
are compiled in the order they run.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velotui.vql import ast
from velotui.vql import values as V
from velotui.vql.executor import (
    DEFERRED,
    STAR,
    BoundParameter,
    Code,
    ColumnPlan,
    LazyExpression,
    LazyRow,
    LetFunction,
    SelectPlan,
    SourcePlan,
    StoredQuery,
    evaluate,
    execute,
    prepare,
    resolve_async,
    resolve_sync,
)
from velotui.vql.registry import Callee, Registry
from velotui.vql.scope import MISSING, Scope

# What a LET name is bound to, as far as the compiler can tell.
LAZY_SYNC, LAZY_ASYNC, QUERY, FUNCTION, QUERY_FUNCTION, VALUE = (
    "lazy",
    "lazy-async",
    "query",
    "function",
    "query-function",
    "value",
)


@dataclass
class LetPlan:
    """A compiled LET statement."""

    name: str
    materialised: bool
    parameters: list[BoundParameter] | None
    code: Code | None = None  # expression body
    select: SelectPlan | None = None  # query body
    masks_builtin: bool = False


@dataclass
class _Context:
    """What symbols mean where an expression is compiled."""

    aliases: dict[str, ColumnPlan] = field(default_factory=dict)


def _constant(value: Any) -> Code:
    return Code(lambda scope: value, constant=value, pure=True)


def _apply1(fn: Callable[[Any], Any], a: Code) -> Code:
    a_fn = a.fn
    if a.constant is not MISSING:
        value = fn(a.constant)
        return _constant(value)
    if not a.is_async:
        return Code(lambda scope: fn(a_fn(scope)), pure=a.pure)

    async def run(scope: Scope) -> Any:
        return fn(await a_fn(scope))

    return Code(run, True)


def _apply2(fn: Callable[[Any, Any], Any], a: Code, b: Code) -> Code:
    a_fn, b_fn = a.fn, b.fn
    if a.constant is not MISSING and b.constant is not MISSING:
        return _constant(fn(a.constant, b.constant))
    if not a.is_async and not b.is_async:
        if b.constant is not MISSING:
            right = b.constant
            return Code(lambda scope: fn(a_fn(scope), right), pure=a.pure)
        return Code(lambda scope: fn(a_fn(scope), b_fn(scope)), pure=a.pure and b.pure)

    async def run(scope: Scope) -> Any:
        left = a_fn(scope)
        if a.is_async:
            left = await left
        right = b_fn(scope)
        if b.is_async:
            right = await right
        return fn(left, right)

    return Code(run, True)


def _gather(codes: list[Code]) -> Code:
    """A list of the values of ``codes``."""
    fns = [c.fn for c in codes]
    if not any(c.is_async for c in codes):
        return Code(lambda scope: [fn(scope) for fn in fns], pure=all(c.pure for c in codes))

    async def run(scope: Scope) -> list[Any]:
        return [await evaluate(code, scope) for code in codes]

    return Code(run, True)


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": V.add,
    "-": V.subtract,
    "*": V.multiply,
    "/": V.divide,
    "=": V.equals,
    "!=": lambda a, b: not V.equals(a, b),
    "<": V.less_than,
    ">": V.greater_than,
    "<=": V.less_or_equal,
    ">=": V.greater_or_equal,
    "IN": lambda a, b: V.contains(b, a),
}


QUERY_ARGUMENTS = "vql_query_arguments"
"""The attribute of a function's implementation that names the arguments it takes as queries
(unevaluated stored queries), as ``memoize(query=...)`` does."""


def query_arguments(impl: Callable[..., Any]) -> frozenset[str]:
    return getattr(impl, QUERY_ARGUMENTS, frozenset())


class Compiler:
    """Compiles one program's statements against one registry."""

    def __init__(self, registry: Registry, known_names: dict[str, str] | None = None) -> None:
        self.registry = registry
        # LET names compiled so far and what they hold.
        self.lets: dict[str, str] = dict(known_names or {})

    # Statements ---------------------------------------------------------------------------------

    def statement(self, node: ast.Node) -> LetPlan | SelectPlan:
        if isinstance(node, ast.Let):
            return self.let(node)
        assert isinstance(node, ast.Select)
        return self.select(node)

    def let(self, node: ast.Let) -> LetPlan:
        parameters = None
        if node.parameters is not None:
            parameters = [
                BoundParameter(p.name, self.expression(p.default) if p.default else None)
                for p in node.parameters
            ]
        plan = LetPlan(node.name, node.materialised, parameters)
        plan.masks_builtin = self.registry.lookup_function(node.name) is not None
        if isinstance(node.value, ast.Select):
            plan.select = self.select(node.value)
            if node.materialised:
                kind = VALUE
            else:
                kind = QUERY_FUNCTION if parameters is not None else QUERY
        else:
            plan.code = self.expression(node.value)
            if node.materialised:
                kind = VALUE
            elif parameters is not None:
                kind = FUNCTION
            else:
                kind = LAZY_ASYNC if plan.code.is_async else LAZY_SYNC
        self.lets[node.name] = kind
        return plan

    def select(self, node: ast.Select) -> SelectPlan:
        columns: dict[str, ColumnPlan] = {}
        items: list[Any] = []
        has_star = False
        for column in node.columns:
            if isinstance(column, ast.Star):
                if not has_star:
                    items.append(STAR)
                has_star = True
                continue
            assert isinstance(column, ast.Column)
            name = column.name
            code = self.column_value(column.expr)
            if name in columns:
                columns[name].code = code  # the later definition wins, in the first place
            else:
                columns[name] = ColumnPlan(name, code)
                items.append(columns[name])
        aliases = {name: plan for name, plan in columns.items() if plan.code.symbol != name}
        context = _Context(aliases=aliases)
        plan = SelectPlan(
            source=self.source(node.source),
            items=items,
            where=self.expression(node.where, context) if node.where is not None else None,
            order_by=node.order_by.name if node.order_by else None,
            descending=bool(node.order_by and node.order_by.descending),
            limit=node.limit,
            aliases=aliases,
            columns=list(columns.values()),
            explicit_names=frozenset(columns),
            has_star=has_star,
            columns_sync=not any(c.code.is_async for c in columns.values()),
        )
        if node.group_by:
            keys = [self.expression(g, context) for g in node.group_by]
            plan.group_by = keys[0] if len(keys) == 1 else _gather(keys)
        plan.needs_lazy_row = bool(aliases) and (
            plan.where is not None or plan.group_by is not None
        )
        prepare(plan)
        return plan

    def source(self, node: ast.Source) -> SourcePlan:
        plugin = self.registry.lookup_plugin(node.name)
        if node.args is None:
            return SourcePlan(node.name, None, plugin)
        args = [self.plugin_argument(arg) for arg in node.args]
        error = plugin.check_arguments([a.name for a in node.args]) if plugin else None
        return SourcePlan(node.name, args, plugin, error)

    def plugin_argument(self, arg: ast.Argument) -> tuple[str, Code, str]:
        if isinstance(arg.value, ast.Subquery):
            query = StoredQuery(self.select(arg.value.select), name=arg.name)
            return (arg.name, _constant(query), "query")
        code = self.argument_value(arg.value)
        if isinstance(arg.value, ast.Symbol):
            return (arg.name, code, "raw")
        return (arg.name, code, "expr")

    def column_value(self, node: ast.Node) -> Code:
        if isinstance(node, ast.Subquery):
            return self.subquery_column(node)
        return self.expression(node)

    def subquery_column(self, node: ast.Subquery) -> Code:
        plan = self.select(node.select)

        async def run(scope: Scope) -> Any:
            values = []
            async for row in execute(plan, scope):
                if len(row) == 1:
                    values.append(next(iter(row.values())))
                else:
                    values.append(row)
            if not values:
                return None
            return values[0] if len(values) == 1 else values

        return Code(run, True)

    def query_argument(self, node: ast.Node, context: _Context) -> Code:
        """An argument a function takes as a query (see ``query_arguments``): a subquery or a
        stored query's name is passed unevaluated, for the function to run when it chooses."""
        if isinstance(node, ast.Subquery):
            return _constant(StoredQuery(self.select(node.select)))
        if isinstance(node, ast.Symbol) and self.lets.get(node.name) in (QUERY, QUERY_FUNCTION):
            return self._raw_symbol(node.name)
        return self.argument_value(node, context)

    def function_argument(self, node: ast.Node, context: _Context) -> Code:
        """A function's argument. A LET with parameters, named but not called, is passed as the
        callable itself, as vfilter does: `env=dict(Foo=Foo)` hands it on for query() to call."""
        if isinstance(node, ast.Symbol) and self.lets.get(node.name) in (QUERY_FUNCTION, FUNCTION):
            return self._raw_symbol(node.name)
        return self.argument_value(node, context)

    @staticmethod
    def _raw_symbol(name: str) -> Code:
        """``name``'s binding itself (a stored query, a LET function), not its value."""
        message = f"Symbol {name} not found"

        def lookup(scope: Scope) -> Any:
            value = scope.lookup(name)
            if value is MISSING:
                scope.context.unknown("symbol", name, message)
                return None
            return value

        return Code(lookup, symbol=name)

    def argument_value(self, node: ast.Node, context: _Context | None = None) -> Code:
        """A function argument: an expression, a subquery (as its rows) or an array."""
        if isinstance(node, ast.Subquery):
            plan = self.select(node.select)

            async def rows(scope: Scope) -> list[Any]:
                return [row async for row in execute(plan, scope)]

            return Code(rows, True)
        if isinstance(node, ast.ArrayLiteral):
            return _gather([self.argument_value(item, context) for item in node.items])
        return self.expression(node, context)

    # Expressions --------------------------------------------------------------------------------

    def expression(self, node: ast.Node, context: _Context | None = None) -> Code:
        method = getattr(self, "_" + node.__class__.__name__.lower())
        return method(node, context or _Context())

    def _literal(self, node: ast.Literal, context: _Context) -> Code:
        return _constant(node.value)

    def _symbol(self, node: ast.Symbol, context: _Context) -> Code:
        name = node.name
        alias = context.aliases.get(name)
        if alias is not None:
            return self._alias_reference(name, alias)
        if self.lets.get(name) in (QUERY, LAZY_ASYNC):
            return self._async_symbol(name)
        return self._sync_symbol(name, past_aliases=bool(context.aliases))

    @staticmethod
    def _sync_symbol(name: str, past_aliases: bool = False) -> Code:
        """``name`` looked up innermost first. ``past_aliases``: where WHERE or GROUP BY may run
        with the aliases' layer innermost, which never holds a name that is no alias."""
        message = f"Symbol {name} not found"

        def lookup(scope: Scope) -> Any:
            value = scope.vars.get(name, MISSING)
            if value is MISSING:
                value = scope.parent.lookup(name) if scope.parent is not None else MISSING
                if value is MISSING:
                    scope.context.unknown("symbol", name, message)
                    return None
            if value.__class__ in DEFERRED:
                return resolve_sync(value, scope)
            return value

        if not past_aliases:
            return Code(lookup, symbol=name, pure=True, row_key=name)

        def lookup_past_aliases(scope: Scope) -> Any:
            holder = scope.parent if scope.vars.__class__ is LazyRow else scope
            value = holder.vars.get(name, MISSING)
            if value is MISSING:
                value = holder.parent.lookup(name) if holder.parent is not None else MISSING
                if value is MISSING:
                    scope.context.unknown("symbol", name, message)
                    return None
            if value.__class__ in DEFERRED:
                return resolve_sync(value, scope)  # in the scope it was asked in, aliases and all
            return value

        return Code(lookup_past_aliases, symbol=name, pure=True)

    @staticmethod
    def _async_symbol(name: str) -> Code:
        message = f"Symbol {name} not found"

        async def lookup(scope: Scope) -> Any:
            value = scope.lookup(name)
            if value is MISSING:
                scope.context.unknown("symbol", name, message)
                return None
            return await resolve_async(value, scope)

        return Code(lookup, True, symbol=name)

    def _alias_reference(self, name: str, column: ColumnPlan) -> Code:
        fallback = self._sync_symbol(name).fn

        if not column.code.is_async:
            compute = column.code.fn  # final: WHERE is compiled after every column

            def read(scope: Scope) -> Any:
                row = scope.vars
                if row.__class__ is not LazyRow:
                    return fallback(scope)
                computed = row.values
                value = computed.get(name, MISSING)
                if value is MISSING:
                    value = computed[name] = compute(row.scope)  # once a row, in its own scope
                return value

            return Code(read, symbol=name, pure=column.code.pure)

        async def read_async(scope: Scope) -> Any:
            row = scope.vars
            if row.__class__ is LazyRow:
                return await row.value_async(name)
            return fallback(scope)

        return Code(read_async, True, symbol=name)

    def _negatedsymbol(self, node: ast.NegatedSymbol, context: _Context) -> Code:
        return _apply1(V.negate, self._symbol(ast.Symbol(node.name, node.position), context))

    def _parenthesised(self, node: ast.Parenthesised, context: _Context) -> Code:
        if len(node.items) == 1 and not node.is_list:
            return self.expression(node.items[0], context)
        return _gather([self.expression(item, context) for item in node.items])

    def _arrayliteral(self, node: ast.ArrayLiteral, context: _Context) -> Code:
        return _gather([self.argument_value(item, context) for item in node.items])

    def _subquery(self, node: ast.Subquery, context: _Context) -> Code:
        return self.subquery_column(node)

    def _binaryop(self, node: ast.BinaryOp, context: _Context) -> Code:
        left = self.expression(node.left, context)
        right = self.expression(node.right, context)
        if node.op == "=~":
            code = self._regex(left, right)
        elif node.op in _ORDERINGS and _is_plain_number(right.constant) and not left.is_async:
            code = _compare_with_number(node.op, left, right.constant)
        elif node.op in _ARITHMETIC and not left.is_async and not right.is_async:
            code = _arithmetic(node.op, left, right)
        else:
            code = _apply2(_OPERATORS[node.op], left, right)
        if node.op not in _ARITHMETIC:
            code.boolean = True
        return code

    def _regex(self, value: Code, pattern: Code) -> Code:
        if pattern.constant is not MISSING:
            literal = pattern.constant
            if V.matches_anything(literal):
                return _apply1(lambda _value: True, value)
            if not isinstance(literal, str):
                return _apply1(lambda _value: False, value)
            compiled = V.cached_regex(literal)
            if compiled is None:
                message = f"Invalid regular expression {literal!r}"

                def invalid(scope: Scope) -> bool:
                    scope.error(message)
                    return False

                return Code(invalid, pure=True)
            search = compiled.search
            if not value.is_async:
                value_fn = value.fn
                key = value.row_key

                def match(scope: Scope) -> bool:
                    if key is None:
                        subject = value_fn(scope)
                    else:
                        subject = scope.vars.get(key, MISSING)
                        if subject is MISSING or subject.__class__ in DEFERRED:
                            subject = value_fn(scope)
                    if subject.__class__ is str:
                        return search(subject) is not None
                    return V.regex_search(compiled, subject)

                return Code(match, pure=value.pure)
            return _apply1(lambda subject: V.regex_search(compiled, subject), value)

        def dynamic(subject: Any, pattern_value: Any) -> Any:
            if V.matches_anything(pattern_value):
                return True
            if not isinstance(pattern_value, str):
                return False
            compiled_dynamic = V.cached_regex(pattern_value)
            if compiled_dynamic is None:
                return _INVALID_REGEX
            return V.regex_search(compiled_dynamic, subject)

        code = _apply2(dynamic, value, pattern)
        return _log_invalid_regex(code)

    def _logical(self, node: ast.Logical, context: _Context) -> Code:
        left = self.expression(node.left, context)
        right = self.expression(node.right, context)
        return _logical(node.op, left, right)

    def _not(self, node: ast.Not, context: _Context) -> Code:
        code = _apply1(lambda value: not V.truthy(value), self.expression(node.operand, context))
        code.boolean = True
        return code

    def _member(self, node: ast.Member, context: _Context) -> Code:
        dotted = _dotted_name(node)
        if dotted is not None and dotted in self.lets:
            # `Artifact.Linux.Sys.Users` is the LET of that dotted name when there is one.
            return self._symbol(ast.Symbol(dotted, node.position), context)
        name = node.name
        return _apply1(
            lambda target: V.get_member(target, name), self.expression(node.target, context)
        )

    def _index(self, node: ast.Index, context: _Context) -> Code:
        return _apply2(
            V.get_index, self.expression(node.target, context), self.expression(node.index, context)
        )

    def _slice(self, node: ast.Slice, context: _Context) -> Code:
        parts = [self.expression(node.target, context)]
        parts.append(self.expression(node.start, context) if node.start else _constant(None))
        parts.append(self.expression(node.stop, context) if node.stop else _constant(None))
        gathered = _gather(parts)
        return _apply1(lambda v: V.get_slice(v[0], v[1], v[2]), gathered)

    # Calls --------------------------------------------------------------------------------------

    def _call(self, node: ast.Call, context: _Context) -> Code:
        name = node.name
        function = self.registry.lookup_function(name)
        if function is not None and name == "if" and not function.is_async:
            return self._conditional(node, context, function)
        queries = query_arguments(function.impl) if function is not None else frozenset()
        args = [
            (arg.name, self.query_argument(arg.value, context))
            if arg.name in queries
            else (arg.name, self.function_argument(arg.value, context))
            for arg in node.args
        ]
        if function is not None:
            error = function.check_arguments([a.name for a in node.args])
            if error is not None:
                return _logs(error)
            return _function_call(function, args)
        return _let_call(name, args, self.lets.get(name))

    def _conditional(self, node: ast.Call, context: _Context, function: Callee) -> Code:
        """``if()`` evaluates only the branch it takes."""
        error = function.check_arguments([a.name for a in node.args])
        if error is not None:
            return _logs(error)
        parts = {arg.name: self.argument_value(arg.value, context) for arg in node.args}
        condition = parts["condition"]
        then = parts.get("then", _constant(None))
        otherwise = parts.get("else", _constant(None))
        if not (condition.is_async or then.is_async or otherwise.is_async):
            c_fn, t_fn, o_fn = condition.fn, then.fn, otherwise.fn
            return Code(
                lambda scope: t_fn(scope) if V.truthy(c_fn(scope)) else o_fn(scope),
                pure=condition.pure and then.pure and otherwise.pure,
            )

        async def run(scope: Scope) -> Any:
            if V.truthy(await evaluate(condition, scope)):
                return await evaluate(then, scope)
            return await evaluate(otherwise, scope)

        return Code(run, True)


def _dotted_name(node: ast.Node) -> str | None:
    """``a.b.c`` as one name, when the node is members of a bare symbol."""
    parts: list[str] = []
    while isinstance(node, ast.Member):
        parts.append(node.name)
        node = node.target
    if not isinstance(node, ast.Symbol):
        return None
    parts.append(node.name)
    return ".".join(reversed(parts))


_INVALID_REGEX = object()
_ORDERINGS = frozenset({"<", ">", "<=", ">="})
_ARITHMETIC = frozenset({"+", "-", "*", "/"})


def _is_plain_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


def _compare_with_number(op: str, left: Code, number: float) -> Code:
    """``x > 1000`` and friends: Python's comparison straight away when x is a number, as it
    usually is, and x read from the row inline when it is a bare symbol."""
    fast = _NUMBER_COMPARISONS[op]
    generic = _OPERATORS[op]
    left_fn = left.fn
    key = left.row_key
    if key is None:

        def compare(scope: Scope) -> bool:
            value = left_fn(scope)
            cls = value.__class__
            return fast(value, number) if cls is int or cls is float else generic(value, number)
    else:

        def compare(scope: Scope) -> bool:
            value = scope.vars.get(key, MISSING)
            if value is MISSING or value.__class__ in DEFERRED:
                value = left_fn(scope)  # not in the row, or a lazy LET: the full lookup
            cls = value.__class__
            return fast(value, number) if cls is int or cls is float else generic(value, number)

    return Code(compare, boolean=True, pure=left.pure)


_NUMBER_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
_NUMBER_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _arithmetic(op: str, left: Code, right: Code) -> Code:
    """``x * 2`` and friends: Python's operator straight away when both sides are numbers (not
    booleans), as they usually are, where it gives what VQL's does; VQL's operator otherwise."""
    generic = _OPERATORS[op]
    if left.constant is not MISSING and right.constant is not MISSING:
        return _apply2(generic, left, right)
    fast = _NUMBER_OPERATORS[op]
    left_fn, right_fn = left.fn, right.fn
    pure = left.pure and right.pure
    if _is_plain_number(right.constant) and not (op == "/" and right.constant == 0):
        number = right.constant
        key = left.row_key

        def with_number(scope: Scope) -> Any:
            if key is None:
                value = left_fn(scope)
            else:
                value = scope.vars.get(key, MISSING)
                if value is MISSING or value.__class__ in DEFERRED:
                    value = left_fn(scope)
            cls = value.__class__
            return fast(value, number) if cls is int or cls is float else generic(value, number)

        return Code(with_number, pure=pure)
    if op == "/":
        return _apply2(generic, left, right)  # a divisor of 0 gives NULL

    def compute(scope: Scope) -> Any:
        a = left_fn(scope)
        b = right_fn(scope)
        a_cls = a.__class__
        b_cls = b.__class__
        if (a_cls is int or a_cls is float) and (b_cls is int or b_cls is float):
            return fast(a, b)
        return generic(a, b)

    return Code(compute, pure=pure)


def _log_invalid_regex(code: Code) -> Code:
    inner = code.fn

    def finish(value: Any, scope: Scope) -> Any:
        if value is _INVALID_REGEX:
            scope.error("Invalid regular expression")
            return False
        return value

    if code.is_async:

        async def run_async(scope: Scope) -> Any:
            return finish(await inner(scope), scope)

        return Code(run_async, True)
    return Code(lambda scope: finish(inner(scope), scope), pure=code.pure)


def _logical(op: str, left: Code, right: Code) -> Code:
    truthy = V.truthy
    if op == "AND" and left.boolean and right.boolean and not left.is_async and not right.is_async:
        left_fn, right_fn = left.fn, right.fn
        pure = left.pure and right.pure
        return Code(lambda scope: left_fn(scope) and right_fn(scope), boolean=True, pure=pure)
    if op == "AND":

        def combine_sync(scope: Scope) -> Any:
            return truthy(left.fn(scope)) and truthy(right.fn(scope))
    elif op == "&&":

        def combine_sync(scope: Scope) -> Any:
            if not truthy(left.fn(scope)):
                return False
            value = right.fn(scope)
            return value if truthy(value) else False
    elif op == "||":

        def combine_sync(scope: Scope) -> Any:
            value = left.fn(scope)
            return value if truthy(value) else right.fn(scope)
    else:  # OR, |, |||: a later truthy term is TRUE, a truthy first term itself

        def combine_sync(scope: Scope) -> Any:
            value = left.fn(scope)
            if truthy(value):
                return value
            other = right.fn(scope)
            return True if truthy(other) else other

    if not left.is_async and not right.is_async:
        return Code(combine_sync, boolean=op == "AND", pure=left.pure and right.pure)

    async def combine_async(scope: Scope) -> Any:
        first = await evaluate(left, scope)
        if op == "AND":
            return truthy(first) and truthy(await evaluate(right, scope))
        if op == "&&":
            if not truthy(first):
                return False
            value = await evaluate(right, scope)
            return value if truthy(value) else False
        if op == "||":
            return first if truthy(first) else await evaluate(right, scope)
        if truthy(first):
            return first
        other = await evaluate(right, scope)
        return True if truthy(other) else other

    return Code(combine_async, True, boolean=op == "AND")


def _logs(message: str) -> Code:
    def log(scope: Scope) -> None:
        scope.error(message)

    return Code(log)


def _function_call(function: Callee, args: list[tuple[str, Code]]) -> Code:
    impl = function.impl
    name = function.name
    python_args = [
        (function.parameters[n].python_name if n in function.parameters else n, c) for n, c in args
    ]
    arg_fns = [(n, c.fn) for n, c in python_args]
    any_async_arg = any(c.is_async for _, c in python_args)
    aggregate = function.is_aggregate
    site = object()  # this call site's key for aggregate state

    def failed(scope: Scope, error: Exception) -> None:
        scope.error(f"{name}(): {error.__class__.__name__}: {error}")

    if not any_async_arg and not function.is_async:
        if aggregate:

            def call_aggregate(scope: Scope) -> Any:
                state = scope.agg.get(site)
                if state is None:
                    state = scope.agg[site] = {}
                try:
                    return impl(scope, state, **{n: fn(scope) for n, fn in arg_fns})
                except Exception as error:
                    failed(scope, error)
                    return None

            return Code(call_aggregate)

        def call(scope: Scope) -> Any:
            try:
                return impl(scope, **{n: fn(scope) for n, fn in arg_fns})
            except Exception as error:
                failed(scope, error)
                return None

        return Code(call)

    async def call_async(scope: Scope) -> Any:
        kwargs = {n: await evaluate(c, scope) for n, c in python_args}
        try:
            if aggregate:
                state = scope.agg.get(site)
                if state is None:
                    state = scope.agg[site] = {}
                result = impl(scope, state, **kwargs)
            else:
                result = impl(scope, **kwargs)
            if function.is_async:
                result = await result
            return result
        except Exception as error:
            failed(scope, error)
            return None

    return Code(call_async, True)


def _let_call(name: str, args: list[tuple[str, Code]], kind: str | None) -> Code:
    """A call to something a LET defined: found in the scope when it runs."""

    async def call(scope: Scope) -> Any:
        target = scope.lookup(name)
        values = {n: await evaluate(c, scope) for n, c in args}
        if isinstance(target, LetFunction):
            return await target.call(scope, values)
        if isinstance(target, StoredQuery):
            return await target.materialize(scope, values)
        if isinstance(target, LazyExpression) and not values:
            return await resolve_async(target, scope)
        scope.context.unknown("function", name, f"Unknown function {name}()")
        return None

    return Code(call, True)
