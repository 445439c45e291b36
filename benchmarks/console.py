"""Benchmark: how late the console's event loop runs while its embedded server works.

    python -m benchmarks.console --agents N [--fleet-processes P] [--timeout S] [--profile F]

It starts the real console headless (``VelotuiApp`` under Textual's ``run_test``, its embedded
server, a demo fleet of N simulated agents in child processes) and, on the console's event loop,
a ticker due every 10 ms. Each tick records how late it ran; a stall records every tick it
swallowed (a 300 ms stall is 30 late ticks, from 300 ms down to 10 ms), so the percentiles are
fractions of time, not of samples. The figures are taken in four phases, back to back:

1. ``connect``: from the home screen's first frame until all N demo agents are online (the
   connect storm; the fleet's processes start with the console, and take longer than it to
   start).
2. ``home``: the home screen while a hunt (rate 0, every agent) runs to its end;
   ``panel_refreshes_per_s`` is the selected hunt's panel frames over that time.
3. ``detail``: a second such hunt, with its detail screen open on the clients tab (which reloads
   as the counts change) from its start to its end. The screen is opened on the hunt before it
   starts; ``detail_open_max_ms`` is the worst tick while it opened (the console's own work).
4. ``estimate``: the new-hunt screen, typing into the server-side condition with Pilot keys, in
   bursts with pauses long enough for the live estimate (over the N known clients) to start, so
   later keys arrive while it runs; ``estimate_max_stall_ms`` is the worst tick in this phase and
   ``estimate_answer_seconds`` the time from the last key to the final estimate shown (0.75 s of
   it is the editor's and the form's deliberate wait for typing to pause).

It prints one line per phase and ends with one JSON line: ``{"agents", "lag_p50_ms",
"lag_p99_ms", "lag_max_ms", "panel_refreshes_per_s", "estimate_max_stall_ms", ...}`` plus
``<phase>_lag_p50_ms``, ``<phase>_lag_p99_ms``, ``<phase>_lag_max_ms``, ``<phase>_seconds``,
``<phase>_console_cpu_s`` (CPU time of the console's thread), ``<phase>_process_cpu_s`` (the
whole console process) and ``<phase>_server_cpu_s`` (the embedded server's process, the
console's child, without its fleet) for each phase. ``--profile F``
writes a cProfile of the console's thread alone over the phases after the connect storm to F.
Targets: p99 <= 50 ms and max <= 150 ms at 2,000 agents, p99 <= 100 ms at 10,000, the panel at
least 2 refreshes a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

TICK = 0.010
PHASES = ("connect", "home", "detail", "estimate")
# Typed into the server-side condition's regex, a few keys at a time: every prefix is valid VQL,
# so each pause starts an estimate, and the next burst arrives while it runs.
TYPED = "srv-db-0"
BURST = 3
TYPING_PAUSE = 1.2  # longer than the editor's and the form's waits (0.15 s + 0.6 s)
HUNT_QUERY = "SELECT Hostname, OS FROM info()"


@dataclass
class LagTicker:
    """Ticks due every ``TICK`` seconds on the running loop; ``ticks`` holds (due, lateness)."""

    ticks: list[tuple[float, float]] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + TICK
        while self.running:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            now = loop.time()
            # Every tick that fell due while the loop was busy elsewhere ran this late.
            while due <= now:
                self.ticks.append((due, now - due))
                due += TICK

    def lateness(self, start: float, end: float) -> list[float]:
        return [late for due, late in self.ticks if start <= due < end]


class Phases:
    """When each phase began and ended on the loop's clock, and the CPU time spent in it by the
    console's thread (this one), by the console's whole process, and by the embedded server's
    process (``server_cpu`` reads it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server_cpu: Callable[[], float]) -> None:
        self.loop = loop
        self.server_cpu = server_cpu
        self.windows: dict[str, tuple[float, float]] = {}
        self.console_cpu: dict[str, float] = {}
        self.process_cpu: dict[str, float] = {}
        self.server_process_cpu: dict[str, float] = {}

    def begin(self, name: str) -> None:
        self.windows[name] = (self.loop.time(), 0.0)
        self.console_cpu[name] = -time.thread_time()
        self.process_cpu[name] = -time.process_time()
        self.server_process_cpu[name] = -self.server_cpu()

    def end(self, name: str) -> None:
        self.windows[name] = (self.windows[name][0], self.loop.time())
        self.console_cpu[name] += time.thread_time()
        self.process_cpu[name] += time.process_time()
        self.server_process_cpu[name] += self.server_cpu()

    def start(self, name: str) -> float:
        return self.windows[name][0]

    def window(self, name: str) -> tuple[float, float]:
        return self.windows[name]

    def seconds(self, name: str) -> float:
        start, end = self.windows[name]
        return end - start


