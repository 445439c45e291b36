"""The selected hunt's live panel: its counts, progress, completions over time and an ETA.

The screen calls `HuntPanel.show` whenever fresh hunt data arrives, which during a busy hunt can
be many times a second, and `HuntPanel.observe` with every hunt, so each hunt's completions are
known whichever one is shown. Drawing each of those would spend the event loop on frames nobody can
read, so the panel (Toolong-style) keeps only the latest data and draws at most about four times
a second: the first update after a quiet spell is drawn at once (so a newly selected hunt shows
without delay), later ones wait for the next tick of a quarter-second timer. A frame is drawn
only when what it shows differs from the last one, and `renders` counts the frames drawn.

Everything drawn is a function of the data passed to `show`, including its `now`, so the panel
reads no clock and snapshots of it are deterministic.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import ProgressBar, Sparkline, Static

from velotui.display import countdown, duration

# Completions are shown per bucket of this many seconds, for this many buckets (two minutes).
BUCKET_SECONDS = 2.0
BUCKETS = 60
# The observed completion rate (for hunts without a recruitment rate) is taken over this window.
RATE_WINDOW_SECONDS = 30.0
# Less history than this gives rates too noisy to base an ETA on.
MIN_RATE_SPAN_SECONDS = 2.0
# The panel draws at most once per tick of this interval while updates keep coming.
REFRESH_INTERVAL = 0.25
# Histories of recently selected hunts are kept, so flipping between hunts keeps their sparklines
# (when the panel is fed only the hunt shown; `HuntPanel.observe` feeds it every hunt).
REMEMBERED_HUNTS = 16

# The six queues an operator sees, in display order, with the label shown above each count.
# Labels stay within 9 cells so three columns fit a panel 36 cells wide.
QUEUE_LABELS: tuple[tuple[str, str], ...] = (
    ("pending", "Pending"),
    ("running", "Running"),
    ("completed", "Completed"),
    ("results", "Results"),
    ("errors", "Errors"),
    ("not_matched", "Unmatched"),
)
FINISHED_QUEUES = ("completed", "results", "errors")


def _count(hunt: Mapping[str, Any], queue: str) -> int:
    return int((hunt.get("counts") or {}).get(queue) or 0)


def finished_count(hunt: Mapping[str, Any]) -> int:
    """Clients done with the hunt: completed (no rows), with results, or errored."""
    return sum(_count(hunt, queue) for queue in FINISHED_QUEUES)


def checked_count(hunt: Mapping[str, Any]) -> int:
    """Everyone the hunt has taken on so far: pending, running, finished and being checked.

    Clients that did not match are not part of the work, so they are left out."""
    return (
        _count(hunt, "pending")
        + _count(hunt, "running")
        + finished_count(hunt)
        + int(hunt.get("checking") or 0)
    )


def eta_text(hunt: Mapping[str, Any], observed_per_second: float | None) -> str:
    """What is left of the hunt, in a few words.

    A paused or stopped hunt shows its state (and the reason); a hunt with nothing pending or
    running shows ``done``; with a recruitment rate R per minute and P pending clients, the time
    to recruit them all (``ETA 3m20s``); without a rate, the time to finish pending and running
    clients at `observed_per_second` completions; ``ETA —`` when there is no such rate.
    """
    state = hunt.get("state")
    if state == "paused":
        reason = str(hunt.get("stop_reason") or "").strip()
        if not reason:
            return "paused"
        return reason if reason.lower().startswith("paused") else f"paused: {reason}"
    if state == "stopped":
        reason = str(hunt.get("stop_reason") or "").strip()
        if not reason:
            return "stopped"
        # Reasons such as "stopped by the operator" already say it.
        return reason if reason.lower().startswith("stopped") else f"stopped: {reason}"
    pending = _count(hunt, "pending")
    running = _count(hunt, "running")
    if pending + running == 0:
        checking = int(hunt.get("checking") or 0)
        if checking:
            return f"checking {checking:,} clients"
        if checked_count(hunt) == 0:
            # Nothing has matched yet: calling that "done" would be a lie about a fresh hunt.
            return "waiting for clients"
        return "done"
    rate = float(hunt.get("rate") or 0)
    if rate > 0 and pending > 0:
        return f"ETA {duration(pending / rate * 60)}"
    if observed_per_second:
        return f"ETA {duration((pending + running) / observed_per_second)}"
    return "ETA —"


def rate_text(hunt: Mapping[str, Any], observed_per_second: float | None) -> str:
    """The recruitment rate (``recruit 30/min`` or ``recruit unlimited``), followed by the
    completion rate seen over the last half minute when there is one (``finish 96/min``)."""
    rate = float(hunt.get("rate") or 0)
    text = f"recruit {rate:g}/min" if rate > 0 else "recruit unlimited"
    if observed_per_second:
        text += f" · finish {observed_per_second * 60:.0f}/min"
    return text


class CompletionHistory:
    """How many completions one hunt has had over time, from the finished counts it was shown.

    Kept as (time, completions so far) samples. The finished count can drop (relaunching errored
    clients sends them back to pending); that is not negative work, so completions only ever
    grow. A count that holds still across many updates is kept as two samples, its first and
    latest time, so the history stays small and still knows when the count did not move.
    Between two samples completions are spread evenly: for a hunt that was not shown for a while
    (another one was selected) that average is the best the panel knows.
    """

    def __init__(self) -> None:
        self._times: list[float] = []
        self._totals: list[int] = []
        self._completions = 0
        self._last_finished: int | None = None

    def record(self, now: float, finished: int) -> None:
        """Note that `finished` clients were done at time `now` (seconds)."""
        if self._last_finished is not None and finished > self._last_finished:
            self._completions += finished - self._last_finished
        self._last_finished = finished
        if self._times:
            # Time never runs backwards in the history, even if a caller's clock does.
            now = max(now, self._times[-1])
        if len(self._totals) >= 2 and self._totals[-1] == self._totals[-2] == self._completions:
            self._times[-1] = now
        else:
            self._times.append(now)
            self._totals.append(self._completions)
        # Keep one sample older than anything shown, so the oldest bucket has a start value.
        horizon = now - (BUCKETS + 1) * BUCKET_SECONDS
        older = bisect_right(self._times, horizon) - 1
        if older > 0:
            del self._times[:older]
            del self._totals[:older]

    def __len__(self) -> int:
        """How many samples are kept."""
        return len(self._times)

    def completions_at(self, when: float) -> float:
        """Completions so far at time `when`, interpolated between samples.

        Before the first sample the count is the first sample's (nothing was seen before it)."""
        times, totals = self._times, self._totals
        if not times:
            return 0.0
        index = bisect_right(times, when)
        if index == 0:
            return float(totals[0])
        if index == len(times):
            return float(totals[-1])
        start, end = times[index - 1], times[index]
        share = (when - start) / (end - start) if end > start else 1.0
        return totals[index - 1] + share * (totals[index] - totals[index - 1])

    def per_bucket(self, now: float) -> tuple[float, ...]:
        """Completions in each of the last `BUCKETS` buckets up to `now`, oldest first.

        Buckets are aligned to multiples of `BUCKET_SECONDS`, so the picture moves one bucket at a
        time instead of shifting slightly with every update; the last bucket is the current,
        partly elapsed one."""
        current = math.floor(now / BUCKET_SECONDS)
        edges = [
            self.completions_at(min((current - BUCKETS + 1 + step) * BUCKET_SECONDS, now))
            for step in range(BUCKETS + 1)
        ]
        return tuple(round(max(edges[i + 1] - edges[i], 0.0), 6) for i in range(BUCKETS))

    def rate(self, now: float) -> float | None:
        """Completions per second over the last `RATE_WINDOW_SECONDS`, or None when too little
        has been seen to say (a short history, or no completions in the window)."""
        if not self._times:
            return None
        start = max(now - RATE_WINDOW_SECONDS, self._times[0])
        span = now - start
        if span < MIN_RATE_SPAN_SECONDS:
            return None
        done = self.completions_at(now) - self.completions_at(start)
        return done / span if done > 0 else None


