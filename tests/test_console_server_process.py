"""The embedded server runs as the console's child process: the console's frames and keys never
wait on it, what it refuses comes back with its message, and quitting, a failed start or the
console's own abrupt death leave nothing running.

The server is held still with SIGSTOP (and let go with SIGCONT), never with sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.console_driver import console, ready, until
from tests.console_seed import CLIENTS, HUNTS, seed
from velotui.app import VelotuiApp
from velotui.screens.clients import ClientsScreen
from velotui.screens.help import HelpScreen
from velotui.screens.hunts import HuntsScreen
from velotui.server.datastore import Datastore
from velotui.server.errors import ServiceError
from velotui.server_link import EmbeddedLink

SIZE = (100, 32)
ROOT = Path(__file__).resolve().parent.parent


def wait_gone(pid: int, timeout: float = 60) -> None:
    """Wait until process ``pid`` has exited (reaped, or a zombie nobody will reap)."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass


async def test_keys_and_frames_go_on_while_the_server_process_is_stopped(
    tmp_path: Path
) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        server = app.link.process
        assert server is not None and server.pid != os.getpid()
        os.kill(server.pid, signal.SIGSTOP)
        try:
            answer = asyncio.create_task(app.api.list_hunts())

            # Keys are handled and new screens drawn while the server cannot run at all.
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            drawn = threading.Event()
            app.screen.screen_layout_refresh_signal.subscribe(app, lambda _: drawn.set())
            app.screen.refresh(layout=True)
            await until(pilot, drawn.is_set, 10, "a frame of the help screen")
            await pilot.press("escape")
            await pilot.press("c")
            assert isinstance(app.screen, ClientsScreen)  # its table waits for the server
            table = app.screen.query_one("#clients")
            assert table.row_count == 0
            assert not answer.done()
        finally:
            os.kill(server.pid, signal.SIGCONT)

        # Once the server goes on, what was asked meanwhile is answered.
        assert sorted(hunt["hunt_id"] for hunt in await answer) == sorted(h[0] for h in HUNTS)
        await until(pilot, lambda: table.row_count == len(CLIENTS), 10, "the clients")


async def test_quitting_stops_the_server_process_and_its_fleet_which_yield_to_the_console(
    tmp_path: Path
) -> None:
    datastore = tmp_path / "datastore"
    app = console(datastore, demo=2)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("2 of 2"), 90, "the demo fleet")
        server = psutil.Process(app.link.process.pid)
        fleet = [child.pid for child in server.children()]
        assert fleet, "the demo fleet runs under the server process"
        # When the cores are short the operator's keys come first, the stand-in machines last.
        console_nice = os.getpriority(os.PRIO_PROCESS, 0)
        assert server.nice() > console_nice
        assert all(psutil.Process(pid).nice() > server.nice() for pid in fleet)
        assert Datastore.open(datastore).read_server_address() is not None
        await pilot.press("q")
    assert app.return_code == 0
    assert app.link.process is None
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    for pid in fleet:
        wait_gone(pid, 1)
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    assert Datastore.open(datastore).read_server_address() is None  # it stopped, cleanly


async def test_the_audit_log_names_the_operator_the_console_acts_as(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.api.label_client(client_id=CLIENTS[0][0], add=["Triage"])
        audit = await app.api.audit_log()
        assert audit[0]["actor"] == "admin"  # the first admin: no operator is named as the user


async def test_a_console_that_cannot_start_says_why_and_leaves_nothing_running(
    tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    app = VelotuiApp(EmbeddedLink(datastore_path=tmp_path / "datastore",
                                  listen=f"127.0.0.1:{taken.getsockname()[1]}"))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.failure is not None, 60, "the failure")
    finally:
        taken.close()
    assert app.failure is not None and app.failure.startswith("velotui: cannot start: ")
    assert "cannot listen on 127.0.0.1:" in app.failure
    assert "address already in use" in app.failure.lower()
    assert "\n" not in app.failure
    assert app.return_value == 1
    assert app.link.process is None
    left = {child.pid for child in psutil.Process().children(recursive=True)} - children_before
    assert left == set()


async def test_a_refusal_comes_back_with_the_servers_message(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        with pytest.raises(ServiceError, match=r"^no hunt 'H\.0000000000000' \(see: velotui"):
            await app.api.get_hunt(hunt_id="H.0000000000000")
        with pytest.raises(ServiceError, match=r"^hunt ID must look like"):
            async for _event in app.api.export_hunt(hunt_id="nonsense"):
                pass
        assert isinstance(app.screen, HuntsScreen)


CONSOLE_THAT_DIES = """
import asyncio, sys
from pathlib import Path
from velotui.server_link import EmbeddedLink

async def main():
    link = EmbeddedLink(datastore_path=Path(sys.argv[1]), listen="127.0.0.1:0")
    await link.start()
    print(link.process.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_the_server_stops_cleanly_when_its_console_is_killed(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    dying = subprocess.Popen([sys.executable, "-c", CONSOLE_THAT_DIES, str(datastore)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout is not None
        server_pid = int(dying.stdout.readline())
        assert Datastore.open(datastore).read_server_address() is not None
        dying.kill()  # no goodbye: the server's standard input simply ends
        dying.wait()
        wait_gone(server_pid)
        assert not psutil.pid_exists(server_pid) or \
            psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
        # It stopped the way a stop does: its address withdrawn, its database closed.
        assert Datastore.open(datastore).read_server_address() is None
    finally:
        if dying.poll() is None:
            dying.kill()
