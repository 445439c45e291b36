"""The hunt panel: counts, progress, completions over time, ETA, and coalesced redraws."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import ProgressBar, Sparkline, Static

from velotui.display import duration
from velotui.widgets.hunt_panel import (
    BUCKET_SECONDS,
    CompletionHistory,
    HuntPanel,
    eta_text,
)

NOW = 1_800_000_000.0  # a fixed clock: the panel reads no clock of its own


def hunt(
    *,
    pending: int = 0,
    running: int = 0,
    completed: int = 0,
    results: int = 0,
    errors: int = 0,
    not_matched: int = 0,
    checking: int = 0,
    state: str = "running",
    rate: float = 0,
    stop_reason: str | None = None,
    hunt_id: str = "H.0123ABCD",
) -> dict[str, Any]:
    """A hunt as the operator API describes it (Hunt.describe())."""
    return {
        "hunt_id": hunt_id,
        "state": state,
        "stop_reason": stop_reason,
        "description": "Find [odd] binaries in temp folders",
        "created": NOW - 600,
        "started": NOW - 500,
        "stopped": None,
        "expires": NOW + 86400,
        "rate": rate,
        "limit": 0,
        "timeout": 600,
        "counts": {
            "not_matched": not_matched,
            "pending": pending,
            "running": running,
            "completed": completed,
            "results": results,
            "errors": errors,
        },
        "checking": checking,
    }


class PanelApp(App[None]):
    def compose(self) -> ComposeResult:
        yield HuntPanel()


def text_of(panel: HuntPanel, selector: str) -> str:
    return str(panel.query_one(selector, Static).content)


async def drawn(pilot: Pilot[None], panel: HuntPanel, renders: int) -> None:
    """Wait until the panel has drawn `renders` frames (its timer draws the trailing ones)."""
    for _ in range(200):
        if panel.renders >= renders:
            return
        await pilot.pause(0.05)
    raise AssertionError(f"the panel drew {panel.renders} frames, expected {renders}")


async def test_no_hunt_is_a_calm_empty_state() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        await pilot.pause()
        assert panel.query_one("#hunt-none").display
        assert not panel.query_one("#hunt-body").display
        assert "No hunt selected" in text_of(panel, "#hunt-none")

        panel.show(hunt(pending=1), NOW)
        await pilot.pause()
        assert panel.query_one("#hunt-body").display
        panel.show(None, NOW + 1)
        await drawn(pilot, panel, 2)
        assert not panel.query_one("#hunt-body").display
        assert panel.border_title is None


async def test_panel_shows_the_counts_and_progress_of_a_hunt() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        panel.show(hunt(pending=12, running=3, completed=40, results=7, errors=2,
                        not_matched=1500, checking=1), NOW)
        await pilot.pause()
        assert panel.border_title == "H.0123ABCD"
        assert panel.border_subtitle == "running"
        assert text_of(panel, "#hunt-description") == "Find [odd] binaries in temp folders"
        assert text_of(panel, "#hunt-count-pending") == "12"
        assert text_of(panel, "#hunt-count-running") == "3"
        assert text_of(panel, "#hunt-count-completed") == "40"
        assert text_of(panel, "#hunt-count-results") == "7"
        assert text_of(panel, "#hunt-count-errors") == "2"
        assert text_of(panel, "#hunt-count-not_matched") == "1,500"
        # finished = 40 + 7 + 2; everyone checked = 12 + 3 + 49 + 1 being checked
        assert text_of(panel, "#hunt-progress-text") == "49/65"
        bar = panel.query_one(ProgressBar)
        assert (bar.progress, bar.total) == (49, 65)


async def test_a_flood_of_updates_is_drawn_a_few_times_with_the_latest_data() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        await pilot.pause()
        before = panel.renders
        for step in range(100):
            panel.show(hunt(pending=100 - step, completed=step), NOW + step * 0.01)
        await pilot.pause()
        assert 1 <= panel.renders - before <= 3
        assert text_of(panel, "#hunt-count-pending") == "1"
        assert text_of(panel, "#hunt-count-completed") == "99"


async def test_later_updates_are_drawn_and_unchanged_ones_are_not() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        panel.show(hunt(pending=10), NOW)
        await drawn(pilot, panel, 1)
        # Right after a frame, the next change waits for the panel's timer, and is drawn then.
        panel.show(hunt(pending=9, completed=1), NOW + 0.1)
        await drawn(pilot, panel, 2)
        assert text_of(panel, "#hunt-count-pending") == "9"

        renders = panel.renders
        for _ in range(3):
            panel.show(hunt(pending=9, completed=1), NOW + 0.1)
            await pilot.pause(0.3)
        assert panel.renders == renders


async def test_eta_of_a_rate_limited_hunt_in_the_panel() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        panel.show(hunt(pending=60, rate=30), NOW)
        await pilot.pause()
        assert text_of(panel, "#hunt-eta") == "ETA 2m"
        assert text_of(panel, "#hunt-rate") == "recruit 30/min"


def test_eta_text() -> None:
    assert eta_text(hunt(pending=60, rate=30), None) == "ETA 2m"
    assert eta_text(hunt(pending=100, rate=30), None) == "ETA 3m20s"
    # Nothing pending or running: done, whatever the rate.
    assert eta_text(hunt(completed=5, errors=1, rate=30), 2.0) == "done"
    # Recruitment done but clients still running: the observed completion rate decides.
    assert eta_text(hunt(running=10, completed=5, rate=30), 0.5) == "ETA 20s"
    # No rate limit: pending and running clients at the observed completion rate.
    assert eta_text(hunt(pending=30, running=30, completed=5), 2.0) == "ETA 30s"
    assert eta_text(hunt(pending=30, running=30), None) == "ETA —"
    assert eta_text(hunt(pending=3, state="paused", rate=30), None) == "paused"
    assert eta_text(hunt(pending=3, state="stopped"), None) == "stopped"
    assert eta_text(hunt(state="stopped", stop_reason="stopped by the operator"),
                    None) == "stopped by the operator"
    assert eta_text(hunt(state="stopped", stop_reason="expired"), None) == "stopped: expired"
    assert eta_text(hunt(checking=4), None) == "checking 4 clients"
    assert eta_text(hunt(not_matched=9), None) == "waiting for clients"


def test_duration() -> None:
    assert duration(0) == "0s"
    assert duration(45.4) == "45s"
    assert duration(120) == "2m"
    assert duration(200) == "3m20s"
    assert duration(3600) == "1h"
    assert duration(3900) == "1h05m"
    assert duration(2 * 86400 + 3 * 3600) == "2d03h"
    assert duration(float("inf")) == "—"


async def test_done_paused_and_stopped_hunts_in_the_panel() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        panel.show(hunt(completed=8, results=2, rate=30), NOW)
        await pilot.pause()
        assert text_of(panel, "#hunt-eta") == "done"
        assert text_of(panel, "#hunt-progress-text") == "10/10"

        panel.show(hunt(pending=5, completed=8, state="paused"), NOW + 1)
        await drawn(pilot, panel, 2)
        assert text_of(panel, "#hunt-eta") == "paused"
        assert panel.border_subtitle == "paused"

        panel.show(hunt(pending=5, completed=8, state="stopped", stop_reason="expired"), NOW + 2)
        await drawn(pilot, panel, 3)
        assert text_of(panel, "#hunt-eta") == "stopped: expired"
        assert panel.border_subtitle == "stopped"


async def test_sparkline_shows_completions_between_samples() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        start = 1000 * BUCKET_SECONDS  # on a bucket boundary
        # Samples one bucket apart: 5 done in the first bucket, none in the next, then 7.
        for offset, finished in ((0, 0), (1, 5), (2, 5), (3, 12)):
            panel.show(hunt(pending=50 - finished, completed=finished),
                       start + offset * BUCKET_SECONDS)
        await pilot.pause()
        data = list(panel.query_one(Sparkline).data or [])
        assert len(data) == 60
        # The last bucket is the current one, just begun.
        assert data[-4:] == [5.0, 0.0, 7.0, 0.0]
        assert sum(data) == 12
        assert text_of(panel, "#hunt-spark-caption").endswith(": 12")

        # Relaunched errors going back to pending are not negative completions.
        panel.show(hunt(pending=40, completed=8), start + 4 * BUCKET_SECONDS)
        panel.show(hunt(pending=38, completed=10), start + 5 * BUCKET_SECONDS)
        await drawn(pilot, panel, 2)
        data = list(panel.query_one(Sparkline).data or [])
        assert data[-6:] == [5.0, 0.0, 7.0, 0.0, 2.0, 0.0]


async def test_unlimited_hunt_eta_comes_from_observed_completions() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(HuntPanel)
        panel.show(hunt(pending=30, running=10), NOW)
        await pilot.pause()
        assert text_of(panel, "#hunt-eta") == "ETA —"
        # 20 completions in 10 seconds: 2 a second; 20 clients left take 10 seconds.
        panel.show(hunt(pending=10, running=10, completed=20), NOW + 10)
        await drawn(pilot, panel, 2)
        assert text_of(panel, "#hunt-eta") == "ETA 10s"
        assert text_of(panel, "#hunt-rate") == "recruit unlimited · finish 120/min"


def test_completion_history_stays_small_when_counts_hold_still() -> None:
    history = CompletionHistory()
    for step in range(1000):
        history.record(NOW + step * 0.1, 5)
    history.record(NOW + 100, 6)
    # A count that held still is two samples; the new count is a third.
    assert history.completions_at(NOW + 99.9) == 0
    assert history.completions_at(NOW + 100) == 1
    assert len(history) <= 3
