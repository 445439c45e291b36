"""How fast ``protocol.decode`` turns a 1,000-row frame into a message.

Run: ``.venv/bin/python benchmarks/protocol_decode.py``. Prints, for a flat row shape (the one the
ingest benchmark sends) and a process-listing shape with nested values, the best time of several
runs per frame and the rows decoded per second. Decoding runs for every frame an agent sends, so
the checks at the edge must stay cheap.
"""

from __future__ import annotations

import time

from velotui.wire import protocol

ROWS_PER_FRAME = 1000
REPEATS = 7
FRAMES_PER_REPEAT = 50


def flat_rows() -> list[dict]:
    return [{"N": n, "Pad": "x" * 64} for n in range(ROWS_PER_FRAME)]


def process_rows() -> list[dict]:
    return [
        {
            "Pid": 1000 + n,
            "Ppid": 1,
            "Name": f"process-{n}",
            "CommandLine": f"/usr/bin/process-{n} --flag value --other {n}",
            "Username": "root",
            "CreateTime": 1_700_000_000.5 + n,
            "Memory": {"Rss": 12_345_678 + n, "Vms": 98_765_432, "Shared": 1024},
            "Args": ["--flag", "value", "--other", str(n)],
            "Exe": None,
            "Running": True,
        }
        for n in range(ROWS_PER_FRAME)
    ]


def seconds_per_frame(frame: bytes) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(FRAMES_PER_REPEAT):
            protocol.decode(frame, sender="agent")
        best = min(best, (time.perf_counter() - began) / FRAMES_PER_REPEAT)
    return best


def main() -> None:
    for name, rows in (("flat", flat_rows()), ("process", process_rows())):
        frame = protocol.encode(protocol.Rows(flow_id="F.1", seq=1, rows=rows))
        seconds = seconds_per_frame(frame)
        print(f"{name:8} {len(frame):>8} bytes/frame  {seconds * 1e3:7.3f} ms/frame"
              f"  {ROWS_PER_FRAME / seconds:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