async def final_estimate(app: Any, server_condition: str) -> float:
    """When the new-hunt form's estimate worker for ``server_condition`` finished (the loop's
    clock): found among the app's workers by its description, which names its arguments."""
    loop = asyncio.get_running_loop()
    wanted = repr(server_condition)
    worker = None
    while worker is None:  # a worker lives at least a round trip to the server's thread
        worker = next((w for w in app.workers
                       if w.name == "run_estimate" and wanted in w.description), None)
        await asyncio.sleep(0.001)
    while not worker.is_finished:
        await asyncio.sleep(0.001)
    return loop.time()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def lag_figures(lateness: list[float], prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}lag_p50_ms": round(percentile(lateness, 0.50) * 1000, 1),
        f"{prefix}lag_p99_ms": round(percentile(lateness, 0.99) * 1000, 1),
        f"{prefix}lag_max_ms": round(max(lateness, default=0.0) * 1000, 1),
        f"{prefix}ticks": len(lateness),
    }


def finished(hunt: dict[str, Any]) -> bool:
    counts = hunt["counts"]
    done = sum(counts[q] for q in ("completed", "results", "errors", "not_matched"))
    return done > 0 and not counts["pending"] and not counts["running"] and not hunt["checking"]


async def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        await asyncio.sleep(poll)


