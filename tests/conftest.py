"""Shared fixtures: a real server on loopback over a real datastore in a temporary folder, its
database SQLite, or (in modules marked ``both_backends``) each of SQLite and a real PostgreSQL in
turn."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fleet import Fleet
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from velotui.server.datastore import Datastore
from velotui.server.server import Server

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test marked both_backends (a module's pytestmark) runs once per database.
    if "backend" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("both_backends") is not None:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database under the test's datastore: "sqlite", unless the test is marked
    ``both_backends`` (then "sqlite" and "postgresql" in turn)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL database of the test's datastore (a fresh one), or None for SQLite."""
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return None


def open_datastore(root: Path, database_url: str | None = None) -> Datastore:
    """The datastore at ``root``, its database at ``database_url`` when one is given."""
    datastore = Datastore.open(root)
    if database_url is not None:
        datastore.set_database_url(database_url)
    return datastore


@pytest.fixture
async def server(tmp_path: Path, database_url: str | None) -> AsyncIterator[Server]:
    """A started server (TLS, port chosen by the OS) on a fresh datastore."""
    running = Server(open_datastore(tmp_path / "datastore", database_url), "127.0.0.1:0")
    await running.start()
    try:
        yield running
    finally:
        await stop_or_say_what_hangs(running)


STOP_GUARD = 120.0  # seconds; a stop takes well under one: this only turns a hang into a report


async def stop_or_say_what_hangs(server: Server) -> None:
    """Stop ``server``; if that hangs, fail with the stack of every task still waiting (a
    hang seen once on a loaded machine left the whole suite waiting instead)."""
    stopping = asyncio.ensure_future(server.stop())
    done, _ = await asyncio.wait({stopping}, timeout=STOP_GUARD)
    if stopping in done:
        stopping.result()
        return
    report = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            report.write(f"--- {task.get_name()}\n")
            task.print_stack(limit=20, file=report)
    stopping.cancel()
    pytest.fail(f"the server's stop hung for {STOP_GUARD:.0f} s; its tasks:\n"
                f"{report.getvalue()}", pytrace=False)


@pytest.fixture
async def fleet(server: Server, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Agents simulated in this process, connected to ``server`` (modules whose fleet is of
    another kind, real agent processes say, define their own)."""
    agents = Fleet(server, tmp_path / "agents")
    try:
        yield agents
    finally:
        await agents.close()


# Console snapshots live in the top-level snapshots/ folder, one folder per test module, rather
# than beside the tests where pytest-textual-snapshot keeps them by default. This reaches into
# the plugin (pinned at 1.1.0 for that reason).
SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


def _snapshot_folder(cls: type, *, test_location: object) -> str:
    return str(SNAPSHOTS / Path(test_location.filepath).stem)  # type: ignore[attr-defined]


try:
    from pytest_textual_snapshot import SVGImageExtension

    SVGImageExtension.dirname = classmethod(_snapshot_folder)  # type: ignore[method-assign]
except ImportError:  # pragma: no cover - the test extra is always installed for the suite
    pass


@pytest.fixture(autouse=True)
def _colour_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # NO_COLOR in a developer's shell would change every snapshot.
    monkeypatch.delenv("NO_COLOR", raising=False)
