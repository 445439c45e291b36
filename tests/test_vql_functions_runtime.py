"""log(), version(), getpid() and rand(), called through the engine as artifacts call them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from velotui.vql import Scope, collect, default_registry


async def run_logged(query: str, **options: Any) -> tuple[list[dict[str, Any]], list[tuple]]:
    logs: list[tuple[str, str]] = []
    rows = await collect(query, on_log=lambda level, text: logs.append((level, text)), **options)
    assert not [text for _, text in logs if text.startswith("Unknown function")]
    return rows, logs


# log ---------------------------------------------------------------------------------------------


async def test_log_formats_its_args_logs_at_its_level_and_gives_true() -> None:
    rows, logs = await run_logged(
        """SELECT log(message="tool %v not available!", level="ERROR", args="curl") AS A,
                  log(message="Attaching %v", args=["/tmp/x"], dedup=-1, level='INFO') AS B,
                  log(message="plain 100%") AS C,
                  log(message="careful", level="WARN") AS D
           FROM scope()"""
    )
    assert rows == [{"A": True, "B": True, "C": True, "D": True}]
    assert ("error", "tool curl not available!") in logs
    assert ("info", "Attaching /tmp/x") in logs
    assert ("info", "plain 100%") in logs  # no args: the message is not a format
    assert ("warning", "careful") in logs


async def test_log_in_where_keeps_every_row_and_dedups_its_format_string() -> None:
    rows, logs = await run_logged(
        "SELECT _value AS N FROM range(start=0, end=5) "
        "WHERE log(message='Processing %v', args=_value)"
    )
    assert [row["N"] for row in rows] == [0, 1, 2, 3, 4]
    assert [text for _, text in logs] == ["Processing 0"]


async def test_log_with_dedup_minus_one_emits_every_message() -> None:
    _, logs = await run_logged(
        "SELECT * FROM range(start=0, end=3) "
        "WHERE log(message='Parsing file %v', args=_value, dedup=-1)"
    )
    assert [text for _, text in logs] == ["Parsing file 0", "Parsing file 1", "Parsing file 2"]


async def test_log_with_an_unknown_level_logs_at_default_and_dedup_zero_is_the_default() -> None:
    _, logs = await run_logged(
        "SELECT * FROM range(start=0, end=3) "
        "WHERE log(message='Row %v', args=_value, level='LOUD', dedup=0)"
    )
    assert logs == [("info", "Row 0")]


# version -----------------------------------------------------------------------------------------


async def test_version_of_known_and_unknown_functions_and_plugins() -> None:
    registry = default_registry()

    @registry.plugin
    async def http_client(scope: Scope, *, url: Any = None) -> AsyncIterator[dict[str, Any]]:
        yield {}

    http_client.vql_version = 3  # type: ignore[attr-defined]
    rows, _ = await run_logged(
        """SELECT version(function='format') AS F, version(plugin='range') AS R,
                  version(function='shell_session') AS Missing,
                  version(plugin='http_client') > 2 AS NewHttp
           FROM scope()""",
        registry=registry,
    )
    assert rows == [{"F": 1, "R": 1, "Missing": None, "NewHttp": True}]


async def test_version_chooses_a_branch_in_a_precondition_style_query() -> None:
    rows, _ = await run_logged(
        "SELECT 'old' AS Way FROM scope() WHERE NOT version(function='shell_session')"
    )
    assert rows == [{"Way": "old"}]
    rows, logs = await run_logged("SELECT version() AS V FROM scope()")
    assert rows == [{"V": None}] and any("version()" in text for _, text in logs)


# getpid and rand ---------------------------------------------------------------------------------


async def test_getpid_is_this_process() -> None:
    rows, _ = await run_logged("SELECT getpid() AS Pid FROM scope()")
    assert rows == [{"Pid": os.getpid()}]


async def test_rand_stays_below_its_range() -> None:
    rows, _ = await run_logged("SELECT rand(range=7) AS R FROM range(start=0, end=200)")
    values = {row["R"] for row in rows}
    assert values <= set(range(7)) and len(values) > 1
    rows, _ = await run_logged("SELECT rand(range=0) AS Zero FROM scope()")
    assert rows == [{"Zero": 0}]


# sleep ----------------------------------------------------------------------------------------


async def test_sleep_takes_milliseconds_and_refuses_negative_times() -> None:
    rows, _ = await run_logged("SELECT sleep(ms=1) AS A, sleep(time=0, ms=0) AS B FROM scope()")
    assert rows == [{"A": True, "B": True}]
    rows, logs = await run_logged("SELECT sleep(ms=-5) AS A FROM scope()")
    assert rows == [{"A": False}] and any("sleep(): ms" in text for _, text in logs)
