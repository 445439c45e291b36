"""Measure: every built-in artifact collected on this machine, as ``velotui artifacts collect``
does it.

``python -m benchmarks.artifact_library [--timeout S] [--only REGEX]`` runs each artifact of
the built-in library (its defaults) with the agent's plugins, uploads kept in a temporary folder
as ``--output`` would keep them, and prints one line per artifact: rows per
source or "nothing found", the errors it logged, and the time. Last, a JSON line:
``{"artifacts", "with_rows", "nothing_found", "with_errors", "errors"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from velotui.artifacts import SOURCE_COLUMN, ArtifactRequest, Library, compile_collection
from velotui.vql import UnknownName, compile_query, run


async def _collect(library: Library, name: str, timeout: float, uploads: Path
                   ) -> tuple[Counter[str], list[str], str]:
    from agent.plugins import client_registry
    from agent.plugins.folder_uploads import FolderUploader
    from agent.plugins.upload import UPLOADER_SERVICE

    registry = client_registry()
    collection = compile_collection(library, [ArtifactRequest(name)], kind=None)
    program = compile_query(collection.query, registry)
    counts: Counter[str] = Counter({label: 0 for label in collection.sources})
    errors: list[str] = []

    def on_log(level: str, message: str) -> None:
        if level.upper() == "ERROR":
            errors.append(message)

    def on_unknown(unknown: UnknownName) -> None:
        errors.append(unknown.message)

    async def drain() -> None:
        async for row in run(program, registry=registry, on_log=on_log, on_unknown=on_unknown,
                             services={UPLOADER_SERVICE: FolderUploader(uploads)}):
            counts[str(row.get(SOURCE_COLUMN))] += 1

    note = ""
    try:
        await asyncio.wait_for(drain(), timeout)
    except TimeoutError:
        note = f"stopped after {timeout:g} s"
    return counts, errors, note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    library = Library.builtin()
    with_rows = nothing = with_errors = 0
    total_errors = 0
    for artifact in library:
        if args.only and not re.search(args.only, artifact.name):
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as uploads:  # as `collect --output DIR` keeps them
            counts, errors, note = asyncio.run(_collect(library, artifact.name, args.timeout,
                                                        Path(uploads)))
        seconds = time.monotonic() - started
        found = {label: count for label, count in counts.items() if count}
        if found:
            with_rows += 1
            what = ", ".join(f"{label}: {count} rows" for label, count in found.items())
        else:
            nothing += 1
            what = "nothing found"
        if errors:
            with_errors += 1
            total_errors += len(errors)
        print(f"{artifact.name}: {what} ({seconds:.1f} s)"
              f"{'; ' + note if note else ''}"
              f"{''.join(f'{chr(10)}  error: {e}' for e in errors[:3])}", flush=True)
    print(json.dumps({"artifacts": with_rows + nothing, "with_rows": with_rows,
                      "nothing_found": nothing, "with_errors": with_errors,
                      "errors": total_errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
