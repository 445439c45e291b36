"""Every screen and dialog of the console, as SVG snapshots in snapshots/ (80x24 unless said).

Deterministic: a datastore with fixed contents, a fixed clock, a fixed theme and size, no live
updates, no blinking cursor. Update them with `pytest --snapshot-update` after checking the
report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import TextArea

from tests.console_artifacts import with_artifact_hunt, with_test_artifacts
from tests.console_driver import console, ready, steady, type_text, until
from tests.console_seed import seed
from velotui.widgets.vql_editor import VQLEditor

Steps = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed(tmp_path / "datastore")


def keys(*presses: str, then: Steps | None = None, pause: float = 0.2) -> Steps:
    async def run(pilot: Pilot[Any]) -> None:
        await ready(pilot)
        for key in presses:
            await pilot.press(key)
            await pilot.pause(pause)
        if then is not None:
            await then(pilot)
        await steady(pilot)

    return run


def test_home(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys())


def test_home_running_hunt_selected(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys("down"))


def test_home_empty(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(console(tmp_path / "empty", snapshot=True), run_before=keys())


def test_home_large_terminal(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys("down"),
                        terminal_size=(120, 36))


def _text(pilot: Pilot[Any], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector).render())


async def _estimate_shown(pilot: Pilot[Any]) -> None:
    # The estimate follows a pause in typing.
    await until(pilot, lambda: _text(pilot, "#estimate").startswith("matches"), 30, "estimate")


def test_new_hunt(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("n", then=_estimate_shown))


async def _bad_server_condition(pilot: Pilot[Any]) -> None:
    editor = pilot.app.screen.query_one("#server_condition", VQLEditor)
    editor.text = "SELECT * FROM rows WHERE Fqdn =~ 'x' AND 2-1"
    editor.focus()
    await until(pilot, lambda: "no estimate" in _text(pilot, "#estimate")
                or "fix the conditions" in _text(pilot, "#estimate"), 30, "the estimate")


def test_new_hunt_invalid_condition(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("n", then=_bad_server_condition))


async def _refused(pilot: Pilot[Any]) -> None:
    await type_text(pilot, "triage")
    await until(pilot, lambda: _text(pilot, "#estimate").startswith("matches"), 30, "estimate")
    await pilot.press("ctrl+s")
    await until(pilot, lambda: _text(pilot, "#query-refusal").startswith("Not created"), 10)
    form = pilot.app.screen.query_one("#form")
    refusal = pilot.app.screen.query_one("#query-refusal")
    await until(pilot, lambda: form.scrollable_content_region.contains_region(refusal.region),
                10, "the reason under the empty query, in view")


def test_new_hunt_refused_in_place(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys("n", then=_refused))


async def _artifacts_found(pilot: Pilot[Any]) -> None:
    from velotui.widgets.artifact_picker import ArtifactPicker

    picker = pilot.app.screen.query_one(ArtifactPicker)
    await until(pilot, lambda: picker.artifacts is not None, 30, "the artifact library")
    await type_text(pilot, "test.")  # the two test artifacts (no built-in name or text has it)
    await until(pilot, lambda: len(picker.matches) == 2, 10, "two matches")
    await pilot.press("down")  # the second: Test.Files.Finder
    await pilot.pause(0.2)


def test_new_hunt_artifact_picker(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(with_test_artifacts(seeded), snapshot=True),
                        run_before=keys("n", "ctrl+t", then=_artifacts_found))


async def _artifact_refused(pilot: Pilot[Any]) -> None:
    await _artifacts_found(pilot)
    await pilot.press("enter")  # added: its form, the focus in its first field
    await until(pilot, lambda: pilot.app.screen.query("ArtifactParameters"), 10, "its form")
    await pilot.press("tab", "space", "tab", "tab", "tab")  # Hashes on; to Extra, the JSON
    await type_text(pilot, "oops")
    await pilot.press("ctrl+s")
    await until(pilot, lambda: "not JSON" in _text(pilot, "#problem"), 30, "the refusal")
    # The refused field keeps (or takes back) the focus, its cursor shown.
    await until(pilot, lambda: isinstance(pilot.app.focused, TextArea)
                and "oops" in pilot.app.focused.text, 10, "the refused field focused")


def test_new_hunt_artifact_parameters(snap_compare: Any, seeded: Path) -> None:
    async def added(pilot: Pilot[Any]) -> None:
        await _artifacts_found(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: pilot.app.screen.query("ArtifactParameters"), 10, "its form")
        await pilot.pause(0.3)

    assert snap_compare(console(with_test_artifacts(seeded), snapshot=True),
                        run_before=keys("n", "ctrl+t", then=added))


def test_new_hunt_artifact_refused_in_place(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(with_test_artifacts(seeded), snapshot=True),
                        run_before=keys("n", "ctrl+t", then=_artifact_refused))


def test_hunt_detail_artifact_overview(snap_compare: Any, seeded: Path) -> None:
    async def shown(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.screen.query("#artifacts"), 10, "the overview")
        await pilot.pause(0.3)

    # The artifact hunt is the newest, so the first row.
    assert snap_compare(console(with_artifact_hunt(seeded), snapshot=True),
                        run_before=keys("enter", then=shown, pause=0.4))


async def _detail_loaded(pilot: Pilot[Any]) -> None:
    screen = pilot.app.screen
    await until(pilot, lambda: screen.query_one("#clients-table").row_count > 0
                and screen.query_one("#results-table").row_count > 0
                and screen.query_one("#log-table").row_count > 0, 30, "the hunt's tables")


@pytest.mark.parametrize("tab", ["1", "2", "3", "4"], ids=["overview", "clients", "results",
                                                          "log"])
def test_hunt_detail(snap_compare: Any, seeded: Path, tab: str) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _detail_loaded(pilot)
        await pilot.press(tab)
        await pilot.pause(0.3)

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "enter", then=steps, pause=0.4))


def test_hunt_detail_clients_filtered(snap_compare: Any, seeded: Path) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _detail_loaded(pilot)
        await pilot.press("2", "f", "f", "f", "f")  # all, pending, running, completed, results
        await until(pilot, lambda: "results" in _text(pilot, "#clients-filter"), 10)
        await pilot.pause(0.3)

    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "enter", then=steps, pause=0.4))


async def _clients_loaded(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: pilot.app.screen.query_one("#clients").row_count > 0, 30,
                "the clients")


def test_clients(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("c", then=_clients_loaded))


def test_add_label_prompt(snap_compare: Any, seeded: Path) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _clients_loaded(pilot)
        await pilot.press("plus")
        await pilot.pause(0.3)

    assert snap_compare(console(seeded, snapshot=True), run_before=keys("c", then=steps))


async def _fixed_path(pilot: Pilot[Any]) -> None:
    from textual.widgets import Input

    # The cursor at the end, as after typing: left where it was, it would sit at the length of
    # the default path, which depends on the folder the tests run in.
    path = pilot.app.screen.query_one("#path", Input)
    path.value = "/srv/exports/H.1M8F0000000A1.zip"
    path.cursor_position = len(path.value)
    await pilot.pause()


def test_export_dialog(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True),
                        run_before=keys("down", "e", then=_fixed_path))


def test_stop_confirmation(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys("down", "x"))


def test_help(snap_compare: Any, seeded: Path) -> None:
    assert snap_compare(console(seeded, snapshot=True), run_before=keys("question_mark"))
