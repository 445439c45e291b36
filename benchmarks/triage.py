"""What triaging a big hunt's results on the server costs, against reading them all, in the same
run.

    python -m benchmarks.triage [--agents 100] [--rows 5000]

Starts a server in this process on a fresh datastore and ``velotui-agent --simulate AGENTS`` in
another; hunts a query returning ROWS rows on each agent, through the real ingest path. Then, on
the finished hunt (AGENTS x ROWS rows):

- ``read_all``: every row streamed by ``hunt_results`` (what ``velotui hunt results`` does), the
  baseline;
- ``page``: a page of 200 rows in the middle, unfiltered;
- ``filter_first`` / ``filter_next``: the first page of a text filter (the hunt is read once) and
  a later page of the same filter (from what the first remembered);
- ``drill_down``: the first page of one column's value (the hunt read once);
- ``tally``: a column counted over every row;
- ``query``: ``query_hunt`` counting rows by a column with GROUP BY.

Each figure is the median of a few runs, with its ratio to ``read_all``. It prints one line per
figure and ends with one JSON line. Everything it started is gone when it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    hunt_on_simulated_fleet,
    json_line,
    median,
    say,
)
from velotui.server.datastore import Datastore
from velotui.server.server import Server

RUNS = 3
HUNT_QUERY = ("SELECT _value AS Index,"
              " format(format='proc-%d', args=int(int=_value / 1000)) AS Name,"
              " if(condition=_value < 500, then='root', else='alice') AS User,"
              " format(format='/usr/bin/tool --option=%d', args=_value) AS CommandLine"
              " FROM range(end={rows})")


async def make_hunt(server: Server, folder: Path, agents: int, rows: int,
                    children: list[subprocess.Popen[bytes]]) -> str:
    """A finished hunt whose clients each returned ``rows`` rows."""
    return await hunt_on_simulated_fleet(server, folder, agents, children, "the hunt",
                                         query=HUNT_QUERY.format(rows=rows), max_rows=0)


async def timed(call: Callable[[], Awaitable[Any]], runs: int = RUNS) -> tuple[float, Any]:
    """The median seconds of ``runs`` calls, and the last one's result."""
    seconds = []
    result = None
    for _ in range(runs):
        began = time.perf_counter()
        result = await call()
        seconds.append(time.perf_counter() - began)
    return median(seconds), result


async def run(agents: int, rows: int, folder: Path,
              children: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    figures: dict[str, Any] = {"agents": agents, "rows_per_agent": rows}
    server = Server(Datastore.open(folder / "datastore"), "127.0.0.1:0")
    await server.start()
    try:
        say(f"server on {server.url}; {agents} agents return {rows} rows each")
        hunt_id = await make_hunt(server, folder, agents, rows, children)
        service = server.service("bench")
        total = agents * rows

        async def read_all() -> int:
            counted = 0
            async for event in service.hunt_results(hunt_id):
                counted += len(event["rows"])
            return counted

        async def forget_filters() -> None:
            server.result_matches = type(server.result_matches)()

        async def filter_first() -> Any:
            await forget_filters()
            return await service.hunt_results_page(hunt_id, filter="PROC-3", limit=200)

        async def drill_down() -> Any:
            await forget_filters()
            return await service.hunt_results_page(hunt_id, column="User", value="root",
                                                   limit=200)

        baseline, counted = await timed(read_all)
        assert counted == total, (counted, total)
        figures["read_all_seconds"] = round(baseline, 3)
        say(f"read_all: {total:,} rows streamed in {baseline:.2f} s (the baseline)")
        measured = {
            "page": lambda: service.hunt_results_page(hunt_id, offset=total // 2, limit=200),
            "filter_first": filter_first,
            "filter_next": lambda: service.hunt_results_page(hunt_id, filter="PROC-3",
                                                             offset=agents * 100, limit=200),
            "drill_down": drill_down,
            "tally": lambda: service.tally_hunt_results(hunt_id, "Name"),
            "query": lambda: service.query_hunt(
                hunt_id, "SELECT User, count() AS Rows FROM hunt_results() GROUP BY User"),
        }
        for name, call in measured.items():
            seconds, _result = await timed(call)
            figures[f"{name}_seconds"] = round(seconds, 4)
            figures[f"{name}_vs_read_all"] = round(seconds / baseline, 4)
            say(f"{name}: {seconds:.4f} s ({seconds / baseline:.3f} x read_all)")
    finally:
        await server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5000, help="rows each agent returns")
    args = parser.parse_args()
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="velotui-triage-") as folder:
        try:
            figures = asyncio.run(run(args.agents, args.rows, Path(folder), children))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    print(json_line(figures))


if __name__ == "__main__":
    main()
