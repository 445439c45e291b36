"""Artifact definitions: Velociraptor's YAML format, what loads, what is refused and where,
and how parameters are bound and placed."""

from __future__ import annotations

import textwrap

import pytest

from velotui.artifacts import (
    ArtifactError,
    ArtifactRequest,
    CompileError,
    Library,
    compile_collection,
    load_artifact,
    requests_from_parameters,
)
from velotui.artifacts.compiler import dependencies, vql_string
from velotui.artifacts.parameters import ParameterError, bind
from velotui.vql import check, parse

FULL = textwrap.dedent("""\
    name: Custom.Linux.Example
    description: |
      Two sources, typed parameters and an export.
    author: a responder
    type: client
    reference:
      - https://example.org
    tools:
      - name: SomeTool
    parameters:
      - name: PathGlob
        default: /etc/*
        description: where to look
      - name: MaxSize
        type: int
        default: "4096"
      - name: Verbose
        type: bool
      - name: Mode
        type: choices
        default: fast
        choices: [fast, slow]
      - name: Keys
        type: csv
        default: |
          Key,Value
          a,1
    precondition: SELECT OS FROM info() WHERE OS = 'linux'
    export: |
      LET helper(x) = x + 1
    column_types:
      - name: Size
        type: int
    sources:
      - name: Files
        query: |
          SELECT OSPath FROM glob(globs=PathGlob)
      - precondition: SELECT * FROM info()
        query: |
          LET n = 1
          SELECT helper(x=n) AS Two FROM scope()
    """)


def test_every_key_of_the_format_is_read_and_unknown_keys_are_kept() -> None:
    artifact = load_artifact(FULL, "example.yaml")
    assert artifact.name == "Custom.Linux.Example"
    assert artifact.type == "CLIENT"  # any case
    assert artifact.author == "a responder"
    assert [p.name for p in artifact.parameters] == ["PathGlob", "MaxSize", "Verbose", "Mode",
                                                     "Keys"]
    assert artifact.parameter("MaxSize").type == "int"
    assert artifact.parameter("MaxSize").default == "4096"
    assert artifact.parameter("PathGlob").type == "string"
    assert artifact.parameter("Mode").choices == ("fast", "slow")
    assert [s.name for s in artifact.sources] == ["Files", ""]
    assert artifact.sources[1].precondition == "SELECT * FROM info()"
    assert "helper" in artifact.export
    assert artifact.column_types == ({"name": "Size", "type": "int"},)
    assert set(artifact.extra) == {"tools"}
    assert artifact.source_label(artifact.sources[0]) == "Custom.Linux.Example/Files"
    assert artifact.source_label(artifact.sources[1]) == "Custom.Linux.Example"


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("name: A\nsources:\n  - query: SELECT * FROM info(\n", 3, "VQL does not parse"),
    ("name: A\nsources:\n  - query: |\n      SELECT 1 AS X FROM scope()\n"
     "      SELECT FROM\n", 5, "VQL does not parse"),
    ("name: A\ntype: CLIENT_EVENT\nsources: []\n", 2, "event and notebook artifacts"),
    ("name: A\ntype: WEIRD\n", 2, "not CLIENT or SERVER"),
    ("description: x\n", 1, "name is missing"),
    ("name: A\nparameters:\n  - name: P\n  - name: P\n", 4, "declared twice"),
    ("name: A\nparameters:\n  - default: x\n", 3, "parameter name is missing"),
    ("name: A\nsources:\n  - name: S\n", 3, "has no query"),
    ("name: A\n  bad: [\n", 2, "not YAML"),
    ("- just\n- a list\n", 1, "YAML mapping"),
    ("name: ../../etc/passwd\n", 1, "not an artifact name"),
    ("name: A\nimports: Linux.X\n", 2, "imports must be a list"),
])
def test_a_definition_that_does_not_load_names_the_file_the_line_and_the_reason(
        text: str, line: int, reason: str) -> None:
    with pytest.raises(ArtifactError) as caught:
        load_artifact(text, "custom/a.yaml")
    assert caught.value.origin == "custom/a.yaml"
    assert caught.value.line == line, str(caught.value)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"custom/a.yaml:{line}: ")


def _library(*texts: str) -> Library:
    return Library(load_artifact(textwrap.dedent(t), f"{i}.yaml") for i, t in enumerate(texts))


TYPED = """\
    name: Custom.Typed
    parameters:
      - name: Count
        type: int
        default: "3"
      - name: Flag
        type: bool
      - name: Choice
        type: choices
        default: a
        choices: [a, b]
      - name: Data
        type: json
      - name: Pattern
        type: regex
        default: .
    sources:
      - query: SELECT Count, Flag FROM scope()
    """


def test_parameters_are_text_with_their_defaults_and_each_value_is_checked_by_type() -> None:
    artifact = _library(TYPED).get("Custom.Typed")
    assert bind(artifact, {}) == {"Count": "3", "Flag": "", "Choice": "a", "Data": "",
                                  "Pattern": "."}
    assert bind(artifact, {"Count": 7, "Flag": True})["Count"] == "7"
    assert bind(artifact, {"Flag": True})["Flag"] == "Y"
    for given, reason in (({"Count": "seven"}, "not a whole number"),
                          ({"Choice": "c"}, "not one of a, b"),
                          ({"Data": "{nope"}, "not JSON"),
                          ({"Pattern": "(unclosed"}, "not a regular expression"),
                          ({"Nope": "1"}, "has no parameter 'Nope'")):
        with pytest.raises(ParameterError, match=reason):
            bind(artifact, given)


