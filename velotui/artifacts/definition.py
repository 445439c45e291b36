"""An artifact definition: Velociraptor's YAML format, read and checked.

A definition that loads is an ``Artifact``; one that does not raises ``ArtifactError`` naming the
file, the line and the reason. Keys we do not use (``reports``, ``tools``, ``resources``, ...) are
kept in ``extra`` and otherwise ignored, so a responder's existing definitions load as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from velotui.vql import check

CLIENT = "CLIENT"
SERVER = "SERVER"
EVENT_TYPES = ("CLIENT_EVENT", "SERVER_EVENT", "NOTEBOOK", "INTERNAL")

# The parameter types Velociraptor documents. A type we do not know is read as a string, as
# Velociraptor itself does for a type its GUI does not know.
PARAMETER_TYPES = (
    "string", "int", "int64", "integer", "bool", "float", "choices", "multichoice", "csv", "json",
    "json_array", "regex", "regex_array", "yara", "hidden", "timestamp", "upload", "upload_file",
    "glob", "artifactset", "redacted", "yaml", "str",
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_KNOWN_KEYS = {"name", "description", "author", "type", "parameters", "precondition", "sources",
               "export", "imports", "column_types", "reference", "references"}


class ArtifactError(ValueError):
    """A definition that does not load: where (``origin``, 1-based ``line``) and why."""

    def __init__(self, origin: str, line: int, reason: str) -> None:
        super().__init__(f"{origin}:{line}: {reason}")
        self.origin = origin
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Parameter:
    """One parameter an artifact declares: its name, type (``string`` when not given), default
    (text, as in the YAML) and, for ``choices``, the values allowed."""

    name: str
    type: str = "string"
    default: str = ""
    description: str = ""
    choices: tuple[str, ...] = ()
    friendly_name: str = ""


@dataclass(frozen=True)
class Source:
    """One source of an artifact: an optional name, a precondition and the query."""

    name: str
    query: str
    precondition: str = ""
    description: str = ""


@dataclass(frozen=True)
class Artifact:
    """A loaded definition. ``text`` is the YAML it came from, ``origin`` where it was read."""

    name: str
    type: str
    description: str
    author: str
    parameters: tuple[Parameter, ...]
    sources: tuple[Source, ...]
    precondition: str
    export: str
    imports: tuple[str, ...]
    column_types: tuple[dict[str, Any], ...]
    text: str
    origin: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def source_label(self, source: Source) -> str:
        """How rows of ``source`` name where they came from: ``Artifact`` or ``Artifact/Source``."""
        return f"{self.name}/{source.name}" if source.name else self.name

    def summary(self) -> dict[str, Any]:
        """The definition as plain values, for listings and the operator API."""
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "author": self.author,
            "origin": self.origin,
            "parameters": [
                {"name": p.name, "type": p.type, "default": p.default,
                 "description": p.description, "choices": list(p.choices),
                 "friendly_name": p.friendly_name}
                for p in self.parameters
            ],
            "sources": [s.name for s in self.sources],
            "imports": list(self.imports),
        }


class _Located:
    """Line numbers of the YAML's nodes, found by a path of keys and indexes."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node(self, *path: str | int) -> yaml.Node | None:
        node = self.root
        for step in path:
            if isinstance(node, yaml.MappingNode) and isinstance(step, str):
                node = next((value for key, value in node.value
                             if isinstance(key, yaml.ScalarNode) and key.value == step), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
                node = node.value[step] if 0 <= step < len(node.value) else None
            else:
                return None
            if node is None:
                return None
        return node

    def line(self, *path: str | int) -> int:
        """The 1-based line of the node at ``path``, or of the nearest parent that exists."""
        for end in range(len(path), -1, -1):
            node = self.node(*path[:end])
            if node is not None:
                return node.start_mark.line + 1
        return 1

    def text_line(self, line_in_text: int, *path: str | int) -> int:
        """The file line of line ``line_in_text`` (1-based) of the scalar at ``path``: a block
        scalar (``|`` or ``>``) starts on the line after its indicator."""
        node = self.node(*path)
        if not isinstance(node, yaml.ScalarNode):
            return self.line(*path)
        first = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
        return first + line_in_text


def load_artifact(text: str, origin: str = "<text>") -> Artifact:
    """The artifact ``text`` defines. Raises ArtifactError naming ``origin``, line and reason."""
    try:
        # Every scalar is text, as in Velociraptor's typed Go structs: `default: yes` is "yes",
        # `default: 10` is "10", and a parameter may be called Yes.
        data = yaml.load(text, Loader=yaml.BaseLoader)  # builds no objects: only text
        located = _Located(yaml.compose(text))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ArtifactError(origin, line, f"not YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ArtifactError(origin, 1, f"not YAML: {error}") from None
    if not isinstance(data, dict):
        raise ArtifactError(origin, 1, "an artifact is a YAML mapping with at least 'name'")
    return _Reader(data, located, origin, text).artifact()


class _Reader:
    """Builds an Artifact from the YAML's values, refusing with the line of what is wrong."""

    def __init__(self, data: dict[str, Any], located: _Located, origin: str, text: str) -> None:
        self.data = data
        self.located = located
        self.origin = origin
        self.text = text

    def fail(self, reason: str, *path: str | int) -> ArtifactError:
        return ArtifactError(self.origin, self.located.line(*path), reason)

    def string(self, value: Any, what: str, *path: str | int, required: bool = False) -> str:
        if value is None:
            if required:
                raise self.fail(f"{what} is missing", *path)
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(f"{what} must be text, not {type(value).__name__}", *path)
        if isinstance(value, str):
            return value
        return str(value)

    def vql(self, value: Any, what: str, *path: str | int) -> str:
        query = self.string(value, what, *path)
        if query.strip():
            error = check(query)
            if error is not None:
                line = self.located.text_line(error.line, *path)
                raise ArtifactError(self.origin, line,
                                    f"{what}: VQL does not parse: {error.message} "
                                    f"(line {error.line}, col {error.column} of the query)")
        return query

    def artifact(self) -> Artifact:
        data = self.data
        name = self.string(data.get("name"), "name", "name", required=True).strip()
        if not _NAME.fullmatch(name):
            raise self.fail(f"name {name!r} is not an artifact name (like Linux.Sys.Users)",
                            "name")
        kind = self.string(data.get("type"), "type", "type").strip().upper() or CLIENT
        if kind in EVENT_TYPES:
            raise self.fail(f"type {kind}: event and notebook artifacts are not supported yet "
                            "(only CLIENT and SERVER)", "type")
        if kind not in (CLIENT, SERVER):
            raise self.fail(f"type {kind!r} is not CLIENT or SERVER", "type")
        imports = data.get("imports") or []
        if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
            raise self.fail("imports must be a list of artifact names", "imports")
        column_types = data.get("column_types") or []
        if not isinstance(column_types, list) or not all(isinstance(c, dict)
                                                         for c in column_types):
            raise self.fail("column_types must be a list of mappings", "column_types")
        sources = self.sources()
        return Artifact(
            name=name,
            type=kind,
            description=self.string(data.get("description"), "description", "description"),
            author=self.string(data.get("author"), "author", "author"),
            parameters=self.parameters(),
            sources=sources,
            precondition=self.vql(data.get("precondition"), "precondition", "precondition"),
            export=self.vql(data.get("export"), "export", "export"),
            imports=tuple(imports),
            column_types=tuple(column_types),
            text=self.text,
            origin=self.origin,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )

    def parameters(self) -> tuple[Parameter, ...]:
        given = self.data.get("parameters") or []
        if not isinstance(given, list):
            raise self.fail("parameters must be a list", "parameters")
        parameters: list[Parameter] = []
        seen: set[str] = set()
        for index, item in enumerate(given):
            path = ("parameters", index)
            if not isinstance(item, dict):
                raise self.fail("a parameter is a mapping with at least 'name'", *path)
            name = self.string(item.get("name"), "parameter name", *path, "name",
                               required=True).strip()
            if not name.replace("_", "a").replace(".", "a").isalnum():
                raise self.fail(f"parameter name {name!r} is not a VQL name", *path, "name")
            if name in seen:
                raise self.fail(f"parameter {name!r} is declared twice", *path, "name")
            seen.add(name)
            kind = self.string(item.get("type"), "parameter type", *path, "type").strip().lower()
            choices = item.get("choices") or []
            if not isinstance(choices, list):
                raise self.fail(f"parameter {name!r}: choices must be a list", *path, "choices")
            default = item.get("default")
            parameters.append(Parameter(
                name=name,
                type=kind or "string",
                default=self.string(default, f"parameter {name!r} default", *path, "default"),
                description=self.string(item.get("description"), "parameter description",
                                        *path, "description"),
                choices=tuple(str(c) for c in choices),
                friendly_name=self.string(item.get("friendly_name"), "friendly_name",
                                          *path, "friendly_name"),
            ))
        return tuple(parameters)

    def sources(self) -> tuple[Source, ...]:
        given = self.data.get("sources") or []
        if not isinstance(given, list):
            raise self.fail("sources must be a list", "sources")
        sources: list[Source] = []
        names: set[str] = set()
        for index, item in enumerate(given):
            path = ("sources", index)
            if not isinstance(item, dict):
                raise self.fail("a source is a mapping with a query", *path)
            name = self.string(item.get("name"), "source name", *path, "name").strip()
            if not name and len(given) > 1 and sum(not (s or {}).get("name")
                                                   for s in given if isinstance(s, dict)) > 1:
                # Several unnamed sources: each is named by its place, so rows stay apart.
                name = f"Source{index}"
            if name in names:
                raise self.fail(f"two sources are named {name!r}", *path, "name")
            names.add(name)
            query = item.get("query")
            if query is None and isinstance(item.get("queries"), list):
                # The old form: a list of statements, run one after another.
                query = "\n".join(str(q) for q in item["queries"])
                text = self.vql(query, f"source {index + 1} queries", *path, "queries")
            else:
                text = self.vql(query, f"source {name or index + 1} query", *path, "query")
            if not text.strip():
                raise self.fail(f"source {name or index + 1} has no query", *path)
            sources.append(Source(
                name=name,
                query=text,
                precondition=self.vql(item.get("precondition"), "source precondition",
                                      *path, "precondition"),
                description=self.string(item.get("description"), "source description",
                                        *path, "description"),
            ))
        return tuple(sources)
