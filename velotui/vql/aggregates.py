"""VQL's aggregate functions. Each call site keeps its own state (per GROUP BY bin), and every
call returns the aggregate over the rows seen so far, so the last row of a bin holds the total."""

from __future__ import annotations

from typing import Any

from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import greater_than, less_than


def register(registry: Registry) -> None:
    """Add the built-in aggregates to ``registry``."""
    for fn in (count, sum_, min_, max_, enumerate_):
        registry.function(fn, aggregate=True)


def count(scope: Scope, state: dict[str, Any], *, items: Any = None) -> int:
    """How many rows this call has seen."""
    state["count"] = state.get("count", 0) + 1
    return state["count"]


def sum_(scope: Scope, state: dict[str, Any], *, item: Any) -> int:
    """The running total of ``item`` as 64-bit integers (fractions are truncated, as in VQL)."""
    total = state.get("sum", 0)
    if isinstance(item, int | float):
        total += int(item)
    state["sum"] = total
    return total


def min_(scope: Scope, state: dict[str, Any], *, item: Any) -> Any:
    """The smallest ``item`` seen so far."""
    if item is not None and ("min" not in state or less_than(item, state["min"])):
        state["min"] = item
    return state.get("min")


def max_(scope: Scope, state: dict[str, Any], *, item: Any) -> Any:
    """The largest ``item`` seen so far."""
    if item is not None and ("max" not in state or greater_than(item, state["max"])):
        state["max"] = item
    return state.get("max")


def enumerate_(scope: Scope, state: dict[str, Any], *, items: Any) -> list[Any]:
    """Every ``items`` value seen so far, in order."""
    collected = state.setdefault("items", [])
    collected.append(items)
    return list(collected)
