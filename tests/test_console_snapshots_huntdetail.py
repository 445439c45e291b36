"""A hunt's triage screens as SVG snapshots, at 80x24 and 120x36: the results with ClientId and
Fqdn pinned, a tally, a row in full, the Query tab. Deterministic as in test_console_snapshots
(fixed datastore, clock, theme and size; no live updates; no blinking cursor)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.console_driver import console, ready, steady, type_text, until
from tests.console_seed import seed
from velotui.widgets.vql_editor import VQLEditor

Steps = Callable[[Pilot[Any]], Awaitable[None]]
SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed(tmp_path / "datastore")


def in_hunt(then: Steps) -> Steps:
    """The running hunt (the second row) opened, its results loaded, then ``then``."""
    async def run(pilot: Pilot[Any]) -> None:
        await ready(pilot)
        await pilot.press("down", "enter")
        await until(pilot, lambda: pilot.app.screen.query("#results-table"), 10, "the hunt")
        await until(pilot, lambda: pilot.app.screen.query_one("#results-table").row_count > 0,
                    30, "its results")
        await then(pilot)
        await pilot.pause(0.3)
        await steady(pilot)

    return run


def _status(pilot: Pilot[Any], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector).render())


async def _results(pilot: Pilot[Any]) -> None:
    await pilot.press("3", "down", "right", "right")  # the cursor on the second row's Name


async def _tally(pilot: Pilot[Any]) -> None:
    from velotui.screens.tally import TallyScreen

    await pilot.press("3", "right", "right", "right", "right")  # Host
    await pilot.press("t")
    await until(pilot, lambda: isinstance(pilot.app.screen, TallyScreen), 30, "the tally")


async def _row_detail(pilot: Pilot[Any]) -> None:
    from velotui.screens.row_detail import RowDetailScreen

    await pilot.press("3", "down", "right", "right", "enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, RowDetailScreen), 10, "the row")


async def _query(pilot: Pilot[Any]) -> None:
    await pilot.press("5", "ctrl+r")
    await until(pilot, lambda: _status(pilot, "#query-status") == "3 rows", 30, "the answer")


@SIZES
def test_hunt_results_pinned(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(_results),
                        terminal_size=size)


@SIZES
def test_hunt_results_tally(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(_tally),
                        terminal_size=size)


@SIZES
def test_hunt_row_detail(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(_row_detail),
                        terminal_size=size)


@SIZES
def test_hunt_query(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(_query),
                        terminal_size=size)


@SIZES
def test_hunt_clients(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def clients(pilot: Pilot[Any]) -> None:
        await pilot.press("2")
        await until(pilot, lambda: pilot.app.screen.query_one("#clients-table").row_count == 5,
                    30, "the hunt's clients")

    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(clients),
                        terminal_size=size)


def test_hunt_query_refused(snap_compare: Any, seeded: Path) -> None:
    async def refused(pilot: Pilot[Any]) -> None:
        await pilot.press("5", "i", "end")
        await type_text(pilot, " WHERE")
        editor = pilot.app.screen.query_one("#query-editor", VQLEditor)
        await until(pilot, lambda: not editor.check_pending, 10, "the editor's own check")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "line 1" in _status(pilot, "#query-status"), 30,
                    "the server's refusal")

    assert snap_compare(console(seeded, snapshot=True), run_before=in_hunt(refused))
