"""How fast ``protocol.decode`` turns a 1,000-row frame into a message.

    python benchmarks/protocol_decode.py [--baseline OLD/velotui/wire/protocol.py]

For a flat row shape (the one the ingest benchmark sends) and a process-listing shape with a
nested map and list in each row, prints the best CPU time per frame of this process over several
runs (the machines are shared: CPU time, best of many) and the rows decoded per second. With
``--baseline``, that other version of the protocol module is timed in the same process, in
turns with this one, and the ratio is printed: a comparison made across processes or minutes on
a shared machine says more about the machine than about the code. Decoding runs for every frame
an agent sends, so the checks at the edge must stay cheap.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

from velotui.wire import protocol

ROWS_PER_FRAME = 1000
ROUNDS = 40
FRAMES_PER_ROUND = 20


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


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_protocol", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_protocol"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def best_seconds(modules: dict[str, ModuleType], frame: bytes) -> dict[str, float]:
    """The best CPU seconds per frame for each module, timed in turns."""
    best = dict.fromkeys(modules, float("inf"))
    for _ in range(ROUNDS):
        for name, module in modules.items():
            began = time.process_time()
            for _ in range(FRAMES_PER_ROUND):
                module.decode(frame, "agent")
            best[name] = min(best[name], (time.process_time() - began) / FRAMES_PER_ROUND)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another protocol.py to compare with")
    args = parser.parse_args()
    modules = {"this": protocol}
    if args.baseline is not None:
        modules = {"baseline": load_module(args.baseline), **modules}
    for shape, rows in (("flat", flat_rows()), ("process", process_rows())):
        frame = protocol.encode(protocol.Rows(flow_id="F.1", seq=1, rows=rows))
        best = best_seconds(modules, frame)
        figures = "  ".join(f"{name} {seconds * 1e3:6.3f} ms/frame"
                            f" ({ROWS_PER_FRAME / seconds:>10,.0f} rows/s)"
                            for name, seconds in best.items())
        ratio = f"  ratio {best['this'] / best['baseline']:.2f}" if "baseline" in best else ""
        print(f"{shape:8} {len(frame):>7} bytes  {figures}{ratio}")


if __name__ == "__main__":
    main()
