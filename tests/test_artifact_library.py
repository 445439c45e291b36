"""The built-in artifact library: every definition loads, compiles and calls only names the
agent knows (with arguments they accept), and each artifact, run on this machine or on fixture
files made here, gives the rows it promises.

Collections run as they do for real: compiled with everything they call into one VQL text and
run against the agent's registry, a few through `velotui artifacts collect` in a subprocess.
Artifacts whose precondition keeps them off Linux are run here with their preconditions removed,
on fixture files laid out as on their own system.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.plugins import client_registry
from agent.plugins.upload import UPLOADER_SERVICE
from tests.processes import velotui
from tests.test_client_plugins import FolderUploader
from velotui.artifacts import (
    SOURCE_COLUMN,
    Artifact,
    ArtifactRequest,
    Library,
    compile_collection,
)
from velotui.artifacts.parameters import conversions
from velotui.vql import UnknownName, ast, parse, run

LIBRARY = Library.builtin()
NAMES = [artifact.name for artifact in LIBRARY]


@dataclass
class Collected:
    """What a collection gave: its rows (without ``_Source``, which ``sources`` keeps), the
    errors logged and the unknown names met."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def ok(self) -> Collected:
        assert not self.errors, self.errors
        assert not self.unknown, self.unknown
        return self

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def by(self, column: str) -> dict[Any, dict[str, Any]]:
        return {row.get(column): row for row in self.rows}


def without_preconditions(artifact: Artifact) -> Artifact:
    """``artifact`` with no precondition, to run on Linux what another system would run."""
    sources = tuple(dataclasses.replace(s, precondition="") for s in artifact.sources)
    return dataclasses.replace(artifact, precondition="", sources=sources)


def collect(name: str, parameters: Mapping[str, Any] | None = None, *,
            anywhere: bool = False, prevent_execve: bool = False,
            services: dict[str, Any] | None = None) -> Collected:
    """Collect the built-in artifact ``name`` here, as `velotui artifacts collect` does.
    ``anywhere`` drops its preconditions (those it calls keep theirs)."""
    library = LIBRARY
    if anywhere:
        library = LIBRARY.layered([without_preconditions(LIBRARY.get(name))])
    text = {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in (parameters or {}).items()}
    collection = compile_collection(library, [ArtifactRequest(name, text)])
    result = Collected()

    def on_log(level: str, message: str) -> None:
        if level.upper() == "ERROR":
            result.errors.append(message)

    def on_unknown(unknown: UnknownName) -> None:
        result.unknown.append(unknown.message)

    async def rows() -> None:
        registry = client_registry(prevent_execve=prevent_execve) if prevent_execve \
            else client_registry()
        async for row in run(collection.query, registry=registry, on_log=on_log,
                             on_unknown=on_unknown, services=services or {}):
            row = dict(row)
            result.sources.append(row.pop(SOURCE_COLUMN))
            result.rows.append(row)

    asyncio.run(rows())
    return result


def collect_with_uploads(folder: Path, name: str, parameters: Mapping[str, Any]
                         ) -> tuple[Collected, list[bytes]]:
    """``collect`` with an uploader storing files in ``folder``, as the server stores them;
    gives the result and the bytes of each upload."""
    folder.mkdir(parents=True, exist_ok=True)
    result = collect(name, parameters, services={UPLOADER_SERVICE: FolderUploader(folder)}).ok()
    return result, [path.read_bytes() for path in sorted(folder.iterdir())]


def collect_command(tmp_path: Path, name: str, *parameters: str) -> tuple[list[dict[str, Any]],
                                                                          str, int]:
    """``velotui artifacts collect NAME --param ...`` in a subprocess: rows, stderr, status."""
    arguments = [arg for parameter in parameters for arg in ("--param", parameter)]
    result = velotui("artifacts", "collect", name, *arguments, "--format", "jsonl",
                     "--datastore", str(tmp_path / "no-datastore"))
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return rows, result.stderr, result.returncode


# Every definition --------------------------------------------------------------------------------


def test_the_library_has_the_artifacts_responders_need() -> None:
    assert len(LIBRARY) >= 32
    assert {name.split(".")[0] for name in NAMES} >= {"Generic", "Linux", "MacOS", "Windows"}
    for artifact in LIBRARY:
        assert artifact.description.strip(), artifact.name
        assert artifact.type == "CLIENT", artifact.name
        for parameter in artifact.parameters:
            assert parameter.description.strip(), (artifact.name, parameter.name)


def _texts(artifact: Artifact) -> list[tuple[str, str]]:
    """Every VQL text of ``artifact`` as a source runs it (conversions, export, query) and its
    preconditions, each with a label."""
    texts = [(f"{artifact.name} precondition", artifact.precondition)]
    for source in artifact.sources:
        body = "\n".join(part for part in (conversions(artifact.parameters), artifact.export,
                                           source.query) if part.strip())
        texts.append((f"{artifact.name}/{source.name} query", body))
        texts.append((f"{artifact.name}/{source.name} precondition", source.precondition))
    return [(label, text) for label, text in texts if text.strip()]


def _called(text: str) -> list[tuple[str, str, list[str]]]:
    """(kind, name, argument names) of every function and plugin ``text`` calls, except its own
    LETs and artifacts."""
    statements = parse(text)
    defined = {s.name for s in statements if isinstance(s, ast.Let)}
    calls = []
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Call):
                kind, args = "function", node.args
            elif isinstance(node, ast.Source):
                kind, args = "plugin", node.args or []
            else:
                continue
            if node.name in defined:
                continue
            calls.append((kind, node.name, [a.name for a in args]))
    return calls


