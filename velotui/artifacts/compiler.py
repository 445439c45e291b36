"""Compiling artifacts into the one VQL text a collection sends.

Agents have no library: the server writes every artifact a collection names, and every artifact
those call (``Artifact.Name(...)``) or import, into the query itself. Each artifact becomes a
stored query named ```Artifact.Name``` taking its parameters (defaults as declared) and
``source``; each of its sources runs in a scope of its own through ``query()``, after the LETs
that convert its typed parameters, its imports' ``export`` and its own. The collection then
selects each requested source, behind the artifact's and the source's preconditions, and names
it in a ``_Source`` column (``Artifact`` or ``Artifact/Source``), so every row says where it
came from::

    LET `Artifact.Linux.Sys.Users`(UserRegex='.', source='') = SELECT * FROM chain(
      s0={SELECT * FROM if(condition=source = '' OR source = 'Users',
                           then={SELECT * FROM query(query='...', env=dict(...), inherit=TRUE)})})
    SELECT *, 'Linux.Sys.Users/Users' AS _Source FROM `Artifact.Linux.Sys.Users`(source='Users')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from velotui.artifacts.definition import CLIENT, Artifact, Source
from velotui.artifacts.library import Library
from velotui.artifacts.parameters import ParameterError, bind, conversions
from velotui.artifacts.requests import RequestError, assign_parameters
from velotui.vql.artifact_source import ARTIFACT_VARIABLE

SOURCE_COLUMN = "_Source"
_CALLED = re.compile(r"\bArtifact\.((?:[A-Za-z0-9_]+\.)*[A-Za-z0-9_]+)")
MAX_DEPTH = 32


class CompileError(ValueError):
    """The artifacts cannot make a collection; the message says which and why."""


@dataclass(frozen=True)
class ArtifactRequest:
    """One artifact a collection runs, with the parameters given for it (text values)."""

    name: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    """What compiling gives: the VQL to send, and the artifacts (with every parameter's bound
    value) and source labels it covers, for the hunt's record and its export."""

    query: str
    artifacts: tuple[dict[str, Any], ...]
    sources: tuple[str, ...]
    definitions: tuple[Artifact, ...]


def vql_string(text: str) -> str:
    """``text`` as a VQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quoted(name: str) -> str:
    return f"`{name}`"


def called_artifacts(artifact: Artifact) -> list[str]:
    """Names of the artifacts ``artifact`` calls or imports, in order of first mention."""
    texts = [artifact.export, artifact.precondition]
    texts += [text for source in artifact.sources for text in (source.query, source.precondition)]
    names = list(artifact.imports)
    for text in texts:
        names += _CALLED.findall(text)
    return list(dict.fromkeys(names))


def dependencies(library: Library, roots: Iterable[Artifact]) -> list[Artifact]:
    """``roots`` and every artifact they reach, each once, callees before their callers."""
    ordered: list[Artifact] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(artifact: Artifact) -> None:
        if artifact.name in placed:
            return
        if artifact.name in visiting or len(visiting) > MAX_DEPTH:
            # A cycle: the stored query will call itself at run time, where depth is limited.
            return
        visiting.append(artifact.name)
        for name in called_artifacts(artifact):
            callee = library.find(name)
            if callee is None:
                raise CompileError(f"{artifact.name} calls or imports {name}, which is not in "
                                   "the library")
            visit(callee)
        visiting.pop()
        placed.add(artifact.name)
        ordered.append(artifact)

    for root in roots:
        visit(root)
    return ordered


def _source_body(library: Library, artifact: Artifact, source: Source) -> str:
    parts = [conversions(artifact.parameters)]
    for name in artifact.imports:
        imported = library.find(name)
        if imported is not None and imported.export.strip():
            parts.append(imported.export)
    if artifact.export.strip():
        parts.append(artifact.export)
    parts.append(source.query)
    return "\n".join(part for part in parts if part.strip())


def define(library: Library, artifact: Artifact) -> str:
    """The stored query that runs ``artifact``'s sources (all, or the one ``source`` names)."""
    names = [p.name for p in artifact.parameters if p.name != "source"]
    declared = [f"{_quoted(p.name)}={vql_string(p.default)}"
                for p in artifact.parameters if p.name != "source"]
    declared.append("source=''")
    env = ", ".join([f"{_quoted(n)}={_quoted(n)}" for n in names]
                    + [f"{ARTIFACT_VARIABLE}={vql_string(artifact.name)}"])
    runs = []
    for source in artifact.sources:
        body = vql_string(_source_body(library, artifact, source))
        run = f"SELECT * FROM query(query={body}, env=dict({env}), inherit=TRUE)"
        if len(artifact.sources) > 1 or source.name:
            choose = f"source = '' OR source = {vql_string(source.name)}"
            run = f"SELECT * FROM if(condition={choose}, then={{{run}}})"
        runs.append(run)
    if not runs:
        body = "SELECT * FROM scope() WHERE FALSE"
    elif len(runs) == 1:
        body = runs[0]
    else:
        body = "SELECT * FROM chain(" + ", ".join(
            f"s{index}={{{run}}}" for index, run in enumerate(runs)) + ")"
    return f"LET {_quoted('Artifact.' + artifact.name)}({', '.join(declared)}) = {body}"


