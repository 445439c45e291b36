"""Measure: how much of an artifact library (Velociraptor's) loads and collects here.

``python -m benchmarks.artifact_compat DIR [--timeout S] [--only REGEX] [--no-run]`` loads every
definition under DIR as ``velotui artifacts import`` would (the built-in library below them), then
takes the Linux and Generic CLIENT artifacts (its top folders ``Linux`` and ``Generic``; not events,
not server ones) and for each:

1. *loads*: the definition loads and every artifact it calls or imports is found;
2. *known*: no plugin, function or argument it (or anything it calls) uses is unknown to the
   agent's registry, read from the parsed queries (so code behind a false precondition counts);
3. *collects*: compiling it and running it on this machine (at most ``--timeout`` seconds) meets
   no unknown plugin or function and no refused argument.

An artifact is compatible when all three hold; *clean* when, besides, no variable or column it
reads was missing while it ran (a plugin's row without a column Velociraptor's has, say). One
line per artifact that is not, the names missing most often, and last a JSON line:
``{"targets", "loaded", "known", "collected", "compatible", "compatible_share", "clean",
"missing"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from velotui.artifacts import (
    Artifact,
    ArtifactError,
    ArtifactRequest,
    CompileError,
    Library,
    compile_collection,
)
from velotui.artifacts.compiler import dependencies
from velotui.artifacts.library import definition_files, load_file
from velotui.vql import UnknownName, ast, compile_query, parse, run
from velotui.vql.registry import Registry

TARGET_FOLDERS = ("Linux", "Generic")
_ARGUMENT_ERROR = re.compile(r"unexpected argument|missing required argument")


@dataclasses.dataclass
class Verdict:
    name: str
    loaded: bool = False
    unknown: list[str] = dataclasses.field(default_factory=list)
    run_errors: list[str] = dataclasses.field(default_factory=list)
    symbols: list[str] = dataclasses.field(default_factory=list)  # unknown variables, columns
    rows: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def compatible(self) -> bool:
        return self.loaded and not self.unknown and not self.run_errors


def _callee(registry: Registry, kind: str, name: str) -> Any:
    layer: Registry | None = registry
    while layer is not None:
        table = layer._plugins if kind == "plugin" else layer._functions
        if name in table:
            return table[name]
        layer = layer.parent
    return None


def _walk(node: Any):
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        yield node
        for field in dataclasses.fields(node):
            yield from _walk(getattr(node, field.name))


def unknown_names(texts: list[str], registry: Registry, defined: set[str]) -> list[str]:
    """Plugins, functions and arguments the texts use that the registry lacks (static)."""
    missing: list[str] = []
    statements = [s for text in texts if text.strip() for s in parse(text)]
    names = set(defined)
    for statement in statements:
        for node in _walk(statement):
            name = getattr(node, "name", None)
            if type(node).__name__ in ("Let", "LetStatement") and isinstance(name, str):
                names.add(name)
    for statement in statements:
        for node in _walk(statement):
            if isinstance(node, ast.Call):
                kind, args = "function", node.args
            elif isinstance(node, ast.Source) and node.args is not None:
                kind, args = "plugin", node.args
            else:
                continue
            if node.name in names or node.name.startswith("Artifact."):
                continue
            callee = _callee(registry, kind, node.name)
            if callee is None:
                missing.append(f"{kind} {node.name}")
                continue
            if not callee.accepts_any:
                missing += [f"argument {node.name}({arg.name}=)" for arg in args
                            if arg.name not in callee.parameters]
    return sorted(set(missing))


def _texts(artifact: Artifact) -> list[str]:
    texts = [artifact.export, artifact.precondition]
    for source in artifact.sources:
        texts += [source.query, source.precondition]
    return texts


async def _collect(library: Library, artifact: Artifact, registry: Registry, timeout: float,
                   verdict: Verdict) -> None:
    collection = compile_collection(library, [ArtifactRequest(artifact.name)])
    program = compile_query(collection.query, registry)

    def on_log(level: str, message: str) -> None:
        if _ARGUMENT_ERROR.search(message):
            verdict.run_errors.append(message)

    def on_unknown(name: UnknownName) -> None:
        if name.kind in ("function", "plugin"):
            verdict.run_errors.append(name.message)
        else:
            verdict.symbols.append(name.message)

    async def drain() -> None:
        async for _row in run(program, registry=registry, on_log=on_log,
                              on_unknown=on_unknown):
            verdict.rows += 1

    try:
        await asyncio.wait_for(drain(), timeout)
    except TimeoutError:
        verdict.note = f"stopped after {timeout:g} s"


def _is_target(path: Path, root: Path) -> bool:
    relative = path.relative_to(root)
    if relative.parts[0] not in TARGET_FOLDERS:
        return False
    try:
        kind = str((yaml.safe_load(path.read_text()) or {}).get("type") or "CLIENT")
    except (yaml.YAMLError, OSError, AttributeError):
        return True  # a target that will fail to load, and be counted so
    return kind.upper() == "CLIENT"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--only", default="", help="only artifacts whose name matches")
    parser.add_argument("--no-run", action="store_true", help="static checks only")
    args = parser.parse_args()

    from agent.plugins import client_registry

    registry = client_registry()
    loaded: list[Artifact] = []
    load_errors: dict[Path, str] = {}
    for path in definition_files(args.folder):
        try:
            loaded.append(load_file(path))
        except ArtifactError as error:
            load_errors[path] = error.reason
    library = Library.builtin().layered(loaded)
    by_origin = {Path(a.origin): a for a in loaded}
    verdicts: list[Verdict] = []
    missing: Counter[str] = Counter()
    for path in definition_files(args.folder):
        if not _is_target(path, args.folder):
            continue
        artifact = by_origin.get(path)
        verdict = Verdict(name=artifact.name if artifact else str(path))
        if args.only and not re.search(args.only, verdict.name):
            continue
        verdicts.append(verdict)
        if artifact is None:
            verdict.note = f"does not load: {load_errors.get(path)}"
            continue
        try:
            reached = dependencies(library, [artifact])
        except CompileError as error:
            verdict.note = str(error)
            continue
        verdict.loaded = True
        defined = {p.name for a in reached for p in a.parameters}
        verdict.unknown = unknown_names([t for a in reached for t in _texts(a)], registry,
                                        defined)
        missing.update(verdict.unknown)
        if args.no_run or not artifact.sources:
            continue
        started = time.monotonic()
        try:
            asyncio.run(_collect(library, artifact, registry, args.timeout, verdict))
        except Exception as error:  # measured and reported, not hidden
            verdict.run_errors.append(f"{type(error).__name__}: {error}")
        verdict.seconds = round(time.monotonic() - started, 2)
        print(f"{verdict.name}: {verdict.rows} rows in {verdict.seconds} s"
              f"{' (' + verdict.note + ')' if verdict.note else ''}", file=sys.stderr,
              flush=True)

    for verdict in verdicts:
        if not verdict.compatible:
            reasons = verdict.unknown + verdict.run_errors[:3] + ([verdict.note]
                                                                   if verdict.note else [])
            print(f"NOT {verdict.name}: {'; '.join(reasons)}")
        elif verdict.symbols:
            print(f"UNCLEAN {verdict.name}: {'; '.join(sorted(set(verdict.symbols))[:3])}")
    for name, count in missing.most_common(40):
        print(f"missing {count:3d} {name}")
    compatible = sum(v.compatible for v in verdicts)
    print(json.dumps({
        "targets": len(verdicts),
        "loaded": sum(v.loaded for v in verdicts),
        "known": sum(v.loaded and not v.unknown for v in verdicts),
        "collected": sum(v.loaded and not v.run_errors for v in verdicts),
        "compatible": compatible,
        "compatible_share": round(compatible / len(verdicts), 3) if verdicts else 0.0,
        "clean": sum(v.compatible and not v.symbols for v in verdicts),
        "missing": dict(missing.most_common(20)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
