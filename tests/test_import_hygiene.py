"""Dependencies point one way, as DESIGN.md draws them, with no exceptions:

    console -> server -> artifacts -> vql        server -> wire        agent -> wire, vql

Nothing imports the console; the agent never imports the server; the engine and the wire import
nothing else of ours. A few small neutral modules at the top of the package (files written
atomically, per-user folders, process tuning) may be used by anyone. Checked on the source.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONSOLE = ("velotui.app", "velotui.screens", "velotui.widgets", "velotui.cli",
           "velotui.server_link", "velotui.embedded_server", "velotui.display")
NEUTRAL = ("velotui.runtime", "velotui.data_folders", "velotui.durable_files")


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, absolute names (the package itself,
    ``velotui``, counts as importing nothing: it holds only the version)."""
    found: dict[str, set[str]] = {}
    root = ROOT / package
    paths = [root] if root.is_file() else sorted(root.rglob("*.py"))
    for path in paths:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update(
                    f"{node.module}.{alias.name}" if node.module == "velotui" else node.module
                    for alias in node.names
                )
        found[str(path.relative_to(ROOT))] = names
    return found


def ours_outside(package: str, allowed: tuple[str, ...]) -> list[str]:
    """Imports of our own modules (velotui, agent) by ``package`` that ``allowed`` does not
    cover."""
    own = package.replace("/", ".").removesuffix(".py")
    return sorted(
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in names
        if name.split(".")[0] in ("velotui", "agent")
        and not any(name == a or name.startswith(a + ".") for a in (own, *allowed))
    )


def third_party(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_the_engine_imports_nothing_else_of_ours_and_no_console_or_network() -> None:
    assert ours_outside("velotui/vql", ()) == []
    assert third_party("velotui/vql", ("textual", "rich", "websockets", "aiosqlite")) == []


def test_the_wire_imports_nothing_else_of_ours() -> None:
    assert ours_outside("velotui/wire", ()) == []
    assert third_party("velotui/wire", ("textual", "rich", "aiosqlite")) == []


def test_the_neutral_modules_import_nothing_else_of_ours() -> None:
    for module in NEUTRAL:
        assert ours_outside(module.replace(".", "/") + ".py", ()) == []


def test_the_agent_uses_only_the_wire_the_engine_and_the_neutral_modules() -> None:
    assert ours_outside("agent", ("velotui.wire", "velotui.vql", *NEUTRAL)) == []
    assert third_party("agent", ("textual", "aiosqlite")) == []


def test_the_server_never_imports_the_console_or_the_agent() -> None:
    assert ours_outside("velotui/server", ("velotui.wire", "velotui.vql", "velotui.artifacts",
                                           *NEUTRAL, "velotui.__version__")) == []
    assert third_party("velotui/server", ("textual",)) == []


def test_artifacts_use_only_the_engine() -> None:
    assert ours_outside("velotui/artifacts", ("velotui.vql",)) == []
    assert third_party("velotui/artifacts", ("textual", "rich", "websockets", "aiosqlite")) == []
    assert ours_outside("velotui/artifacts", ()) != []  # the engine is really used


def test_nothing_below_the_console_imports_it() -> None:
    for package in ("velotui/vql", "velotui/wire", "velotui/artifacts", "velotui/server",
                    "agent"):
        assert third_party(package, CONSOLE) == [], package


SQL = re.compile(r"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+(flows|flow_rows|flow_logs|hunts"
                 r"|hunt_clients|clients|audit|uploads|meta|messages|progress)\b")
# The server's SQL lives in its data layer; the agent's (its outbox file) in one module.
SQL_HOMES = {"velotui": ROOT / "velotui" / "server" / "data",
             "agent": ROOT / "agent" / "outbox_file.py"}
# The VQL plugin sqlite() reads databases found on the machine (browsers' histories), not ours:
# it needs the driver, and holds no SQL of its own.
DATABASE_READERS = {ROOT / "agent" / "plugins" / "sqlite_files.py"}


def sql_outside_its_home() -> list[str]:
    """Text that names a table in SQL, or an import of a database driver, anywhere outside the
    one place each program keeps its SQL."""
    found = []
    for package, home in SQL_HOMES.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == home or home in path.parents:
                continue
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and SQL.search(node.value):
                    found.append(f"{relative}:{node.lineno} {node.value[:40]!r}")
            if path in DATABASE_READERS:
                continue
            found += [f"{relative} imports {name}" for name in imported_modules(relative)[relative]
                      if name.split(".")[0] in ("sqlite3", "aiosqlite")]
    return found


def test_sql_lives_in_the_data_layer_only() -> None:
    assert sql_outside_its_home() == []
    for home in SQL_HOMES.values():  # the check looks where SQL is
        files = [home] if home.is_file() else list(home.glob("*.py"))
        assert any(SQL.search(path.read_text()) for path in files), home


def test_the_checks_see_the_files_they_judge() -> None:
    # An import check over no files would pass vacuously.
    assert any(file.endswith("compiler.py") for file in imported_modules("velotui/vql"))
    assert "velotui.vql.registry" in imported_modules("velotui/vql")["velotui/vql/engine.py"]
    assert "velotui.wire.protocol" in imported_modules("agent")["agent/session.py"]
    assert ours_outside("agent", ("velotui.vql", *NEUTRAL)) != []  # the wire is really used
