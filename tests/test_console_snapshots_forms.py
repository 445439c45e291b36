"""Snapshots of the forms' refusals and questions, at 80x24 and 120x36 (see
tests/test_console_snapshots.py for how they are kept deterministic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.console_driver import console, ready, steady, type_text, until
from tests.console_seed import seed

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed(tmp_path / "datastore")


def _text(pilot: Pilot[Any], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector).render())


async def _timeout_refused(pilot: Pilot[Any]) -> None:
    """A hunt with a timeout that is no number: refused under the timeout, in view."""
    await ready(pilot)
    await pilot.press("n")
    await until(pilot, lambda: pilot.app.screen.query("#timeout"), 30, "the form")
    await type_text(pilot, "triage")
    await pilot.press("tab")
    await type_text(pilot, "SELECT * FROM info()")
    await until(pilot, lambda: _text(pilot, "#estimate").startswith("matches"), 30, "estimate")
    pilot.app.screen.query_one("#timeout", Input).value = "soon"
    await pilot.press("ctrl+s")
    await until(pilot, lambda: _text(pilot, "#timeout-refusal").startswith("Not created"), 10)
    form = pilot.app.screen.query_one("#form")
    refusal = pilot.app.screen.query_one("#timeout-refusal")
    await until(pilot, lambda: form.scrollable_content_region.contains_region(refusal.region),
                10, "the form scrolled to the refusal")
    await steady(pilot)


async def _quit_asked(pilot: Pilot[Any]) -> None:
    """q with a hunt running on the embedded server."""
    await ready(pilot)
    await pilot.press("q")
    await until(pilot, lambda: pilot.app.screen.query(".detail"), 10, "the question")
    await pilot.pause(0.2)
    await steady(pilot)


@SIZES
def test_new_hunt_refused_by_its_field(snap_compare: Any, seeded: Path,
                                       size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=_timeout_refused,
                        terminal_size=size)


@SIZES
def test_quit_confirmation(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=_quit_asked,
                        terminal_size=size)
