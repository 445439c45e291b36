"""How long an estimate holds up the server's event loop, against the loop idle in the same run.

    python -m benchmarks.conditions [--clients N] [--repeat K]

A ticker task sleeps 1 ms at a time and records how long each turn really took. The baseline is
the longest turn while the loop is idle (the machine's own noise); the figure is the longest turn
while ``estimate`` judges N synthetic clients (the default client-side condition and a seed-like
server-side condition). Each of K runs prints both; the last line is JSON with the worst of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from velotui.server.clients import ClientRecord
from velotui.server.conditions import estimate
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION
from velotui.vql import compile_query

SERVER_CONDITION = "SELECT * FROM rows WHERE Fqdn =~ '(?i)web.+' AND 'PROD' IN Labels"


def synthetic_clients(count: int) -> list[ClientRecord]:
    return [
        ClientRecord(
            client_id=f"C.{index:016x}", public_key=b"", first_seen=1.0, last_seen=2.0,
            facts={"OS": "linux" if index % 3 else "windows", "Architecture": "amd64",
                   "Fqdn": f"{'web' if index % 2 else 'db'}{index}.example.com",
                   "Platform": "ubuntu", "Hostname": f"host{index}"},
            agent_labels=["PROD"] if index % 5 else [], operator_labels=[],
        )
        for index in range(count)
    ]


async def longest_turn(work: Any) -> tuple[float, float, int]:
    """(longest ticker turn in seconds, seconds ``work`` took, turns) while awaiting ``work``."""
    turns: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            turns.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await work
    took = time.perf_counter() - started
    running = False
    await task
    return max(turns), took, len(turns)


async def measure(clients: int, repeat: int) -> dict[str, Any]:
    fleet = synthetic_clients(clients)
    compile_query("SELECT 1 FROM scope()")  # the grammar loads once per process, not per estimate
    idle_worst = estimate_worst = 0.0
    for _ in range(repeat):
        idle, _took, _turns = await longest_turn(asyncio.sleep(0.5))
        busy, took, turns = await longest_turn(
            estimate(fleet, DEFAULT_CLIENT_CONDITION, SERVER_CONDITION))
        print(f"idle: longest turn {idle * 1000:.1f} ms; estimate of {clients:,} clients:"
              f" {took * 1000:.0f} ms, {turns} turns, longest {busy * 1000:.1f} ms")
        idle_worst, estimate_worst = max(idle_worst, idle), max(estimate_worst, busy)
    result = {"clients": clients, "idle_longest_turn_ms": round(idle_worst * 1000, 1),
              "estimate_longest_turn_ms": round(estimate_worst * 1000, 1)}
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conditions")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    return asyncio.run(measure(args.clients, args.repeat))


if __name__ == "__main__":
    main()
