"""The console acts as an operator: the embedded one as the first admin by default or as
``--operator NAME``, a ``--connect``ed one as its token file's. Its header says who; the keys
its role may not use are greyed out in the footer and refuse in one line; nothing is done.
Real embedded server processes and a real server on loopback, over seeded SQLite datastores."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.console_driver import console, ready, until
from tests.console_seed import CLIENTS, HUNTS, seed
from velotui.app import VelotuiApp
from velotui.cli import build_parser
from velotui.cli.console import _link
from velotui.screens.clients import ClientsScreen
from velotui.screens.hunts import HuntsScreen
from velotui.server.datastore import Datastore
from velotui.server.server import Server
from velotui.server_link import EmbeddedLink

SIZE = (120, 32)


def add_operator(datastore: Path, name: str, role: str) -> str:
    """Add an operator through the service of a server run on the datastore; its token."""

    async def add() -> str:
        server = Server(Datastore.open(datastore), "127.0.0.1:0")
        await server.start()
        try:
            return (await server.service("admin").add_operator(name=name, role=role))["token"]
        finally:
            await server.stop()

    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(add())))
    thread.start()
    thread.join()
    return result[0]


def notices(app: VelotuiApp) -> list[str]:
    return [str(notice.message) for notice in app._notifications]


def key_enabled(app: VelotuiApp, key: str) -> bool | None:
    """Whether the footer shows ``key`` usable (None: not shown at all)."""
    active = app.screen.active_bindings.get(key)
    return None if active is None else active.enabled


async def test_a_reader_sees_greyed_keys_that_refuse_in_one_line(tmp_path: Path) -> None:
    datastore = seed(tmp_path / "datastore")
    add_operator(datastore, "rita", "reader")
    app = VelotuiApp(EmbeddedLink(datastore_path=datastore, listen="127.0.0.1:0",
                                  operator="rita"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: "as rita (reader)" in app.sub_title, 10, "the header")
        assert app.sub_title.endswith(" · as rita (reader)")
        # Reading goes on; what changes hunts is greyed out.
        assert key_enabled(app, "enter") is True
        for key in ("n", "s", "p", "x", "u", "e"):
            assert key_enabled(app, key) is False, key
        await pilot.press("n")
        await until(pilot, lambda: notices(app), 10, "the refusal")
        assert notices(app) == ["create_hunt needs the hunter role; rita is reader"]
        assert isinstance(app.screen, HuntsScreen)  # no form opened
        await pilot.press("s")
        await until(pilot, lambda: len(notices(app)) == 2, 10, "the second refusal")
        assert notices(app)[1] == "start_hunt needs the hunter role; rita is reader"
        assert sorted(h["state"] for h in await app.api.list_hunts(all=True)) == \
            sorted(h[2] for h in HUNTS)  # nothing started
        await pilot.press("c")
        assert isinstance(app.screen, ClientsScreen)
        await until(pilot, lambda: app.screen.query_one("#clients").row_count == len(CLIENTS))
        assert key_enabled(app, "plus") is False and key_enabled(app, "enter") is True
        audit = await app.api.audit_log()
        assert [entry["action"] for entry in audit] == ["operator_add"]


async def test_the_embedded_console_acts_as_the_first_admin_by_default(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: "as admin (admin)" in app.sub_title, 10, "the header")
        assert key_enabled(app, "n") is True
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, HuntsScreen), 10, "the form")
        assert notices(app) == []


async def test_an_unknown_operator_is_refused_in_one_line(tmp_path: Path) -> None:
    app = VelotuiApp(EmbeddedLink(datastore_path=seed(tmp_path / "datastore"),
                                  listen="127.0.0.1:0", operator="nobody"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.failure is not None, 60, "the failure")
    assert app.failure is not None
    assert "no operator 'nobody' (see: velotui operator list)" in app.failure
    assert "\n" not in app.failure


async def test_connect_acts_as_the_token_files_operator(tmp_path: Path) -> None:
    datastore = seed(tmp_path / "datastore")
    token_file = tmp_path / "hugo.token"
    token_file.write_text(add_operator(datastore, "hugo", "hunter") + "\n")
    server = Server(Datastore.open(datastore), "127.0.0.1:0")
    await server.start()
    try:
        args = build_parser().parse_args(["--connect", "--datastore", str(datastore),
                                          "--token-file", str(token_file)])
        app = VelotuiApp(_link(args))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await until(pilot, lambda: "as hugo (hunter)" in app.sub_title, 10, "the header")
            assert key_enabled(app, "n") is True and key_enabled(app, "s") is True
            assert key_enabled(app, "D") is False  # deleting is an admin's
            hunt_id = HUNTS[0][0]
            assert app.key_refusal("delete_hunt") == \
                "delete_hunt needs the admin role; hugo is hunter"
            assert hunt_id in app.hunts
    finally:
        await server.stop()