@dataclass(frozen=True)
class PanelView:
    """Everything the panel draws, so two frames can be compared before drawing anything."""

    empty: bool
    title: str = ""
    state: str = ""
    description: str = ""
    counts: tuple[str, ...] = ("0",) * len(QUEUE_LABELS)
    finished: int = 0
    total: int = 0
    sparkline: tuple[float, ...] = (0.0,) * BUCKETS
    sparkline_caption: str = ""
    eta: str = ""
    rate: str = ""


EMPTY_VIEW = PanelView(empty=True)


def build_view(
    hunt: Mapping[str, Any] | None, now: float, history: CompletionHistory | None
) -> PanelView:
    """What the panel shows for `hunt` at time `now`, given its completion history."""
    if hunt is None:
        return EMPTY_VIEW
    if history is None:
        history = CompletionHistory()
    observed = history.rate(now)
    sparkline = history.per_bucket(now)
    window = duration(BUCKETS * BUCKET_SECONDS)
    return PanelView(
        empty=False,
        title=str(hunt.get("hunt_id") or ""),
        state=str(hunt.get("state") or "") + (
            ", awaiting approval"
            if (hunt.get("approval") or {}).get("state") == "pending" else ""),
        description=str(hunt.get("description") or "(no description)"),
        counts=tuple(f"{_count(hunt, queue):,}" for queue, _label in QUEUE_LABELS),
        finished=finished_count(hunt),
        total=checked_count(hunt),
        sparkline=sparkline,
        sparkline_caption=(
            f"Completions per {BUCKET_SECONDS:g}s, last {window}: {round(sum(sparkline)):,}"
        ),
        eta=(countdown(hunt.get("start_at"), now) if hunt.get("state") == "scheduled"
             else eta_text(hunt, observed)),
        rate=rate_text(hunt, observed),
    )


