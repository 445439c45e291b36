"""Benchmark: the engine against hand-written Python loops doing the same work, in three shapes.

``python -m benchmarks.vql [--rows N] [--repeat K]`` runs, in one process:

- ``list``: ``SELECT Name, Size FROM rows WHERE Name =~ 'x.+y' AND Size > 1000`` over rows held in
  memory; the loop filters the same list with a comprehension.
- ``plugin``: the same filter over rows from a plugin (an async generator registered with the
  registry, as every agent query's rows are); the loop consumes the same async generator with
  ``async for`` and filters by hand.
- ``alias``: ``SELECT Name, Size, Size * 2 AS Double FROM rows WHERE Double > 2000 AND ...``, an
  alias used in WHERE; the loop computes ``Double`` by hand, once a row.

The engine is read the way the agent and the server read it: ``async for row in run(...)``. Its
rows must equal the loop's, or the run stops. It prints each shape's rates and ratio (loop rate
/ engine rate; lower is better, the target is at most 5) and ends with one JSON line holding
``list_ratio``, ``plugin_ratio``, ``alias_ratio`` and the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from velotui.vql.engine import compile_query, default_registry, run
from velotui.vql.registry import Registry

FILTER = "Name =~ 'x.+y' AND Size > 1000"
LIST_QUERY = f"SELECT Name, Size FROM rows WHERE {FILTER}"
PLUGIN_QUERY = f"SELECT Name, Size FROM files() WHERE {FILTER}"
ALIAS_QUERY = (
    "SELECT Name, Size, Size * 2 AS Double FROM rows WHERE Double > 2000 AND Name =~ 'x.+y'"
)
TARGET = 5.0


def make_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Rows like a file listing: names from a small alphabet, so some match 'x.+y'."""
    rng = random.Random(seed)
    letters = "abcdefxyz"
    return [
        {
            "Name": "".join(rng.choice(letters) for _ in range(rng.randint(4, 12))) + ".txt",
            "Size": rng.randint(0, 4000),
            "Mode": "-rw-r--r--",
        }
        for _ in range(count)
    ]


def file_listing(rows: list[dict[str, Any]]) -> Callable[..., AsyncIterator[dict[str, Any]]]:
    """A plugin yielding ``rows`` one at a time, as a listing plugin does."""

    async def files(scope: Any) -> AsyncIterator[dict[str, Any]]:
        for row in rows:
            yield row

    return files


# What an engineer would write instead of each query ---------------------------------------------

_search = re.compile("x.+y", re.IGNORECASE).search


def list_loop(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    search = _search
    return [
        {"Name": row["Name"], "Size": row["Size"]}
        for row in rows
        if search(row["Name"]) and row["Size"] > 1000
    ]


async def plugin_loop(plugin: Callable[..., AsyncIterator[dict[str, Any]]]) -> list[dict]:
    search = _search
    out = []
    async for row in plugin(None):
        if search(row["Name"]) and row["Size"] > 1000:
            out.append({"Name": row["Name"], "Size": row["Size"]})
    return out


def alias_loop(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    search = _search
    out = []
    for row in rows:
        double = row["Size"] * 2
        if double > 2000 and search(row["Name"]):
            out.append({"Name": row["Name"], "Size": row["Size"], "Double": double})
    return out


async def engine_rows(query: Any, registry: Registry, env: dict[str, Any]) -> list[dict]:
    """The rows of ``query``, read one by one as the agent reads them."""
    out = []
    async for row in run(query, registry=registry, env=env):
        out.append(row)
    return out


@dataclass
class Shape:
    name: str
    query: str
    engine: Callable[[], list[dict]]
    loop: Callable[[], list[dict]]


def shapes(rows: list[dict[str, Any]]) -> list[Shape]:
    plugin = file_listing(rows)
    registry = default_registry()
    registry.plugin(plugin, name="files")
    env = {"rows": rows}
    programs = {q: compile_query(q, registry) for q in (LIST_QUERY, PLUGIN_QUERY, ALIAS_QUERY)}

    def engine(query: str) -> Callable[[], list[dict]]:
        return lambda: asyncio.run(engine_rows(programs[query], registry, env))

    return [
        Shape("list", LIST_QUERY, engine(LIST_QUERY), lambda: list_loop(rows)),
        Shape(
            "plugin", PLUGIN_QUERY, engine(PLUGIN_QUERY), lambda: asyncio.run(plugin_loop(plugin))
        ),
        Shape("alias", ALIAS_QUERY, engine(ALIAS_QUERY), lambda: alias_loop(rows)),
    ]


def timed(fn: Callable[[], Any]) -> float:
    """CPU seconds ``fn`` took: both sides are pure computation, and on a shared machine the
    time others take from this process would otherwise count against whichever side it hit."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vql")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each; the best is kept")
    args = parser.parse_args(argv)

    rows = make_rows(args.rows)
    result: dict[str, float] = {}
    print(f"rows: {args.rows:,}; ratio = loop rate / engine rate (target <= {TARGET:g})")
    for shape in shapes(rows):
        expected = shape.loop()
        if shape.engine() != expected:
            raise SystemExit(f"{shape.name}: the engine and the loop disagree; no benchmark")
        # Alternate the two so that a noisy neighbour hurts both alike.
        engine_best = loop_best = float("inf")
        for _ in range(args.repeat):
            engine_best = min(engine_best, timed(shape.engine))
            loop_best = min(loop_best, timed(shape.loop))
        engine_rate = args.rows / engine_best
        loop_rate = args.rows / loop_best
        ratio = loop_rate / engine_rate
        print(f"\n{shape.name}: {shape.query}  ({len(expected):,} rows match)")
        print(f"  engine: {engine_rate:>12,.0f} rows/s")
        print(f"  loop:   {loop_rate:>12,.0f} rows/s")
        print(f"  ratio:  {ratio:>12.2f}x")
        result[f"{shape.name}_ratio"] = round(ratio, 3)
        result[f"{shape.name}_engine_rows_per_s"] = round(engine_rate)
        result[f"{shape.name}_loop_rows_per_s"] = round(loop_rate)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
