"""Run a VQL conformance suite: ``python -m velotui.vql.conformance FILE.jsonl [--check]``.

Each line of the file is one case (``id``, ``query``, optional ``env`` and ``plugins``, and for
``--check`` the ``expect`` / ``expect_error`` / ``logs_error`` fields). Every case runs in a
fresh scope; one JSON line is printed per case; ``--check`` ends with ``N passed, M failed``
and exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from velotui.vql.engine import collect, compile_query, default_registry
from velotui.vql.parser import VQLSyntaxError
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import to_json_value


@dataclass
class CaseResult:
    """What one case produced."""

    id: str
    rows: list[Any] | None = None
    parse_error: str | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        if self.parse_error is not None:
            return {"id": self.id, "error": "parse", "message": self.parse_error}
        return {"id": self.id, "rows": self.rows}

    @property
    def logged_error(self) -> bool:
        return any(level == "error" for level, _ in self.logs)


def _stub_plugin(rows: list[Any]) -> Any:
    async def stub(scope: Scope, **_ignored: Any) -> AsyncIterator[Any]:
        for row in rows:
            yield row

    return stub


def _registry_for(case: dict[str, Any]) -> Registry:
    registry = default_registry()
    for name, rows in (case.get("plugins") or {}).items():
        registry.plugin(_stub_plugin(rows), name=name)
    return registry


async def run_case(case: dict[str, Any]) -> CaseResult:
    """Run one case in a fresh scope."""
    result = CaseResult(id=str(case.get("id")))
    registry = _registry_for(case)
    try:
        program = compile_query(case["query"], registry)
    except VQLSyntaxError as error:
        result.parse_error = str(error)
        return result

    def on_log(level: str, message: str) -> None:
        result.logs.append((level, message))

    rows = await collect(program, env=case.get("env"), registry=registry, on_log=on_log)
    result.rows = [to_json_value(row) for row in rows]
    return result


def same_value(actual: Any, expected: Any) -> bool:
    """Values equal as the corpus means it: numbers by value, booleans only with booleans,
    dicts as ordered (key, value) lists."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return actual == expected
    if isinstance(expected, dict) and isinstance(actual, dict):
        return list(actual.keys()) == list(expected.keys()) and all(
            same_value(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(
            same_value(a, e) for a, e in zip(actual, expected, strict=True)
        )
    return type(actual) is type(expected) and actual == expected


def check_case(case: dict[str, Any], result: CaseResult) -> str | None:
    """Why ``result`` does not meet the case's expectation, or None when it does."""
    if case.get("expect_error") == "parse":
        if result.parse_error is None:
            return "expected a parse error, but the query parsed"
        return None
    if result.parse_error is not None:
        return f"unexpected parse error: {result.parse_error}"
    if not same_value(result.rows, case.get("expect")):
        return f"rows differ: expected {json.dumps(case.get('expect'))}"
    if case.get("logs_error") and not result.logged_error:
        return "expected an error to be logged"
    return None


async def run_file(path: str, check: bool, out: Any) -> tuple[int, int]:
    passed = failed = 0
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                case = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}:{number}: not JSON: {error}") from None
            result = await run_case(case)
            record = result.as_json()
            if check:
                problem = check_case(case, result)
                record["ok"] = problem is None
                if problem is not None:
                    record["problem"] = problem
                    failed += 1
                else:
                    passed += 1
            print(json.dumps(record, ensure_ascii=False), file=out)
    return passed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m velotui.vql.conformance", description="Run a VQL conformance suite."
    )
    parser.add_argument("file", help="cases, one JSON object a line")
    parser.add_argument(
        "--check", action="store_true", help="compare with each case's expectation and count passes"
    )
    args = parser.parse_args(argv)
    passed, failed = asyncio.run(run_file(args.file, args.check, sys.stdout))
    if args.check:
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
