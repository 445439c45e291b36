"""Compiling artifacts into the one VQL text a collection sends.

Agents have no library: the server writes every artifact a collection names, and every artifact
those call (``Artifact.Name(...)``) or import, into the query itself, and runs them as Velociraptor
does:

- A collected artifact runs as one *script* in a scope of its own, its parameters bound (as
  text) in that scope: first the LETs that convert its typed parameters, then its ``export`` and
  its imports' exports, then each source's statements in order. The sources share the scope, so
  a LET of one source is seen by the next, as in Velociraptor's collections. A source with a
  precondition runs (LETs and all) only when its precondition returns a row; the artifact's own
  precondition decides whether the script runs at all.
- Every SELECT of a source names where its rows came from in a ``_Source`` column, ``Artifact``
  or ``Artifact/Source``.
- An artifact that another calls is a stored query named ```Artifact.Name``` taking its
  parameters and ``source`` (one source only, when given), running the same script untagged in
  a scope of its own, as Velociraptor's ``Artifact`` plugin does (a child of the caller's, so
  the artifacts it calls in turn stay in reach; its parameters shadow the caller's)::

    LET `Artifact.Custom.Callee`(Limit='10', source='') = SELECT * FROM chain(...)
    SELECT * FROM query(query='LET Limit <= ...\nSELECT *, ... AS _Source FROM chain(...)',
                        env=dict(Limit='3', _ArtifactName='Custom.Caller'), inherit=TRUE)
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
from velotui.vql import ast, parse
from velotui.vql.artifact_source import ARTIFACT_VARIABLE

SOURCE_COLUMN = "_Source"
_CALLED = re.compile(r"\bArtifact\.((?:[A-Za-z0-9_]+\.)*[A-Za-z0-9_]+)")
_SOURCE_CALL = re.compile(r"\bsource\s*\(", re.IGNORECASE)
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


def _statements(text: str) -> list[tuple[bool, str]]:
    """Each statement of ``text`` as (is a SELECT, its text), comments kept with the one
    before them. The text has parsed before (the definition was checked on loading)."""
    parsed = parse(text)
    # Where each line starts, counting lines as the parser does: by "\n" only.
    offsets = [0] + [found.end() for found in re.finditer("\n", text)]

    def offset(node: ast.Node) -> int:
        return offsets[node.position.line - 1] + node.position.column - 1

    starts = [offset(node) for node in parsed] + [len(text)]
    return [(isinstance(node, ast.Select), text[starts[i]:starts[i + 1]].rstrip() + "\n")
            for i, node in enumerate(parsed)]


def _in_scope(text: str, env: str = "") -> str:
    """A query reading the rows of VQL ``text`` run in a child of the current scope."""
    with_env = f", env=dict({env})" if env else ""
    return f"SELECT * FROM query(query={vql_string(text)}{with_env}, inherit=TRUE)"


def _if(precondition: str, then: str, env: str = "") -> str:
    return f"SELECT * FROM if(condition={{{_in_scope(precondition, env)}}}, then={{{then}}})"


def _source_script(artifact: Artifact, source: Source, tagged: bool) -> str:
    parts = []
    for is_select, statement in _statements(source.query):
        if is_select and tagged:
            label = vql_string(artifact.source_label(source))
            statement = f"SELECT *, {label} AS {SOURCE_COLUMN} FROM chain(a={{{statement}}})\n"
        parts.append(statement)
    script = "".join(parts)
    if source.precondition.strip():
        return _if(source.precondition, _in_scope(script)) + "\n"
    return script


def script(library: Library, artifact: Artifact, *, only: Source | None = None,
           tagged: bool = False) -> str:
    """The VQL of ``artifact``'s collection (only the source ``only``, when given): the
    parameters converted, the exports, then each source in order (``tagged``: each SELECT
    naming its source in ``_Source``)."""
    parts = [conversions(artifact.parameters), artifact.export]
    for name in artifact.imports:
        imported = library.find(name)
        if imported is not None:
            parts.append(imported.export)
    for source in artifact.sources:
        if only is None or source is only:
            parts.append(_source_script(artifact, source, tagged))
    return "\n".join(part.strip("\n") for part in parts if part.strip()) + "\n"


def _environment(artifact: Artifact, values: Mapping[str, str] | None) -> str:
    """``dict()`` arguments binding the parameters: the given text values, else the stored
    query's own parameters of the same names."""
    pairs = []
    for parameter in artifact.parameters:
        if parameter.name == "source":
            continue
        value = vql_string(values[parameter.name]) if values is not None \
            else _quoted(parameter.name)
        pairs.append(f"{_quoted(parameter.name)}={value}")
    pairs.append(f"{ARTIFACT_VARIABLE}={vql_string(artifact.name)}")
    return ", ".join(pairs)


def define(library: Library, artifact: Artifact) -> str:
    """The stored query through which other artifacts call ``artifact``: its parameters (with
    their defaults) and ``source``, picking one source when given."""
    declared = [f"{_quoted(p.name)}={vql_string(p.default)}"
                for p in artifact.parameters if p.name != "source"]
    declared.append("source=''")
    env = _environment(artifact, None)
    if len(artifact.sources) <= 1:
        body = _in_scope(script(library, artifact), env)
    else:
        branches = [f"all={{SELECT * FROM if(condition=source = '', "
                    f"then={{{_in_scope(script(library, artifact), env)}}})}}"]
        for index, source in enumerate(artifact.sources):
            only = _in_scope(script(library, artifact, only=source), env)
            branches.append(f"s{index}={{SELECT * FROM if(condition=source = "
                            f"{vql_string(source.name)}, then={{{only}}})}}")
        body = "SELECT * FROM chain(" + ", ".join(branches) + ")"
    return f"LET {_quoted('Artifact.' + artifact.name)}({', '.join(declared)}) = {body}"


def _collect(library: Library, artifact: Artifact, values: Mapping[str, str]) -> str:
    env = _environment(artifact, values)
    run = _in_scope(script(library, artifact, tagged=True), env)
    if artifact.precondition.strip():
        precondition = conversions(artifact.parameters) + "\n" + artifact.precondition
        return _if(precondition, run, env)
    return run


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
    # A root is defined too when its sources reach it again: through source(), or by calling
    # the artifact itself (one source reading another).
    called = [a for root, _ in roots for a in dependencies(library, [root])
              if a is not root or root.name in called_artifacts(root)
              or _SOURCE_CALL.search(" ".join(s.query for s in root.sources))]
    statements = [define(library, a) for a in {a.name: a for a in called}.values()]
    labels: list[str] = []
    for artifact, values in roots:
        statements.append(_collect(library, artifact, values))
        labels += [artifact.source_label(source) for source in artifact.sources]
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
