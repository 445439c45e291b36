"""A collection given as artifacts on the command line (``--artifact``, ``--param``,
``--definitions``), shared by ``velotui hunt create`` and ``velotui collect``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from velotui.artifacts import ArtifactError
from velotui.artifacts.library import definition_files, load_file
from velotui.artifacts.requests import RequestError, requests_for
from velotui.cli.connection import UsageError
from velotui.server.remote import RemoteService


def add_artifact_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", action="append", default=[], metavar="NAME",
                        help="the collection to run, as an artifact; repeatable")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="an artifact parameter (NAME.K=V for one artifact only)")
    parser.add_argument("--definitions", action="append", type=Path, default=[], metavar="DIR",
                        help="send a folder (or file) of artifact definitions along")


def collection_problem(query: str | None, args: argparse.Namespace, query_option: str
                       ) -> str | None:
    """What is wrong with how a collection was given (a query or artifacts), if anything."""
    if bool(query) == bool(args.artifact):
        return f"give the collection with {query_option} or with --artifact NAME"
    if (args.param or args.definitions) and not args.artifact:
        return "--param and --definitions go with --artifact"
    return None


async def artifact_collection(remote: RemoteService, args: argparse.Namespace
                              ) -> dict[str, Any]:
    """The create_hunt (or collect) arguments naming artifacts: the server's library resolves
    the names, with ``--definitions`` sent along; each ``--param`` goes to every artifact
    declaring it."""
    try:
        extra = [load_file(f) for folder in args.definitions for f in definition_files(folder)]
    except ArtifactError as error:
        raise UsageError(str(error)) from None
    summaries = {a["name"]: a for a in await remote.list_artifacts()}
    for artifact in extra:
        summaries[artifact.name] = artifact.summary()
    try:
        requests = requests_for(summaries, args.artifact, args.param)
    except RequestError as error:
        raise UsageError(str(error)) from None
    definitions = [{"origin": a.origin, "text": a.text} for a in extra]
    return {"artifacts": requests, "definitions": definitions}
