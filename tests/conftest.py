"""Shared fixtures: a real server on loopback over a real datastore in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
