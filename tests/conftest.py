"""Shared fixtures: a real server on loopback over a real datastore in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fleet import Fleet
from velotui.server.datastore import Datastore
from velotui.server.server import Server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A started server (TLS, port chosen by the OS) on a fresh datastore."""
    running = Server(Datastore.open(tmp_path / "datastore"), "127.0.0.1:0")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


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
