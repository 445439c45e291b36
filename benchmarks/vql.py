"""Benchmark: the engine filtering rows against a hand-written Python loop doing the same.

``python -m benchmarks.vql [--rows N] [--repeat K]`` prints both rates and their ratio, and
ends with one JSON line ``{"engine_rows_per_s": ..., "loop_rows_per_s": ..., "ratio": ...}``
(ratio = loop rate / engine rate; lower is better, the target is at most 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from typing import Any

from velotui.vql.engine import collect, compile_query

QUERY = "SELECT Name, Size FROM rows WHERE Name =~ 'x.+y' AND Size > 1000"


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


def hand_written_filter(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an engineer would write instead of the query."""
    search = re.compile("x.+y", re.IGNORECASE).search
    return [
        {"Name": row["Name"], "Size": row["Size"]}
        for row in rows
        if search(row["Name"]) and row["Size"] > 1000
    ]


def best_of(repeat: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vql")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best is kept")
    args = parser.parse_args(argv)

    rows = make_rows(args.rows)
    program = compile_query(QUERY)
    expected = hand_written_filter(rows)
    engine_result = asyncio.run(collect(program, env={"rows": rows}))
    if engine_result != expected:
        raise SystemExit("the engine and the loop disagree; the benchmark would be meaningless")

    # Alternate the two so that a noisy neighbour hurts both alike.
    engine_best = loop_best = float("inf")
    for _ in range(args.repeat):
        engine_best = min(
            engine_best, best_of(1, lambda: asyncio.run(collect(program, env={"rows": rows})))
        )
        loop_best = min(loop_best, best_of(1, lambda: hand_written_filter(rows)))

    engine_rate = args.rows / engine_best
    loop_rate = args.rows / loop_best
    ratio = loop_rate / engine_rate
    print(f"query:  {QUERY}")
    print(f"rows:   {args.rows:,} ({len(expected):,} match)")
    print(f"engine: {engine_rate:,.0f} rows/s")
    print(f"loop:   {loop_rate:,.0f} rows/s")
    print(f"ratio:  {ratio:.2f}x (loop rate / engine rate; target <= 5)")
    result = {
        "engine_rows_per_s": round(engine_rate),
        "loop_rows_per_s": round(loop_rate),
        "ratio": round(ratio, 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
