"""A console attached with --connect (RemoteLink) to a real `velotui serve` process outlives the
server's restart: it says it is reconnecting, tries again, and once the server is back shows
what happened meanwhile and follows the hunts again. A console that cannot start says why once.
"""

from __future__ import annotations

import fcntl
import os
import pty
import socket
import struct
import subprocess
import termios
from pathlib import Path

from tests.console_driver import ready, until
from tests.processes import VELOTUI, ServerProcess, velotui
from velotui.app import VelotuiApp
from velotui.screens.hunts import HuntsScreen
from velotui.server.datastore import Datastore
from velotui.server_link import RemoteLink

SIZE = (100, 32)

HEADER = "0 of 0 clients online · as admin (admin)"  # the datastore's first admin


def hunts_table_ids(app: VelotuiApp) -> set[str]:
    table = app.screen.query_one("#hunts")
    return {str(key.value) for key in table.rows}


async def test_a_connected_console_reconnects_when_its_server_restarts(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    store = Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    try:
        app = VelotuiApp(RemoteLink(url=server.url, token=store.api_token(),
                                    ca_pem=store.ca_pem()))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await until(pilot, lambda: app.sub_title == HEADER, 10)

            server.kill()  # as a restart by a service manager would, without a goodbye
            await until(pilot, lambda: app.sub_title == f"reconnecting to {server.url}…", 30,
                        "the console to say it is reconnecting")
            assert app.return_code is None and isinstance(app.screen, HuntsScreen)

            server.start()
            created = velotui("hunt", "create", "--datastore", str(datastore), "--query",
                              "SELECT * FROM info()", "--description", "after the restart")
            assert created.returncode == 0, created.stderr
            hunt_id = created.stdout.strip()
            await until(pilot, lambda: hunt_id in hunts_table_ids(app), 60,
                        "the hunt created after the restart, in the table")
            await until(pilot, lambda: app.sub_title == HEADER, 30,
                        "the header back to the fleet")
            assert not app.reconnecting
            assert any(f"reconnected to {server.url}" in str(n.message)
                       for n in app._notifications)

            # Following again: a change made elsewhere is pushed to the console.
            started = velotui("hunt", "start", hunt_id, "--datastore", str(datastore))
            assert started.returncode == 0, started.stderr
            await until(pilot, lambda: app.hunts[hunt_id]["state"] == "running", 30,
                        "the start pushed to the console")
            await pilot.press("ctrl+q")  # a --connect'ed server runs on: nothing to ask
        assert app.return_code == 0
        assert server.process is not None and server.process.poll() is None
    finally:
        server.stop()


def test_a_console_that_cannot_start_says_why_once(tmp_path: Path) -> None:
    """The real command in a terminal (a pseudo-terminal): its port is taken."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    for name in ("COLUMNS", "LINES", "NO_COLOR"):
        env.pop(name, None)
    try:
        console = subprocess.Popen(
            [VELOTUI, "--datastore", str(tmp_path / "datastore"), "--listen",
             f"127.0.0.1:{taken.getsockname()[1]}"],
            stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
        os.close(terminal)
        said = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            said += chunk
        assert console.wait(timeout=60) == 1
    finally:
        taken.close()
        os.close(controller)
    assert said.decode(errors="replace").count("velotui: cannot start:") == 1, said
