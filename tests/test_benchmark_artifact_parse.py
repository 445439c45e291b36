"""benchmarks.artifact_parse: which VQL blocks of artifact files it counts, and how it reports
a block that does not parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import artifact_parse

GOOD = """\
name: Test.Good
precondition: SELECT OS FROM info() WHERE OS = 'linux'
export: |
  LET helper(x) = x + 1
parameters:
  - name: query
    default: not VQL, only a parameter called query
sources:
  - precondition:
      SELECT * FROM info()
    query: |
      SELECT helper(x=1) AS Two FROM scope()
  - name: Second
    query: ""
  - queries:
      - SELECT 1 FROM scope()
      - |
        SELECT 2 FROM scope()
"""

BAD = """\
name: Test.Bad
sources:
  - query: |
      LET a = 1

      SELECT * FROM
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], dict]:
    code = artifact_parse.main([str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    return code, lines[:-1], json.loads(lines[-1])


def test_counts_each_vql_block_and_only_those(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Good.yaml").write_text(GOOD)
    code, failures, counts = run(tmp_path, capsys)
    # precondition, export, a source's precondition and query, and two older `queries` texts;
    # the empty query and the parameter called query are no blocks.
    assert counts == {"blocks": 6, "parsed": 6, "failed": 0}
    assert failures == []
    assert code == 0


def test_reports_a_failing_block_with_its_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nested").mkdir()
    path = tmp_path / "nested" / "Bad.yaml"
    path.write_text(BAD)
    code, failures, counts = run(tmp_path, capsys)
    assert counts == {"blocks": 1, "parsed": 0, "failed": 1}
    # The query's third line is the file's sixth.
    assert failures == [
        f"{path}:6:14: sources[0].query: unexpected end of the query (expected a name)"
    ]
    assert code == 1


def test_a_file_that_is_not_yaml_is_reported_and_not_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Broken.yaml").write_text("sources: [\n")
    code, failures, counts = run(tmp_path, capsys)
    assert counts == {"blocks": 0, "parsed": 0, "failed": 0}
    assert len(failures) == 1 and failures[0].startswith(f"{tmp_path / 'Broken.yaml'}: not YAML")
    assert code == 1
