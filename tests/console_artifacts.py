"""Artifacts for console tests, put where the server keeps its imported library (the datastore's
``artifacts/`` folder) before it starts, so the tests do not depend on the built-in set; and a
fixed hunt of artifacts for snapshots, compiled by the server's own compiler."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict
from pathlib import Path

from tests.console_seed import FAR_FUTURE, NOW
from velotui.artifacts.compiler import ArtifactRequest, compile_collection
from velotui.server.artifact_library import ServerLibrary
from velotui.server.data import Database, HuntRecord
from velotui.server.data.records import DEFAULT_LIMITS
from velotui.server.datastore import Datastore
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION

FILE_FINDER = """\
name: Test.Files.Finder
description: |
  Finds files by a glob, with their sizes, and their hashes when asked.
author: velotui tests
type: CLIENT
parameters:
  - name: SearchGlob
    description: the files to find [/]
    default: /etc/host*
  - name: Hashes
    type: bool
    description: add an MD5 and a SHA256 of each file
  - name: MaxSize
    type: int
    default: "1000000"
    description: larger files are left out
  - name: Mode
    type: choices
    default: quick
    choices: [quick, thorough]
  - name: Extra
    type: json
    default: "{}"
    description: more options, as JSON
  - name: Internal
    type: hidden
    default: kept
sources:
  - query: |
      SELECT OSPath, Size FROM glob(globs=SearchGlob) WHERE Size < MaxSize
"""

USERS = """\
name: Test.Accounts.Users
description: The local accounts of the machine, from the wombat password database [/etc/passwd].
author: velotui tests
type: CLIENT
sources:
  - name: Accounts
    query: SELECT Name, Uid FROM users()
"""

DEFINITIONS = {"Test.Files.Finder": FILE_FINDER, "Test.Accounts.Users": USERS}
ARTIFACT_HUNT = "H.1M8F0000000E5"


def with_test_artifacts(root: Path) -> Path:
    """The datastore at ``root`` (created if need be) with the test artifacts in its library."""
    datastore = Datastore.open(root)
    folder = datastore.artifacts_dir
    folder.mkdir(exist_ok=True)
    for name, text in DEFINITIONS.items():
        (folder / f"{name}.yaml").write_text(text)
    return datastore.root


def with_artifact_hunt(root: Path) -> Path:
    """Also a paused hunt of both test artifacts (one parameter changed, one of several lines),
    newer than the seeded ones, compiled as the server compiles a hunt's artifacts."""
    with_test_artifacts(root)
    datastore = Datastore.open(root)
    collection = compile_collection(ServerLibrary(datastore.artifacts_dir).library(), [
        ArtifactRequest("Test.Files.Finder", {"SearchGlob": "/home/*/.ssh/authorized_keys",
                                              "Hashes": "Y", "Extra": '{\n  "depth": 3\n}'}),
        ArtifactRequest("Test.Accounts.Users", {}),
    ])
    record = HuntRecord(
        hunt_id=ARTIFACT_HUNT, query=collection.query, client_condition=DEFAULT_CLIENT_CONDITION,
        server_condition="", description="SSH keys and accounts", rate=0.0, client_limit=0,
        expires=FAR_FUTURE, state="paused", created=NOW - 30, creator="operator",
        artifacts=json.dumps(list(collection.artifacts)), **asdict(DEFAULT_LIMITS),
    )

    async def write() -> None:
        db = await Database.open(datastore.database_path)
        await db.hunts.create(record)
        await db.close()

    writer = threading.Thread(target=asyncio.run, args=(write(),))  # works from a loop too
    writer.start()
    writer.join()
    return datastore.root
