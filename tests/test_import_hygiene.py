"""Dependencies point one way (console -> server -> vql, agent -> vql): checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, absolute names."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_the_engine_imports_no_console_server_or_network() -> None:
    forbidden = (
        "textual",
        "rich",
        "websockets",
        "aiosqlite",
        "velotui.server",
        "velotui.app",
        "velotui.screens",
        "velotui.widgets",
        "velotui.cli",
        "agent",
    )
    assert offenders("velotui/vql", forbidden) == []


def test_the_server_never_imports_textual_or_the_console() -> None:
    forbidden = ("textual", "velotui.app", "velotui.screens", "velotui.widgets", "velotui.cli")
    assert offenders("velotui/server", forbidden) == []


def test_the_agent_uses_only_the_engine_and_the_protocol() -> None:
    allowed = ("velotui.vql", "velotui.server.protocol", "velotui.server.runtime",
               "velotui.data_folders", "velotui.durable_files")
    wrong = sorted(
        f"{file} imports {name}"
        for file, names in imported_modules("agent").items()
        for name in names
        if (name == "velotui" or name.startswith("velotui."))
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    )
    assert wrong == []
    assert offenders("agent", ("textual",)) == []


def test_the_checks_see_the_files_they_judge() -> None:
    # An import check over no files would pass vacuously.
    assert any(file.endswith("compiler.py") for file in imported_modules("velotui/vql"))
    assert "velotui.vql.registry" in imported_modules("velotui/vql")["velotui/vql/engine.py"]
