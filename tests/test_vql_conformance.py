"""The VQL conformance corpus (expected output from Velociraptor's own engine) passes in full,
through the same command other suites will be run with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The corpus lives in ../shared beside the checkout; tests/vql holds a copy so a lone clone runs it.
CORPORA = [
    p
    for p in (HERE.parent.parent / "shared/vql/conformance.jsonl", HERE / "vql/conformance.jsonl")
    if p.exists()
]


@pytest.mark.parametrize("corpus", CORPORA, ids=lambda p: str(p.parent.parent.name))
def test_every_case_of_the_corpus_passes(corpus: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "velotui.vql.conformance", str(corpus), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.strip().splitlines()
    cases = sum(1 for line in corpus.read_text().splitlines() if line.strip())
    failures = [line for line in lines[:-1] if not json.loads(line)["ok"]]
    assert failures == []
    assert lines[-1] == f"{cases} passed, 0 failed"
    assert result.returncode == 0


def test_without_check_prints_rows_and_parse_errors(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        json.dumps({"id": "ok", "query": "SELECT x + 1 AS y FROM scope()", "env": {"x": 1}})
        + "\n"
        + json.dumps({"id": "bad", "query": "SELECT 2-1 FROM scope()"})
        + "\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "velotui.vql.conformance", str(suite)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {"id": "ok", "rows": [{"y": 2}]}
    assert second["id"] == "bad" and second["error"] == "parse"
    assert "line 1, col 9" in second["message"]


def test_check_reports_a_wrong_expectation(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        json.dumps({"id": "wrong", "query": "SELECT 1 AS a FROM scope()", "expect": [{"a": 2}]})
        + "\n"
        + json.dumps(
            {
                "id": "order",
                "query": "SELECT 1 AS a, 2 AS b FROM scope()",
                "expect": [{"b": 2, "a": 1}],
            }
        )
        + "\n"
        + json.dumps({"id": "bool", "query": "SELECT TRUE AS a FROM scope()", "expect": [{"a": 1}]})
        + "\n"
        + json.dumps(
            {
                "id": "logs",
                "query": "SELECT 1 AS a FROM scope()",
                "expect": [{"a": 1}],
                "logs_error": True,
            }
        )
        + "\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "velotui.vql.conformance", str(suite), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "0 passed, 4 failed"
