"""A reader's console as an SVG snapshot (snapshots/): the header says "as rita (reader)" and
the keys that change hunts are greyed out in the footer. Fixed datastore, clock, theme and size;
update with `pytest --snapshot-update` after checking the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from tests.console_driver import ready, steady, until
from tests.console_seed import NOW, seed
from tests.test_console_operators import add_operator
from velotui.app import VelotuiApp
from velotui.server_link import EmbeddedLink


def test_home_as_a_reader(snap_compare: Any, tmp_path: Path) -> None:
    datastore = seed(tmp_path / "datastore")
    add_operator(datastore, "rita", "reader")
    app = VelotuiApp(EmbeddedLink(datastore_path=datastore, listen="127.0.0.1:0",
                                  operator="rita"), clock=lambda: NOW, follow=False)

    async def run_before(pilot: Pilot[Any]) -> None:
        await ready(pilot)
        await until(pilot, lambda: "as rita (reader)" in pilot.app.sub_title, 10, "the header")
        await steady(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 36))
