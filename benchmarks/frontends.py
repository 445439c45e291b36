"""Several frontends on PostgreSQL beside one on SQLite, measured the same way in the same run
(``python -m benchmarks.server --database postgresql://... --frontends K --agents N``).

Each side is real processes: ``velotui serve`` frontends (one on a SQLite datastore; K on a
datastore whose database is the given PostgreSQL, sharing its folder), and a simulated fleet
(``velotui-agent --simulate``) whose agents list every frontend and start at a random one. Then,
through the operator API as an operator would:

* ``hunt_seconds``: a hunt (``SELECT Hostname FROM info()``, no rate) created on the first
  frontend, from its creation until every agent has an outcome (read on the last frontend);
* ``ingest_rows_per_s``: a hunt of ``--ingest-rows`` rows on ``--ingest-clients`` clients (its
  client limit), rows stored / seconds from its creation until every recruited client
  finished. Unlike the single-server benchmark's ingest phase this includes running the query
  on the simulated agents, on this machine's cores, for both sides alike.

``ratios`` divides the PostgreSQL figures by the SQLite ones (hunt: below 1 is faster; ingest:
above 1 is faster).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, say, start_process, stop_process
from velotui.server.datastore import Datastore
from velotui.server.remote import RemoteService

HUNT_QUERY = "SELECT Hostname FROM info()"
INGEST_QUERY = "SELECT _value AS N, '{pad}' AS Pad FROM range(end={rows})"
PAD = "x" * 90
FINAL = ("not_matched", "completed", "results", "errors")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _velotui(*args: str) -> list[str]:
    return [sys.executable, "-m", "velotui.cli", *args]


async def _until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def measure(root: Path, database_url: str | None, frontends: int, agents: int,
                  ingest_clients: int, ingest_rows: int, per_process: int, timeout: float,
                  children: list[subprocess.Popen[Any]]) -> dict[str, Any]:
    """The figures of one side: ``frontends`` servers on ``database_url`` (None: SQLite)."""
    from benchmarks.server import Fleet  # the server benchmark's fleet of simulated agents

    root.mkdir(parents=True)
    datastore = Datastore.open(root / "datastore")
    if database_url is not None:
        datastore.set_database_url(database_url)
    urls = []
    servers = []
    for index in range(frontends):
        port = _free_port()
        urls.append(f"wss://127.0.0.1:{port}")
        servers.append(start_process(
            _velotui("serve", "--datastore", str(datastore.root), "--listen",
                     f"127.0.0.1:{port}"), root / f"frontend-{index}.log", children=children))

        async def listening(url: str = urls[-1]) -> bool:
            return url in datastore.frontend_addresses()

        await _until(listening, 120, f"frontend {index} to listen")
    config = root / "agent.json"
    written = subprocess.run(
        _velotui("agent-config", "--datastore", str(datastore.root),
                 *[arg for url in urls for arg in ("--server", url)], "-o", str(config)),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if written.returncode != 0:
        raise BenchmarkError(f"velotui agent-config failed: {written.stderr.strip()}")
    apis = [await RemoteService.connect(url, datastore.api_token(), datastore.ca_pem())
            for url in urls]
    fleet = Fleet("fleet", config, root, children)
    figures: dict[str, Any] = {"frontends": frontends,
                               "database": "postgresql" if database_url else "sqlite"}
    try:
        fleet.start(agents, per_process)

        async def online() -> list[int] | None:
            each = [(await api.server_info())["online"] for api in apis]
            return each if sum(each) >= agents else None

        began = time.monotonic()
        figures["agents_per_frontend"] = await _until(online, timeout, "the fleet online")
        figures["connect_seconds"] = time.monotonic() - began
        say(f"  {agents} agents online: {figures['agents_per_frontend']}")

        figures["hunt_seconds"], _ = await _timed_hunt(apis, agents, timeout,
                                                       query=HUNT_QUERY)
        say(f"  hunt on {agents} agents: {figures['hunt_seconds']:.2f} s")
        if ingest_clients:
            seconds, hunt = await _timed_hunt(
                apis, ingest_clients, timeout, limit=ingest_clients,
                query=INGEST_QUERY.format(pad=PAD, rows=ingest_rows))
            stored = hunt["counts"]["results"] * ingest_rows
            figures["ingest_seconds"] = seconds
            figures["ingest_rows_per_s"] = stored / seconds
            say(f"  ingest: {stored} rows in {seconds:.2f} s")
    finally:
        for api in apis:
            await api.close()
        await fleet.stop()
        for server in servers:
            await stop_process(server)
    return figures


async def _timed_hunt(apis: list[RemoteService], clients: int, timeout: float,
                      **hunt: Any) -> tuple[float, dict[str, Any]]:
    began = time.monotonic()
    created = await apis[0].create_hunt(start=True, timeout=600, **hunt)

    async def finished() -> dict[str, Any] | None:
        described = await apis[-1].get_hunt(hunt_id=created["hunt_id"])
        counts = described["counts"]
        done = (sum(counts[q] for q in FINAL) >= clients and not counts["running"]
                and not described["checking"])
        return described if done else None

    described = await _until(finished, timeout, f"hunt {created['hunt_id']}")
    return time.monotonic() - began, described


async def run_frontends(database_url: str, frontends: int, agents: int, ingest_clients: int,
                        ingest_rows: int, per_process: int, timeout: float, folder: Path,
                        children: list[subprocess.Popen[Any]]) -> dict[str, Any]:
    """Both sides, SQLite first; the figures as one JSON-able dict."""
    say(f"one frontend on SQLite, {agents} agents")
    sqlite = await measure(folder / "sqlite", None, 1, agents, ingest_clients, ingest_rows,
                           per_process, timeout, children)
    say(f"{frontends} frontends on PostgreSQL, {agents} agents")
    postgresql = await measure(folder / "postgresql", database_url, frontends, agents,
                               ingest_clients, ingest_rows, per_process, timeout, children)
    ratios = {"hunt_seconds": postgresql["hunt_seconds"] / sqlite["hunt_seconds"]}
    if ingest_clients:
        ratios["ingest_rows_per_s"] = (postgresql["ingest_rows_per_s"]
                                       / sqlite["ingest_rows_per_s"])
    return {"agents": agents, "ingest_clients": ingest_clients, "ingest_rows": ingest_rows,
            "sqlite_1": sqlite, f"postgresql_{frontends}": postgresql, "ratios": ratios}


def print_frontends(values: dict[str, Any]) -> None:
    """The human-readable lines, then the JSON line."""
    for side, figures in values.items():
        if isinstance(figures, dict) and "frontends" in figures:
            ingest = figures.get("ingest_rows_per_s")
            say(f"{side}: hunt {figures['hunt_seconds']:.2f} s"
                + (f", ingest {ingest:,.0f} rows/s" if ingest else ""))
    ratios = values["ratios"]
    say(f"PostgreSQL / SQLite: hunt time x{ratios['hunt_seconds']:.2f}"
        + (f", ingest x{ratios['ingest_rows_per_s']:.2f}" if "ingest_rows_per_s" in ratios
           else ""))
    print(json.dumps(values))