def _local_names(text: str) -> set[str]:
    return {s.name for s in parse(text) if isinstance(s, ast.Let)}


@pytest.mark.parametrize("name", NAMES)
def test_each_definition_compiles_and_calls_only_what_the_agent_has(name: str) -> None:
    artifact = LIBRARY.get(name)
    collection = compile_collection(LIBRARY, [ArtifactRequest(name)])
    parse(collection.query)
    registry = client_registry()
    wrong = []
    for label, text in _texts(artifact):
        for kind, called, arguments in _called(text):
            if called.startswith("Artifact."):
                callee = LIBRARY.get(called.removeprefix("Artifact."))
                declared = {p.name for p in callee.parameters} | {"source"}
                wrong += [f"{label}: {called}() has no parameter {a}"
                          for a in arguments if a not in declared]
                continue
            found = registry.lookup_function(called) if kind == "function" else \
                registry.lookup_plugin(called)
            if found is None and kind == "function" and called in _local_names(text):
                continue
            if found is None:
                wrong.append(f"{label}: no {kind} {called}()")
                continue
            problem = found.check_arguments(arguments)
            if problem:
                wrong.append(f"{label}: {problem}")
    assert not wrong, "\n".join(wrong)


# Through the command line -----------------------------------------------------------------------


def test_artifacts_list_shows_the_library(tmp_path: Path) -> None:
    result = velotui("artifacts", "list", "--json", "--datastore", str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    listed = {json.loads(line)["name"] for line in result.stdout.splitlines()}
    assert listed == set(NAMES)


def test_collect_command_reads_a_fixture_password_file(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    rows, stderr, status = collect_command(tmp_path, "Linux.Sys.Users", f"PasswdFile={passwd}")
    assert status == 0, stderr
    assert rows == [
        {"User": "root", "Uid": 0, "Gid": 0, "Description": "root", "Homedir": "/root",
         "Shell": "/bin/bash", "Source": str(passwd), SOURCE_COLUMN: "Linux.Sys.Users"},
        {"User": "alice", "Uid": 1000, "Gid": 1000, "Description": "", "Homedir": "/home/alice",
         "Shell": "/bin/sh", "Source": str(passwd), SOURCE_COLUMN: "Linux.Sys.Users"}]


def test_collect_command_names_each_source_of_ssh_logins(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(
        "Dec  6 04:00:05 web1 sshd[1202]: Failed password for root from 198.51.100.7 port 402 "
        "ssh2\nDec  6 04:00:09 web1 sshd[1203]: Accepted password for root from 198.51.100.7 "
        "port 403 ssh2\n")
    rows, stderr, status = collect_command(tmp_path, "Linux.Syslog.SSHLogin", f"LogGlob={log}")
    assert status == 0, stderr
    assert [(r[SOURCE_COLUMN], r.get("Event"), r.get("Failures")) for r in rows] == [
        ("Linux.Syslog.SSHLogin/Logins", "Failed", None),
        ("Linux.Syslog.SSHLogin/Logins", "Accepted", None),
        ("Linux.Syslog.SSHLogin/ByAddress", None, 1)]


def test_collect_command_says_when_nothing_is_found(tmp_path: Path) -> None:
    rows, stderr, status = collect_command(tmp_path, "Linux.Proc.Modules",
                                           f"ModulesFile={tmp_path / 'absent'}")
    assert (rows, status) == ([], 0)
    assert "Linux.Proc.Modules: nothing found" in stderr


def test_every_artifact_collects_here_in_one_collection_without_errors(tmp_path: Path) -> None:
    """All the library in one collection, as a hunt would send it, on this machine; the slow
    searches are pointed at an empty folder. No unknown name, no error."""
    empty = tmp_path / "empty"
    empty.mkdir()
    narrowed = {
        "Linux.Sys.SUID": {"SearchGlob": f"{empty}/**"},
        "Linux.Search.RecentlyModified": {"SearchGlob": f"{empty}/**"},
        "Linux.Search.FileFinder": {"SearchFilesGlobTable": f"Glob\n{empty}/**\n"},
        "Generic.Search.HashHunter": {"Hashes": "0" * 32, "PathGlob": f"{empty}/**"},
        "Generic.Detection.Yara.Glob": {"PathGlob": f"{empty}/**"},
        "Generic.Collectors.File": {"UploadFiles": "N"},
        "Linux.Detection.Yara.Process": {"PidRegex": "^1$"},
    }
    requests = [ArtifactRequest(name, narrowed.get(name, {})) for name in NAMES]
    collection = compile_collection(LIBRARY, requests)
    errors: list[str] = []
    unknown: list[str] = []
    found: dict[str, int] = dict.fromkeys(collection.sources, 0)

    def on_log(level: str, message: str) -> None:
        if level.upper() == "ERROR":
            errors.append(message)

    async def rows() -> None:
        async for row in run(collection.query, registry=client_registry(), on_log=on_log,
                             on_unknown=lambda name: unknown.append(name.message)):
            found[row[SOURCE_COLUMN]] += 1

    asyncio.run(rows())
    assert not unknown, unknown
    assert not errors, errors
    # What any Linux machine has.
    for source in ("Generic.Client.Info/BasicInformation", "Linux.Sys.Users",
                   "Linux.Sys.Groups", "Linux.Users.RootUsers", "Generic.System.Pslist",
                   "Linux.Sys.Pslist", "Linux.Mounts", "Generic.Network.Interfaces",
                   "Generic.Collectors.File"):
        assert found[source] > 0, source
    for other in ("MacOS.System.LaunchAgents", "MacOS.Applications.List",
                  "Windows.System.StartupFolders", "Windows.System.HostsFile"):
        assert found[other] == 0, other
