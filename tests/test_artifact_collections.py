"""Compiled collections, run through the engine with the agent's plugins: parameters converted
by type, preconditions, artifacts calling artifacts (with source=), imports and exports, source(),
and every row naming its source."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from agent.plugins import client_registry
from velotui.artifacts import ArtifactRequest, Library, compile_collection, load_artifact
from velotui.vql import collect


def _library(*texts: str) -> Library:
    return Library(load_artifact(textwrap.dedent(t), f"{i}.yaml") for i, t in enumerate(texts))


async def _collect(library: Library, name: str, **parameters: str) -> tuple[list[dict], list]:
    collection = compile_collection(library, [ArtifactRequest(name, parameters)])
    errors: list[str] = []
    rows = await collect(collection.query, registry=client_registry(),
                         on_log=lambda level, message: errors.append(message)
                         if level.upper() in ("ERROR", "WARN", "WARNING") else None)
    return rows, errors


TYPES = """\
    name: Custom.Types
    parameters:
      - {name: Number, type: int, default: "41"}
      - {name: Ratio, type: float, default: "0.5"}
      - {name: Yes, type: bool, default: "Y"}
      - {name: No, type: bool}
      - {name: Table, type: csv, default: "Name,Size\\nalpha,1\\nbeta,2\\n"}
      - {name: Doc, type: json, default: '{"a": [1, 2]}'}
      - {name: List, type: json_array, default: '["x", "y"]'}
      - {name: When, type: timestamp, default: "2024-05-01T10:00:00Z"}
      - {name: Text, default: "as is"}
    sources:
      - query: |
          SELECT Number + 1 AS Next, Ratio * 2 AS Whole, Yes, No, Table.Name AS Names,
                 Doc.a[1] AS Second, len(list=List) AS Items, When.Year AS Year, Text
          FROM scope()
    """


async def test_typed_parameters_arrive_as_text_and_are_converted_in_the_source() -> None:
    rows, errors = await _collect(_library(TYPES), "Custom.Types")
    assert errors == []
    assert rows == [{"Next": 42, "Whole": 1.0, "Yes": True, "No": False,
                     "Names": ["alpha", "beta"], "Second": 2, "Items": 2, "Year": 2024,
                     "Text": "as is", "_Source": "Custom.Types"}]
    rows, _ = await _collect(_library(TYPES), "Custom.Types", Number="1", No="true",
                             Yes="n", Table="Name\nonly\n")
    assert (rows[0]["Next"], rows[0]["No"], rows[0]["Yes"], rows[0]["Names"]) == \
        (2, True, False, ["only"])


CALLER = """\
    name: Custom.Caller
    imports: [Custom.Shared]
    parameters: [{name: Count, type: int, default: "2"}]
    sources:
      - name: Direct
        query: SELECT Shared AS FromExport, Count FROM scope()
      - name: Called
        query: |
          SELECT * FROM Artifact.Custom.Callee(Upto=Count, source='Numbers')
      - name: Again
        query: |
          SELECT count() AS Rows FROM source(source='Called') GROUP BY 1
    """
CALLEE = """\
    name: Custom.Callee
    parameters: [{name: Upto, type: int, default: "10"}]
    sources:
      - name: Numbers
        query: SELECT _value AS N FROM range(start=1, end=Upto + 1)
      - name: Other
        query: SELECT 'never' AS N FROM scope()
    """
SHARED = """\
    name: Custom.Shared
    export: |
      LET Shared = 'exported'
    """


async def test_an_artifact_calls_another_by_source_with_typed_values_and_imports_exports() -> None:
    rows, errors = await _collect(_library(CALLER, CALLEE, SHARED), "Custom.Caller", Count="3")
    assert errors == []
    by_source: dict[str, list[Any]] = {}
    for row in rows:
        by_source.setdefault(row.pop("_Source"), []).append(row)
    assert by_source["Custom.Caller/Direct"] == [{"FromExport": "exported", "Count": 3}]
    # A number passed on is not converted again, and only the Numbers source ran.
    assert by_source["Custom.Caller/Called"] == [{"N": 1}, {"N": 2}, {"N": 3}]
    # source() ran the Called source again, with this run's Count.
    assert by_source["Custom.Caller/Again"] == [{"Rows": 3}]


PRECONDITIONS = """\
    name: Custom.Preconditions
    precondition: SELECT * FROM info() WHERE OS = 'linux' OR OS = 'darwin' OR OS = 'windows'
    sources:
      - name: Always
        query: SELECT 'ran' AS Result FROM scope()
      - name: Never
        precondition: SELECT * FROM info() WHERE OS = 'plan9'
        query: SELECT 'ran' AS Result FROM scope()
    """
NEVER = """\
    name: Custom.NeverHere
    precondition: SELECT * FROM info() WHERE OS = 'plan9'
    sources:
      - query: SELECT 'ran' AS Result FROM scope()
    """


async def test_preconditions_of_the_artifact_and_of_each_source_decide_what_runs() -> None:
    library = _library(PRECONDITIONS, NEVER)
    rows, errors = await _collect(library, "Custom.Preconditions")
    assert errors == []
    assert rows == [{"Result": "ran", "_Source": "Custom.Preconditions/Always"}]
    rows, errors = await _collect(library, "Custom.NeverHere")
    assert (rows, errors) == ([], [])


async def test_sources_share_one_scope_in_order_and_each_artifact_has_its_own() -> None:
    # As in Velociraptor's collections: a LET of one source is seen by the next.
    library = _library("""\
        name: Custom.Scopes
        parameters: [{name: P, default: mine}]
        sources:
          - name: First
            query: |
              LET Secret <= 'first'
              SELECT Secret, P FROM scope()
          - name: Second
            query: SELECT get(field='Secret') AS Secret, P FROM scope()
        """, """\
        name: Custom.Other
        sources:
          - query: SELECT get(field='Secret') AS Secret, get(field='P') AS P FROM scope()
        """)
    collection = compile_collection(library, [ArtifactRequest("Custom.Scopes"),
                                              ArtifactRequest("Custom.Other")])
    rows = await collect(collection.query, registry=client_registry())
    assert [(r["_Source"], r["Secret"], r["P"]) for r in rows] == [
        ("Custom.Scopes/First", "first", "mine"), ("Custom.Scopes/Second", "first", "mine"),
        ("Custom.Other", None, None)]


async def test_a_source_whose_precondition_fails_runs_none_of_its_statements() -> None:
    library = _library("""\
        name: Custom.Gated
        sources:
          - name: Skipped
            precondition: SELECT * FROM info() WHERE OS = 'plan9'
            query: |
              LET Boom <= SELECT * FROM no_such_plugin()
              SELECT * FROM Boom
          - name: Ran
            query: SELECT 'yes' AS Ran FROM scope()
        """)
    rows, errors = await _collect(library, "Custom.Gated")
    assert (rows, errors) == ([{"Ran": "yes", "_Source": "Custom.Gated/Ran"}], [])


@pytest.mark.parametrize("arguments", ["client_id='C.1'", "hunt_id='H.1'", "notebook_id='N.1'"])
async def test_source_refuses_to_read_stored_results_and_says_why(arguments: str) -> None:
    library = _library(f"""\
        name: Custom.Stored
        sources:
          - query: SELECT * FROM source({arguments})
        """)
    rows, errors = await _collect(library, "Custom.Stored")
    assert rows == []
    assert any("results stored on the server cannot be read" in e for e in errors), errors


async def test_a_source_may_call_its_own_artifact_for_another_source() -> None:
    library = _library("""\
        name: Custom.Self
        sources:
          - name: A
            query: SELECT 'a' AS Letter FROM scope()
          - name: B
            query: SELECT Letter + '!' AS Shout FROM Artifact.Custom.Self(source='A')
        """)
    rows, errors = await _collect(library, "Custom.Self")
    assert errors == []
    assert rows == [{"Letter": "a", "_Source": "Custom.Self/A"},
                    {"Shout": "a!", "_Source": "Custom.Self/B"}]
