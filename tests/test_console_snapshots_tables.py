"""The table screens as SVG snapshots in snapshots/, at 80x24 and 120x36: the hunts list
filtered, the clients with their labels, a row's detail, a stack (tally) and the column chooser.

Deterministic as the other snapshots: a seeded datastore, a fixed clock, no live updates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.console_driver import console, ready, steady, type_text, until
from tests.console_seed import seed
from velotui.screens.column_chooser import ColumnChooser
from velotui.screens.row_detail import RowDetailScreen
from velotui.screens.tally import TallyScreen

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])

RESULT_ROW = {
    "ClientId": "C.1a2b3c4d5e6f7081",
    "Fqdn": "fin-wks-01.corp.example",
    "FlowId": "F.1M8F0000000A1",
    "Pid": 4242,
    "Name": "sshd",
    "CommandLine": "/usr/sbin/sshd -D -o PermitRootLogin=no -o PasswordAuthentication=no "
                   "-o AuthorizedKeysCommand=/usr/local/bin/fetch-keys %u %f",
    "Parent": {"Pid": 1, "Name": "systemd", "Args": ["--system", "--deserialize", "31"]},
    "Tags": ["ssh", "daemon"],
    "Exited": None,
}

TALLY = [
    {"value": "/usr/sbin/sshd", "rows": 412, "clients": 206},
    {"value": "/usr/lib/systemd/systemd", "rows": 206, "clients": 206},
    {"value": "/tmp/.x/kworker", "rows": 2, "clients": 1},
    {"value": "/usr/bin/python3", "rows": 57, "clients": 31},
    {"value": None, "rows": 3, "clients": 3},
]


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed(tmp_path / "datastore")


async def _home(pilot: Pilot[Any]) -> None:
    await ready(pilot)
    await pilot.pause(0.2)


@SIZES
def test_home_filtered(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        await pilot.press("slash")
        await type_text(pilot, "run")
        await pilot.press("enter", "j")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_home_filter_typing(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        await pilot.press("slash")
        await type_text(pilot, "cron")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


async def _clients(pilot: Pilot[Any]) -> None:
    await _home(pilot)
    await pilot.press("c")
    await until(pilot, lambda: pilot.app.screen.query("#clients")
                and pilot.app.screen.query_one("#clients").row_count > 0, 30, "the clients")


@SIZES
def test_clients_labels(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _clients(pilot)
        await pilot.press("G")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_client_detail(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _clients(pilot)
        await pilot.press("j", "j", "j", "i")  # every fact (enter opens the page)
        await until(pilot, lambda: isinstance(pilot.app.screen, RowDetailScreen))
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_row_detail_of_a_cell(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        pilot.app.push_screen(RowDetailScreen("H.1M8F0000000A1 · results row 12", RESULT_ROW,
                                              column="CommandLine"))
        await until(pilot, lambda: isinstance(pilot.app.screen, RowDetailScreen))
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_tally(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        pilot.app.push_screen(TallyScreen("Exe", TALLY, note="5 values over 680 rows"))
        await until(pilot, lambda: isinstance(pilot.app.screen, TallyScreen))
        await pilot.press("G")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_tally_filtered(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        pilot.app.push_screen(TallyScreen("Exe", TALLY, note="5 values over 680 rows"))
        await until(pilot, lambda: isinstance(pilot.app.screen, TallyScreen))
        await pilot.press("slash")
        await type_text(pilot, "usr")
        await pilot.press("enter")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)


@SIZES
def test_column_chooser(snap_compare: Any, seeded: Path, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await _home(pilot)
        pilot.app.push_screen(ColumnChooser(list(RESULT_ROW), ["Pid", "Name", "CommandLine"]))
        await until(pilot, lambda: isinstance(pilot.app.screen, ColumnChooser))
        await pilot.press("j", "j", "j")
        await pilot.pause(0.3)
        await steady(pilot)

    assert snap_compare(console(seeded, snapshot=True), run_before=steps, terminal_size=size)
