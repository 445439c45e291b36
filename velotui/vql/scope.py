"""Scopes: where a query finds its variables, logs its errors and keeps aggregate state.

A scope is a chain of layers (the current row, a plugin's extra columns, the LET bindings, the
caller's environment, the registry's globals); lookups go innermost first. Every scope of one
query run shares a ``QueryContext``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from velotui.vql.registry import Registry


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
"""Returned by lookups that found nothing (distinct from NULL, which is ``None``)."""

EMPTY: Mapping[str, Any] = {}

LogSink = Callable[[str, str], None]
"""Receives (level, message); level is one of "error", "warning", "info", "debug"."""


@dataclass(frozen=True)
class UnknownName:
    """A name a query used that nothing defines: it evaluated to NULL (or gave no rows) and
    ``message`` was logged as an error."""

    kind: str  # "symbol", "function" (a call), "plugin" (FROM x()) or "source" (FROM x)
    name: str
    message: str


UnknownSink = Callable[[UnknownName], None]
"""Receives every unknown name a query meets, before its error is logged."""


class DeadlineExceeded(BaseException):
    """A query ran past its context's deadline. A BaseException, like cancellation, so that the
    engine's "log the failure and go on" handlers (which catch Exception) let it through."""


class RowSource:
    """A value that yields rows when run in a scope: a stored query or a subquery."""

    def rows(self, scope: Scope) -> AsyncIterator[Any]:  # pragma: no cover - interface
        raise NotImplementedError


class QueryContext:
    """What every scope of one query run shares."""

    __slots__ = ("_seen", "clock", "deadline", "error_count", "memo", "on_log", "on_unknown",
                 "registry", "services")

    def __init__(
        self,
        registry: Registry,
        on_log: LogSink | None = None,
        services: dict[str, Any] | None = None,
        deadline: float | None = None,
        on_unknown: UnknownSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.on_log = on_log
        self.services: dict[str, Any] = services if services is not None else {}
        # A value of clock(); past it, the run raises DeadlineExceeded at the next check.
        self.deadline = deadline
        self.clock = clock
        self.on_unknown = on_unknown
        self.error_count = 0
        self.memo: dict[Any, Any] = {}  # memoize()'s results, for the run
        self._seen: set[tuple[str, str]] = set()

    def check_deadline(self) -> None:
        """Raise DeadlineExceeded when the run has a deadline and it has passed. Called between
        rows and in loops that produce none, so a run stops soon after its deadline."""
        if self.deadline is not None and self.clock() > self.deadline:
            raise DeadlineExceeded("the query ran past its deadline")

    def unknown(self, kind: str, name: str, message: str) -> None:
        """Report a name nothing defines: to ``on_unknown``, then as an error."""
        if self.on_unknown is not None:
            self.on_unknown(UnknownName(kind, name, message))
        self.log("error", message)

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.error_count += 1
        # The same complaint for every one of 100,000 rows helps nobody: say it once per run.
        key = (level, message)
        if key in self._seen:
            return
        self._seen.add(key)
        if self.on_log is not None:
            self.on_log(level, message)


class Scope:
    """One layer of variables over a parent scope."""

    __slots__ = ("agg", "context", "parent", "vars")

    def __init__(
        self,
        vars: Mapping[str, Any],
        parent: Scope | None = None,
        context: QueryContext | None = None,
        agg: dict[Any, Any] | None = None,
    ) -> None:
        self.vars = vars
        self.parent = parent
        if parent is not None:
            self.context = context or parent.context
            self.agg = agg if agg is not None else parent.agg
        else:
            if context is None:
                raise ValueError("a root scope needs a QueryContext")
            self.context = context
            self.agg = agg if agg is not None else {}

    def child(self, vars: Mapping[str, Any] | Any) -> Scope:
        """A scope whose innermost layer is ``vars`` (a row); non-mapping rows add no names."""
        return Scope(vars if isinstance(vars, Mapping) else EMPTY, self)

    def lookup(self, name: str) -> Any:
        """The raw binding of ``name`` (stored queries and lazy LETs unevaluated), or MISSING."""
        scope: Scope | None = self
        while scope is not None:
            value = scope.vars.get(name, MISSING)
            if value is not MISSING:
                return value
            scope = scope.parent
        return MISSING

    # Logging ------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        self.context.log("info", message)

    def warn(self, message: str) -> None:
        self.context.log("warning", message)

    def error(self, message: str) -> None:
        self.context.log("error", message)

    # Helpers for implementations ----------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        return self.context.registry

    @property
    def services(self) -> dict[str, Any]:
        """Host-provided services (the agent's uploader, the flow's limits, ...)."""
        return self.context.services

    async def iterate(self, value: Any) -> AsyncIterator[Any]:
        """Yield the rows of ``value``: a stored query or subquery runs in this scope, a list
        yields its items, NULL yields nothing and anything else is one row."""
        if isinstance(value, RowSource):
            async for row in value.rows(self):
                yield row
        elif isinstance(value, list | tuple):
            check_deadline = self.context.check_deadline
            for item in value:
                check_deadline()
                yield item
        elif value is None or value is MISSING:
            return
        else:
            yield value

    async def materialize(self, value: Any) -> Any:
        """A stored query or subquery as a list of rows; any other value unchanged."""
        if isinstance(value, RowSource):
            return [row async for row in value.rows(self)]
        return value