def _guarded(select: str, precondition: str) -> str:
    if not precondition.strip():
        return select
    check = f"SELECT * FROM query(query={vql_string(precondition)}, inherit=TRUE)"
    return f"SELECT * FROM if(condition={{{check}}}, then={{{select}}})"


def _collect(artifact: Artifact, source: Source, values: Mapping[str, str]) -> str:
    arguments = [f"{_quoted(name)}={vql_string(value)}" for name, value in values.items()
                 if name != "source"]
    if source.name:
        arguments.append(f"source={vql_string(source.name)}")
    call = f"{_quoted('Artifact.' + artifact.name)}({', '.join(arguments)})"
    select = _guarded(_guarded(f"SELECT * FROM {call}", source.precondition),
                      artifact.precondition)
    label = vql_string(artifact.source_label(source))
    if select.startswith("SELECT * FROM `"):
        return f"SELECT *, {label} AS {SOURCE_COLUMN} FROM {call}"
    return f"SELECT *, {label} AS {SOURCE_COLUMN} FROM chain(a={{{select}}})"


def compile_collection(library: Library, requests: Sequence[ArtifactRequest], *,
                       kind: str | None = CLIENT) -> Collection:
    """The collection running ``requests``: artifacts of type ``kind`` only (None: any, as
    when collecting on this machine). Raises CompileError (unknown artifacts, a wrong type, a
    bad parameter) with a message naming the artifact."""
    if not requests:
        raise CompileError("no artifact to collect")
    roots: list[tuple[Artifact, dict[str, str]]] = []
    for request in requests:
        try:
            artifact = library.get(request.name)
        except LookupError as error:
            raise CompileError(str(error.args[0])) from None
        if kind is not None and artifact.type != kind:
            raise CompileError(f"{artifact.name} is a {artifact.type} artifact; "
                               f"only {kind} artifacts can be collected here")
        if not artifact.sources:
            raise CompileError(f"{artifact.name} has no sources to collect")
        try:
            roots.append((artifact, bind(artifact, request.parameters)))
        except ParameterError as error:
            raise CompileError(str(error)) from None
    statements = [define(library, a) for a in dependencies(library, (a for a, _ in roots))]
    labels: list[str] = []
    for artifact, values in roots:
        for source in artifact.sources:
            statements.append(_collect(artifact, source, values))
            labels.append(artifact.source_label(source))
    return Collection(
        query="\n".join(statements) + "\n",
        artifacts=tuple({"name": a.name, "parameters": dict(v),
                         "sources": [a.source_label(s) for s in a.sources]}
                        for a, v in roots),
        sources=tuple(labels),
        definitions=tuple(a for a, _ in roots),
    )


def requests_from_parameters(library: Library, names: Sequence[str],
                             parameters: Sequence[str]) -> list[ArtifactRequest]:
    """Artifact requests from the command line's ``--artifact NAME`` and ``--param K=V``
    (see ``requests.assign_parameters``). Raises CompileError."""
    declared = {a.name: {p.name for p in a.parameters} for a in library}
    try:
        assigned = assign_parameters(declared, names, parameters)
    except RequestError as error:
        raise CompileError(str(error)) from None
    return [ArtifactRequest(name, values) for name, values in assigned]