def test_a_parameter_goes_to_every_named_artifact_declaring_it_and_a_prefix_picks_one() -> None:
    library = _library(
        "name: A.One\nparameters: [{name: Path}, {name: Size}]\n"
        "sources: [{query: SELECT 1 AS X FROM scope()}]\n",
        "name: A.Two\nparameters: [{name: Path}]\n"
        "sources: [{query: SELECT 2 AS X FROM scope()}]\n",
    )
    requests = requests_from_parameters(library, ["A.One", "a.two"],
                                        ["Path=/tmp", "A.Two.Path=/var", "Size=9"])
    assert requests == [ArtifactRequest("A.One", {"Path": "/tmp", "Size": "9"}),
                        ArtifactRequest("A.Two", {"Path": "/var"})]
    with pytest.raises(CompileError, match="no artifact named here declares 'Sise'"):
        requests_from_parameters(library, ["A.One"], ["Sise=1"])
    with pytest.raises(CompileError, match="expected NAME=VALUE"):
        requests_from_parameters(library, ["A.One"], ["Path"])
    with pytest.raises(CompileError, match=r"no artifact 'A\.Three'"):
        requests_from_parameters(library, ["A.Three"], [])


CALLER = """\
    name: Custom.Caller
    imports: [Custom.Exporter]
    sources:
      - query: SELECT * FROM Artifact.Custom.Callee(Value='x')
    """
CALLEE = """\
    name: Custom.Callee
    parameters: [{name: Value}]
    sources:
      - query: SELECT Value FROM scope()
    """
EXPORTER = """\
    name: Custom.Exporter
    export: LET Exported = 42
    """


def test_a_collection_holds_every_artifact_it_calls_or_imports_once_callees_first() -> None:
    library = _library(CALLER, CALLEE, EXPORTER)
    caller = library.get("Custom.Caller")
    assert [a.name for a in dependencies(library, [caller])] == [
        "Custom.Exporter", "Custom.Callee", "Custom.Caller"]
    collection = compile_collection(library, [ArtifactRequest("Custom.Caller")])
    assert check(collection.query) is None
    statements = parse(collection.query)
    # The two it reaches, as stored queries, then the caller's collection.
    assert len(statements) == 3
    assert collection.sources == ("Custom.Caller",)
    assert collection.artifacts == ({"name": "Custom.Caller", "parameters": {},
                                     "sources": ["Custom.Caller"]},)
    # The imported export is part of the caller's source (and so is never sent alone).
    assert "LET Exported = 42" in collection.query


def test_compiling_refuses_what_cannot_run_with_the_artifact_named() -> None:
    library = _library(CALLER, EXPORTER,
                       "name: Custom.Server\ntype: SERVER\n"
                       "sources: [{query: SELECT 1 AS X FROM scope()}]\n",
                       "name: Custom.Empty\n")
    with pytest.raises(CompileError, match=r"Custom\.Caller calls or imports Custom\.Callee"):
        compile_collection(library, [ArtifactRequest("Custom.Caller")])
    with pytest.raises(CompileError, match=r"Custom\.Server is a SERVER artifact"):
        compile_collection(library, [ArtifactRequest("Custom.Server")])
    with pytest.raises(CompileError, match="has no sources"):
        compile_collection(library, [ArtifactRequest("Custom.Empty")])
    with pytest.raises(CompileError, match="no artifact to collect"):
        compile_collection(library, [])


@pytest.mark.parametrize("text", ["plain", "it's", "back\\slash", "'''", "\\'", "line\nbreak",
                                  "\\d+ \\n"])
def test_any_text_survives_as_a_vql_string(text: str) -> None:
    from velotui.vql import run_sync
    rows = run_sync(f"SELECT {vql_string(text)} AS V FROM scope()")
    assert rows == [{"V": text}]


def test_the_built_in_library_loads() -> None:
    library = Library.builtin()
    assert "Generic.Client.Info" in library
    assert library.search("client\\.info")[0].name == "Generic.Client.Info"


def test_several_unnamed_sources_are_named_by_their_place_so_their_rows_stay_apart() -> None:
    artifact = load_artifact(textwrap.dedent("""\
        name: Custom.Two
        sources:
          - query: SELECT 1 AS A FROM scope()
          - query: SELECT 2 AS B FROM scope()
        """))
    assert [artifact.source_label(s) for s in artifact.sources] == [
        "Custom.Two/Source0", "Custom.Two/Source1"]


def test_two_artifacts_calling_the_same_one_define_it_once() -> None:
    library = _library(CALLEE, """\
        name: Custom.A
        sources: [{query: "SELECT * FROM Artifact.Custom.Callee()"}]
        """, """\
        name: Custom.B
        sources: [{query: "SELECT * FROM Artifact.Custom.Callee(Value='b')"}]
        """)
    collection = compile_collection(library, [ArtifactRequest("Custom.A"),
                                              ArtifactRequest("Custom.B")])
    assert collection.query.count("LET `Artifact.Custom.Callee`") == 1


def test_statements_split_where_the_parser_counts_lines_whatever_the_text_holds() -> None:
    from velotui.artifacts.compiler import _statements

    text = "LET a = 'x\u2028y\ry'\nSELECT a FROM scope()\n"
    assert _statements(text) == [(False, "LET a = 'x\u2028y\ry'\n"),
                                 (True, "SELECT a FROM scope()\n")]