class HuntPanel(Widget):
    """The selected hunt's live panel; feed it with `show(hunt, now)`, and every hunt with
    `observe(hunts, now)`. With the ``-compact`` class it takes nine lines (under a table).

    `renders` counts the frames drawn (a benchmark reports refreshes per second from it)."""

    DEFAULT_CSS = """
    HuntPanel {
        width: 40;
        height: auto;
        border: round $primary 60%;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        padding: 0 1;

        #hunt-none {
            width: 1fr;
            height: 3;
            content-align: center middle;
            color: $text-muted;
            display: none;
        }
        &.-empty #hunt-none { display: block; }
        &.-empty #hunt-body { display: none; }

        #hunt-body { height: auto; }
        #hunt-description {
            height: 1;
            text-wrap: nowrap;
            text-overflow: ellipsis;
            color: $text-muted;
        }
        #hunt-counts {
            grid-size: 3 2;
            grid-rows: 2;
            grid-gutter: 0 1;
            height: 4;
        }
        .count { height: 2; }
        .count-label {
            height: 1;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        .count-value {
            height: 1;
            text-style: bold;
            text-wrap: nowrap;
        }
        .-pending .count-value { color: $text-warning; }
        .-running .count-value { color: $text-primary; }
        .-completed .count-value { color: $text; }
        .-results .count-value { color: $text-success; }
        .-errors .count-value { color: $text-error; }
        .-not_matched .count-value { color: $text-muted; }

        #hunt-progress-row { height: 1; margin-top: 1; }
        #hunt-progress { width: 1fr; }
        #hunt-progress Bar { width: 1fr; }
        #hunt-progress-text { width: auto; margin-left: 1; }
        #hunt-spark-caption {
            height: 1;
            margin-top: 1;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        #hunt-spark { height: 2; }
        #hunt-spark > .sparkline--max-color { color: $text-success; }
        #hunt-spark > .sparkline--min-color { color: $text-success 30%; }
        #hunt-eta { height: auto; margin-top: 1; text-style: bold; }
        #hunt-rate {
            height: 1;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }

        /* Under the table of a narrow screen: the counts on one row, no blank lines. */
        &.-compact {
            #hunt-description { display: none; }
            #hunt-counts { grid-size: 6 1; height: 2; }
            #hunt-progress-row, #hunt-spark-caption, #hunt-eta { margin-top: 0; }
            #hunt-spark { height: 1; }
        }
    }
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.renders: int = 0
        """How many frames the panel has drawn since it was created."""
        self._hunt: Mapping[str, Any] | None = None
        self._now = 0.0
        self._view = EMPTY_VIEW
        # Coalescing state: data newer than the last frame; a frame already queued; a frame
        # drawn since the timer last found nothing to do (then the next one waits for a tick).
        self._dirty = False
        self._scheduled = False
        self._drew_this_tick = False
        self._histories: OrderedDict[str, CompletionHistory] = OrderedDict()
        self._observing = False  # fed every hunt by `observe`, not only the shown one
        self.add_class("-empty")

    def compose(self) -> ComposeResult:
        yield Static("No hunt selected", id="hunt-none")
        with Vertical(id="hunt-body"):
            yield Static("", id="hunt-description", markup=False)
            with Grid(id="hunt-counts"):
                for queue, label in QUEUE_LABELS:
                    with Vertical(classes=f"count -{queue}"):
                        yield Static(label, classes="count-label", markup=False)
                        yield Static("0", id=f"hunt-count-{queue}", classes="count-value",
                                     markup=False)
            with Horizontal(id="hunt-progress-row"):
                # A total of 1 with no progress: an empty bar, not the animated unknown one.
                yield ProgressBar(total=1, show_eta=False, id="hunt-progress")
                yield Static("0/0", id="hunt-progress-text", markup=False)
            yield Static("", id="hunt-spark-caption", markup=False)
            yield Sparkline(list(EMPTY_VIEW.sparkline), id="hunt-spark")
            yield Static("", id="hunt-eta", markup=False)
            yield Static("", id="hunt-rate", markup=False)

    def on_mount(self) -> None:
        self.set_interval(REFRESH_INTERVAL, self._tick)
        if self._dirty:
            self._draw_latest()

    def show(self, hunt: Mapping[str, Any] | None, now: float) -> None:
        """Show `hunt` (a hunt as the operator API describes it) as of time `now` (epoch
        seconds), or a calm empty state for None.

        Cheap enough to call on every update: only the latest data is kept, the completion
        history is fed, and a frame is drawn soon (at once after a quiet spell, else on the next
        timer tick)."""
        self._hunt = hunt
        self._now = now
        if hunt is not None:
            self._history(str(hunt.get("hunt_id") or "")).record(now, finished_count(hunt))
        self._dirty = True
        if not self._drew_this_tick and not self._scheduled and self.is_mounted:
            self._scheduled = True
            self.call_later(self._draw_latest)

    def observe(self, hunts: Iterable[Mapping[str, Any]], now: float) -> None:
        """Note the finished counts of every hunt in ``hunts`` as of ``now``, shown or not.

        A history fed only while its hunt is shown starts when the hunt is first selected, so a
        hunt that ran and finished while another was selected would show no completions at all
        (``last 2m: 0``). Fed from here on every update, each hunt's sparkline is right
        whenever it is shown. Histories of hunts not in ``hunts`` are forgotten."""
        histories: OrderedDict[str, CompletionHistory] = OrderedDict()
        for hunt in hunts:
            hunt_id = str(hunt.get("hunt_id") or "")
            history = self._histories.get(hunt_id) or CompletionHistory()
            history.record(now, finished_count(hunt))
            histories[hunt_id] = history
        self._histories = histories
        self._observing = True

    @property
    def view(self) -> PanelView:
        """What the panel shows now (its last frame)."""
        return self._view

    def _history(self, hunt_id: str) -> CompletionHistory:
        history = self._histories.get(hunt_id)
        if history is None:
            history = self._histories[hunt_id] = CompletionHistory()
            # Observed hunts are all kept (`observe` forgets the ones gone); else a few.
            while not self._observing and len(self._histories) > REMEMBERED_HUNTS:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(hunt_id)
        return history

    def _tick(self) -> None:
        if self._dirty:
            self._draw_latest()
        else:
            # A quiet tick: the next update may be drawn at once again.
            self._drew_this_tick = False

    def _draw_latest(self) -> None:
        self._scheduled = False
        if not self._dirty:
            return
        self._dirty = False
        hunt = self._hunt
        history = None if hunt is None else self._histories.get(str(hunt.get("hunt_id") or ""))
        view = build_view(hunt, self._now, history)
        if view == self._view:
            return
        self._apply(view, self._view)
        self._view = view
        self.renders += 1
        self._drew_this_tick = True

    def _apply(self, view: PanelView, old: PanelView) -> None:
        """Update only the parts of the panel whose content changed."""
        if view.empty != old.empty:
            self.set_class(view.empty, "-empty")
        if view.title != old.title:
            self.border_title = view.title or None
        if view.state != old.state:
            self.border_subtitle = view.state or None
        if view.description != old.description:
            self.query_one("#hunt-description", Static).update(view.description, layout=False)
        for (queue, _label), count, old_count in zip(
            QUEUE_LABELS, view.counts, old.counts, strict=True
        ):
            if count != old_count:
                self.query_one(f"#hunt-count-{queue}", Static).update(count, layout=False)
        if (view.finished, view.total) != (old.finished, old.total):
            self.query_one("#hunt-progress", ProgressBar).update(
                total=max(view.total, 1), progress=view.finished
            )
            text, old_text = f"{view.finished:,}/{view.total:,}", f"{old.finished:,}/{old.total:,}"
            # Sized to its text: the layout is redone only when that changes its width.
            self.query_one("#hunt-progress-text", Static).update(
                text, layout=cell_len(text) != cell_len(old_text)
            )
        if view.sparkline != old.sparkline:
            self.query_one("#hunt-spark", Sparkline).data = list(view.sparkline)
        if view.sparkline_caption != old.sparkline_caption:
            self.query_one("#hunt-spark-caption", Static).update(
                view.sparkline_caption, layout=False
            )
        if view.eta != old.eta:
            eta = self.query_one("#hunt-eta", Static)
            # It may wrap: the layout is redone unless both texts fit on one line.
            width = eta.content_size.width
            one_line = width > 0 and max(cell_len(view.eta), cell_len(old.eta)) <= width
            eta.update(view.eta, layout=not one_line)
        if view.rate != old.rate:
            self.query_one("#hunt-rate", Static).update(view.rate, layout=False)
