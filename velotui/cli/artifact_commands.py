"""``velotui artifacts ...``: list, show and collect artifacts here, and import definitions into
a server's library.

``list``, ``show`` and ``collect`` read the library on this machine: the built-in definitions,
those imported into the datastore (``--datastore``, or the default one when it exists), and any
``--definitions DIR``. ``import`` sends definitions to the server, which checks and keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from velotui.artifacts import (
    SOURCE_COLUMN,
    ArtifactError,
    CompileError,
    Library,
    compile_collection,
    requests_from_parameters,
)
from velotui.artifacts.library import definition_files, load_file
from velotui.cli.client_commands import run_remote
from velotui.cli.connection import add_datastore_option, add_server_options
from velotui.cli.output import FORMATS, render_table, write_rows
from velotui.server.artifact_library import builtin_library
from velotui.server.datastore import default_datastore_path
from velotui.server.remote import RemoteService
from velotui.vql import UnknownName, VQLSyntaxError, compile_query, run


def add_parsers(subparsers: Any) -> None:
    artifacts = subparsers.add_parser(
        "artifacts", help="list, show, collect and import artifacts",
        description="Artifacts are named, parameterised collections in Velociraptor's YAML "
        "format.")
    actions = artifacts.add_subparsers(dest="artifacts_command", metavar="ACTION",
                                       required=True)

    listing = actions.add_parser("list", help="the library's artifacts (name and summary)")
    listing.add_argument("regex", nargs="?", default="",
                         help="only names or descriptions matching this (any case)")
    listing.add_argument("--json", action="store_true", help="one JSON object per artifact")
    _add_library_options(listing)
    listing.set_defaults(handler=list_artifacts)

    show = actions.add_parser("show", help="one artifact's definition")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--vql", action="store_true",
                      help="print the VQL a collection of it sends instead")
    _add_library_options(show)
    show.set_defaults(handler=show_artifact)

    collect = actions.add_parser(
        "collect", help="run artifacts on this machine, like velociraptor artifacts collect")
    collect.add_argument("names", nargs="+", metavar="NAME")
    collect.add_argument("--param", action="append", default=[], metavar="K=V",
                         help="a parameter (NAME.K=V for one artifact only); repeatable")
    collect.add_argument("--format", choices=FORMATS, default="jsonl")
    collect.add_argument("--label", action="append", default=[],
                         help="labels for config.Client_labels, as an agent would have them")
    collect.add_argument("--output", type=Path, metavar="DIR",
                         help="keep the files the artifacts upload in DIR/uploads/")
    _add_library_options(collect)
    collect.set_defaults(handler=collect_artifacts)

    importing = actions.add_parser(
        "import", help="add definitions to the server's library (checked, audited)")
    importing.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_FOLDER")
    importing.add_argument("--json", action="store_true")
    add_server_options(importing)
    importing.set_defaults(handler=lambda args: _import_handler(args))


def _add_library_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--definitions", action="append", type=Path, default=[],
                        metavar="DIR", help="add a folder (or file) of definitions, for this "
                        "command only; repeatable")
    add_datastore_option(parser)


def local_library(args: argparse.Namespace) -> Library:
    """The built-in definitions, the datastore's imported ones, then ``--definitions``.
    Raises ArtifactError for a definition that does not load."""
    datastore = args.datastore if args.datastore is not None else default_datastore_path()
    imported = datastore / "artifacts"
    extra = [load_file(p) for p in definition_files(imported)] if imported.is_dir() else []
    library = builtin_library().layered(extra)
    for folder in args.definitions:
        library.add_folder(folder)
    return library


def _fail(args: argparse.Namespace, message: str, status: int = 1) -> int:
    print(f"velotui artifacts {args.artifacts_command}: {message}", file=sys.stderr)
    return status


def list_artifacts(args: argparse.Namespace) -> int:
    try:
        found = local_library(args).search(args.regex)
    except ArtifactError as error:
        return _fail(args, str(error))
    except re.error as error:
        return _fail(args, f"{args.regex!r} is not a regular expression: {error}", 2)
    # A closed pipe (`velotui artifacts list | head`) ends quietly: see cli.main.
    if args.json:
        for artifact in found:
            print(json.dumps(artifact.summary()))
    elif not found:
        print("no artifact matches", file=sys.stderr)
    else:
        sys.stdout.write(render_table(
            [{"name": a.name, "type": a.type,
              "description": (a.description.strip().splitlines() or [""])[0]}
             for a in found],
            max_width=None if not sys.stdout.isatty() else 160))
    return 0


def show_artifact(args: argparse.Namespace) -> int:
    try:
        library = local_library(args)
        artifact = library.get(args.name)
        if args.vql:
            text = compile_collection(library, [_request(library, artifact.name, [])],
                                      kind=None).query
        else:
            text = artifact.text
    except (ArtifactError, CompileError, LookupError) as error:
        return _fail(args, str(error.args[0] if isinstance(error, LookupError) else error))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _request(library: Library, name: str, parameters: list[str]) -> Any:
    return requests_from_parameters(library, [name], parameters)[0]


def collect_artifacts(args: argparse.Namespace) -> int:
    from agent.plugins import client_registry

    try:
        library = local_library(args)
        requests = requests_from_parameters(library, args.names, args.param)
        collection = compile_collection(library, requests, kind=None)
    except (ArtifactError, CompileError) as error:
        return _fail(args, str(error), 2)
    registry = client_registry(labels=args.label)
    try:
        program = compile_query(collection.query, registry)
    except VQLSyntaxError as error:
        return _fail(args, f"the compiled collection does not parse: {error}")
    errors: list[str] = []
    counts: dict[str, int] = dict.fromkeys(collection.sources, 0)

    def on_log(level: str, message: str) -> None:
        if level.upper() == "ERROR":
            errors.append(message)
        print(f"[{level}] {message}", file=sys.stderr, flush=True)

    def on_unknown(name: UnknownName) -> None:
        errors.append(name.message)

    services: dict[str, Any] = {}
    if args.output is not None:
        from agent.plugins.folder_uploads import FolderUploader
        from agent.plugins.upload import UPLOADER_SERVICE

        services[UPLOADER_SERVICE] = FolderUploader(args.output)

    async def counted() -> AsyncIterator[dict[str, Any]]:
        async for row in run(program, registry=registry, on_log=on_log, on_unknown=on_unknown,
                             services=services):
            source = row.get(SOURCE_COLUMN)
            if source in counts:
                counts[source] += 1
            yield row

    asyncio.run(write_rows(counted(), args.format, sys.stdout))  # a closed pipe: cli.main
    for source, count in counts.items():
        if not count:
            print(f"{source}: nothing found", file=sys.stderr)
    return 1 if errors else 0


def _import_handler(args: argparse.Namespace) -> int:
    try:
        files = [file for path in args.paths for file in _existing_files(path)]
        definitions = [{"origin": str(f), "text": load_file(f).text} for f in files]
    except ArtifactError as error:
        print(f"velotui artifacts import: {error}", file=sys.stderr)
        return 1
    if not definitions:
        print("velotui artifacts import: no .yaml files found", file=sys.stderr)
        return 1
    args.definition_items = definitions
    return run_remote(args, import_definitions)


def _existing_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ArtifactError(str(path), 1, "no such file or folder")
    return definition_files(path)


async def import_definitions(remote: RemoteService, args: argparse.Namespace) -> int:
    result = await remote.import_artifacts(definitions=args.definition_items)
    if args.json:
        print(json.dumps(result))
    else:
        for name in result["imported"]:
            print(f"imported {name}")
    return 0
