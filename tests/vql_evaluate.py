"""Running VQL in tests: a log collector, a query's rows, one expression's value."""

from __future__ import annotations

from typing import Any

from velotui.vql import collect


class Logs(list):
    """A log sink that keeps (level, message) pairs."""

    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))

    @property
    def errors(self) -> list[str]:
        return [message for level, message in self if level == "error"]


async def rows_of(query: str, **options: Any) -> list[dict[str, Any]]:
    return await collect(query, **options)


async def rows_and_errors(query: str, **options: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of ``query`` run with ``options`` (as ``collect`` takes them), and the errors it
    logged; fails the test when a function is unknown."""
    logs = Logs()
    rows = await collect(query, on_log=logs, **options)
    assert not [message for message in logs.errors if message.startswith("Unknown function")]
    return rows, logs.errors


async def evaluate_with(expression: str, **options: Any) -> tuple[Any, list[str]]:
    """The value of ``expression`` run with ``options``, and the errors the query logged."""
    rows, errors = await rows_and_errors(f"SELECT {expression} AS Value FROM scope()",
                                         **options)
    return rows[0]["Value"], errors


async def evaluate(expression: str, **env: Any) -> tuple[Any, list[str]]:
    """The value of ``expression`` with ``env`` bound, and the errors the query logged."""
    return await evaluate_with(expression, env=env)
