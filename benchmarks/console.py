"""Benchmark: the console's event-loop lag while a hunt runs on N agents in its embedded server.

``python -m benchmarks.console --agents N`` starts the real console headless (its embedded
server in the same event loop, the demo fleet of N simulated agents in a child process), runs a
hunt with rate 0 on all of them from the home screen, and meanwhile measures how late a 10 ms
timer fires on that loop (what an operator feels as a sluggish console). It ends with one JSON line:
``{"agents", "lag_p99_ms", "lag_max_ms", "panel_refreshes_per_s", ...}``. Target at N=2,000: p99 lag
at most 100 ms, with the panel still refreshing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TICK = 0.010


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


async def measure_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late each 10 ms sleep wakes: the loop's lag, in seconds."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(TICK)
        samples.append(max(loop.time() - asked - TICK, 0.0))


async def run(agents: int, timeout: float) -> dict[str, Any]:
    from velotui.app import VelotuiApp
    from velotui.screens.hunts import HuntsScreen
    from velotui.server_link import EmbeddedLink
    from velotui.widgets.hunt_panel import HuntPanel

    folder = Path(tempfile.mkdtemp(prefix="velotui-bench-console-"))
    app = VelotuiApp(EmbeddedLink(datastore_path=folder / "datastore",
                                  listen="127.0.0.1:0", demo=agents))
    result: dict[str, Any] = {"agents": agents}
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            started = time.monotonic()
            while not isinstance(app.screen, HuntsScreen):
                await pilot.pause(0.05)
            while True:
                info = await app.api.server_info()
                if info["online"] >= agents:
                    break
                if time.monotonic() - started > timeout:
                    raise SystemExit(f"only {info['online']} of {agents} agents connected")
                await asyncio.sleep(0.5)
            result["connect_seconds"] = round(time.monotonic() - started, 2)
            print(f"{agents} agents online after {result['connect_seconds']} s", file=sys.stderr)

            samples: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(measure_lag(samples, stop))
            panel = app.screen.query_one(HuntPanel)
            renders_before = panel.renders
            began = time.monotonic()
            hunt = await app.api.create_hunt(query="SELECT Hostname, OS FROM info()",
                                             description="bench", start=True)
            hunt_id = hunt["hunt_id"]
            while True:
                counts = app.hunts.get(hunt_id, hunt)["counts"]
                finished = sum(counts[q] for q in ("completed", "results", "errors",
                                                   "not_matched"))
                if finished >= agents and not counts["running"]:
                    break
                if time.monotonic() - began > timeout:
                    raise SystemExit(f"the hunt did not finish: {counts}")
                await asyncio.sleep(0.05)
            hunt_seconds = time.monotonic() - began
            await asyncio.sleep(0.5)  # the panel's last frame
            stop.set()
            await sampler
            renders = panel.renders - renders_before
            result.update({
                "hunt_seconds": round(hunt_seconds, 2),
                "lag_p50_ms": round(statistics.median(samples) * 1000, 1),
                "lag_p99_ms": round(percentile(samples, 0.99) * 1000, 1),
                "lag_max_ms": round(max(samples) * 1000, 1),
                "lag_samples": len(samples),
                "panel_refreshes": renders,
                "panel_refreshes_per_s": round(renders / (hunt_seconds + 0.5), 2),
                "results": counts["results"],
                "errors": counts["errors"],
            })
            await pilot.press("q")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console")
    parser.add_argument("--agents", type=int, default=2000, metavar="N")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.agents, args.timeout))
    print(f"agents:        {result['agents']}")
    print(f"hunt:          {result['hunt_seconds']} s ({result['results']} results,"
          f" {result['errors']} errors)")
    print(f"loop lag:      p50 {result['lag_p50_ms']} ms, p99 {result['lag_p99_ms']} ms,"
          f" max {result['lag_max_ms']} ms (target p99 <= 100 ms at 2,000 agents)")
    print(f"panel:         {result['panel_refreshes']} refreshes,"
          f" {result['panel_refreshes_per_s']} a second")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
