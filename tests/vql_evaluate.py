"""One VQL expression's value through the engine, for the function tests."""

from __future__ import annotations

from typing import Any

from velotui.vql import collect


async def evaluate_with(expression: str, **options: Any) -> tuple[Any, list[str]]:
    """The value of ``expression`` run with ``options`` (as ``collect`` takes them), and the
    errors the query logged; fails the test when the function is unknown."""
    logs: list[tuple[str, str]] = []
    rows = await collect(
        f"SELECT {expression} AS Value FROM scope()",
        on_log=lambda level, message: logs.append((level, message)),
        **options,
    )
    errors = [message for level, message in logs if level == "error"]
    assert not [message for message in errors if message.startswith("Unknown function")]
    return rows[0]["Value"], errors


async def evaluate(expression: str, **env: Any) -> tuple[Any, list[str]]:
    """The value of ``expression`` with ``env`` bound, and the errors the query logged."""
    return await evaluate_with(expression, env=env)