async def run(agents: int, timeout: float, fleet_processes: int | None,
              profile: Path | None = None) -> dict[str, Any]:
    from velotui.app import VelotuiApp
    from velotui.screens.hunt_detail import HuntDetailScreen
    from velotui.screens.hunts import HuntsScreen
    from velotui.screens.new_hunt import NewHuntScreen
    from velotui.server_link import EmbeddedLink
    from velotui.widgets.hunt_panel import HuntPanel
    from velotui.widgets.vql_editor import VQLEditor

    folder = Path(tempfile.mkdtemp(prefix="velotui-bench-console-"))
    link = EmbeddedLink(datastore_path=folder / "datastore", listen="127.0.0.1:0", demo=agents)
    if fleet_processes is not None:
        link.demo_processes = fleet_processes
    app = VelotuiApp(link)
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {"agents": agents}
    server_processes: dict[int, psutil.Process] = {}

    def server_cpu() -> float:
        if link.process is None:
            return 0.0
        server = server_processes.setdefault(link.process.pid, psutil.Process(link.process.pid))
        times = server.cpu_times()
        return float(times.user + times.system)

    phases = Phases(loop, server_cpu)
    ticker = LagTicker()
    ticking = asyncio.create_task(ticker.run())

    def say(message: str) -> None:
        print(f"[{loop.time() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    async def hunt_on_all(description: str) -> str:
        hunt = await app.api.create_hunt(query=HUNT_QUERY, description=description, start=True)
        app.hunts[hunt["hunt_id"]] = hunt
        return str(hunt["hunt_id"])

    profiler = cProfile.Profile() if profile is not None else None
    began = loop.time()
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            # 1. The connect storm, from the home screen's first frame.
            await wait_for(lambda: isinstance(app.screen, HuntsScreen), timeout, "the console")
            result["startup_seconds"] = round(loop.time() - began, 2)
            phases.begin("connect")
            online = 0
            deadline = time.monotonic() + timeout
            while (online := (await app.api.server_info())["online"]) < agents:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {online} of {agents} agents connected")
                await asyncio.sleep(0.5)
            phases.end("connect")
            result["connect_seconds"] = round(loop.time() - began, 2)
            say(f"{agents} agents online")
            if profiler is not None:
                profiler.enable()

            # 2. The home screen while a hunt runs on every agent.
            panel = app.screen.query_one(HuntPanel)
            phases.begin("home")
            renders_before = panel.renders
            hunt_id = await hunt_on_all("bench: home")
            await wait_for(lambda: finished(app.hunts[hunt_id]), timeout, "the first hunt")
            await asyncio.sleep(0.5)  # the panel's last frame
            phases.end("home")
            result["panel_refreshes"] = panel.renders - renders_before
            result["panel_refreshes_per_s"] = round(
                result["panel_refreshes"] / phases.seconds("home"), 2)
            counts = app.hunts[hunt_id]["counts"]
            result["results"], result["errors"] = counts["results"], counts["errors"]
            say(f"hunt {hunt_id} finished on the home screen: {counts}")

            # 3. The detail screen on a running hunt, clients tab shown: opened on the hunt
            # (paused) first, so that the phase has the hunt's load only, not the opening.
            hunt = await app.api.create_hunt(query=HUNT_QUERY, description="bench: detail")
            hunt_id = hunt["hunt_id"]
            app.hunts[hunt_id] = hunt
            opened = loop.time()
            await app.push_screen(HuntDetailScreen(hunt_id))
            await pilot.press("2")
            await asyncio.sleep(1.0)
            result["detail_open_max_ms"] = round(
                max(ticker.lateness(opened, loop.time()), default=0.0) * 1000, 1)
            phases.begin("detail")
            await app.api.start_hunt(hunt_id=hunt_id)
            await wait_for(lambda: finished(app.hunts[hunt_id]), timeout, "the second hunt")
            await asyncio.sleep(0.5)
            phases.end("detail")
            say(f"hunt {hunt_id} finished on its detail screen")
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, HuntsScreen), 30, "the home screen")

            # 4. The new-hunt screen: keys into the server-side condition, estimates between.
            await pilot.press("n")
            await wait_for(lambda: isinstance(app.screen, NewHuntScreen), 30, "the form")
            editor = app.screen.query_one("#server_condition", VQLEditor)
            editor.text = "SELECT * FROM rows WHERE Fqdn =~ ''"
            editor.focus()
            editor.text_area.cursor_location = (0, len(editor.text) - 1)
            await asyncio.sleep(TYPING_PAUSE)
            final_text = editor.text[:-1] + TYPED + "'"
            final = asyncio.create_task(final_estimate(app, final_text))
            phases.begin("estimate")
            for index, character in enumerate(TYPED):
                if index and index % BURST == 0:
                    await asyncio.sleep(TYPING_PAUSE)
                last_key = loop.time()  # sent at once; press() returns once the app is idle
                await pilot.press(character)
            say(f"typed in {loop.time() - phases.start('estimate'):.2f} s")
            answered = await asyncio.wait_for(final, timeout)
            phases.end("estimate")
            result["estimate_answer_seconds"] = round(answered - last_key, 2)
            result["estimate_shown"] = str(app.screen.query_one("#estimate").content)
            say(f"estimate: {result['estimate_shown']}")
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            await pilot.press("escape")
            await pilot.press("q")
    finally:
        ticker.running = False
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        shutil.rmtree(folder, ignore_errors=True)

    everything = [late for name in PHASES for late in ticker.lateness(*phases.window(name))]
    result.update(lag_figures(everything))
    for name in PHASES:
        result.update(lag_figures(ticker.lateness(*phases.window(name)), f"{name}_"))
        result[f"{name}_seconds"] = round(phases.seconds(name), 2)
        result[f"{name}_console_cpu_s"] = round(phases.console_cpu[name], 2)
        result[f"{name}_process_cpu_s"] = round(phases.process_cpu[name], 2)
        result[f"{name}_server_cpu_s"] = round(phases.server_process_cpu[name], 2)
    result["estimate_max_stall_ms"] = result["estimate_lag_max_ms"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console")
    parser.add_argument("--agents", type=int, default=2000, metavar="N")
    parser.add_argument("--fleet-processes", type=int, default=None, metavar="P",
                        help="split the demo fleet over P child processes (default: the"
                             " console's own choice)")
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S")
    parser.add_argument("--profile", type=Path, default=None, metavar="F",
                        help="write a cProfile of the console's thread over the phases to F")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.agents, args.timeout, args.fleet_processes, args.profile))
    print(f"agents:   {result['agents']} (online after {result['connect_seconds']} s)")
    for name in PHASES:
        print(f"{name + ':':9} {result[f'{name}_seconds']:7.1f} s   lag p50"
              f" {result[f'{name}_lag_p50_ms']} ms, p99 {result[f'{name}_lag_p99_ms']} ms,"
              f" max {result[f'{name}_lag_max_ms']} ms; CPU: console thread"
              f" {result[f'{name}_console_cpu_s']} s, console process"
              f" {result[f'{name}_process_cpu_s']} s, server process"
              f" {result[f'{name}_server_cpu_s']} s")
    print(f"overall:  lag p50 {result['lag_p50_ms']} ms, p99 {result['lag_p99_ms']} ms,"
          f" max {result['lag_max_ms']} ms (targets at 2,000: p99 <= 50, max <= 150;"
          f" at 10,000: p99 <= 100)")
    print(f"panel:    {result['panel_refreshes']} refreshes, {result['panel_refreshes_per_s']}"
          " a second (target >= 2)")
    print(f"estimate: worst stall {result['estimate_max_stall_ms']} ms; the last one shown"
          f" {result['estimate_answer_seconds']} s after the last key")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
