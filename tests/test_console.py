"""The console driven by keys with Pilot: the real app, its embedded server, real demo agents."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import zipfile
from pathlib import Path

import pytest

from agent.plugins.facts import simulated_facts
from tests.console_driver import console, ready, type_text, until
from tests.console_seed import CLIENTS, FAR_FUTURE, NOW, seed
from tests.data_builder import DataBuilder
from tests.processes import AgentProcess, write_agent_config
from velotui.screens.clients import ClientsScreen
from velotui.screens.dialogs import ConfirmScreen, ExportScreen
from velotui.screens.help import HelpScreen
from velotui.screens.hunt_detail import PAGE_SIZE, HuntDetailScreen
from velotui.screens.hunts import HuntsScreen
from velotui.screens.new_hunt import NewHuntScreen
from velotui.server.data import Database
from velotui.server.datastore import Datastore
from velotui.widgets.hunt_panel import QUEUE_LABELS, HuntPanel

RESULTS_LABEL = next(label for label in QUEUE_LABELS if "results" in str(label).lower())

pytestmark = pytest.mark.slow
SIZE = (100, 32)


def cell(app: object, hunt_id: str, column: str) -> str:
    """The hunts table's cell in ``column`` (a column the table shows at its width)."""
    table = app.screen.query_one("#hunts")  # type: ignore[attr-defined]
    return str(table.get_cell(hunt_id, column))


async def create_hunt_by_keys(pilot: object, query: str) -> str:
    """n, a description, the query, no server-side condition, start now, ctrl+s."""
    app = pilot.app  # type: ignore[attr-defined]
    before = set(app.hunts)
    await pilot.press("n")  # type: ignore[attr-defined]
    await until(pilot, lambda: isinstance(app.screen, NewHuntScreen))
    await type_text(pilot, "triage by keys")
    await pilot.press("tab")  # type: ignore[attr-defined]
    await type_text(pilot, query)
    await pilot.press("tab", "tab", "f7", "backspace")  # type: ignore[attr-defined]
    for _ in range(7):  # rate, limit, expires, timeout, max rows, max upload, start now
        await pilot.press("tab")  # type: ignore[attr-defined]
    await pilot.press("space", "ctrl+s")  # type: ignore[attr-defined]
    await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "the hunt created")
    [hunt_id] = set(app.hunts) - before
    return hunt_id


def exported_notice(app: object, hunt_id: str) -> str | None:
    """The text of the notification saying ``hunt_id`` was exported, once there is one."""
    for notification in app._notifications:  # type: ignore[attr-defined]
        if notification.title == f"{hunt_id} exported":
            return str(notification.message)
    return None


async def test_create_start_watch_and_export_a_hunt_by_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datastore = tmp_path / "datastore"
    operator = tmp_path / "operator"  # where the operator started the console
    operator.mkdir()
    monkeypatch.chdir(operator)
    app = console(datastore, demo=3)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("3 of 3"), 90, "the demo fleet")
        hunt_id = await create_hunt_by_keys(pilot, "SELECT Hostname, OS FROM info()")

        await until(pilot, lambda: app.hunts[hunt_id]["counts"]["results"] == 3, 60,
                    "three clients with results")
        await until(pilot, lambda: cell(app, hunt_id, "Res") == "3", 10, "the table")
        assert app.hunts[hunt_id]["state"] == "running"
        assert app.hunts[hunt_id]["description"] == "triage by keys"
        panel = app.screen.query_one(HuntPanel)

        def panel_shows_results() -> bool:
            shown = dict(zip(QUEUE_LABELS, panel.view.counts, strict=True))
            return hunt_id in panel.view.title and shown[RESULTS_LABEL] == "3"

        await until(pilot, panel_shows_results, 10, "the panel")

        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ExportScreen))
        await pilot.press("enter")  # the suggested path: <hunt_id>.zip where the console started
        archive = operator / f"{hunt_id}.zip"
        await until(pilot, lambda: exported_notice(app, hunt_id), 60, "the zip")
        assert isinstance(app.screen, HuntsScreen)
        notice = exported_notice(app, hunt_id)
    assert notice is not None
    assert str(archive) in notice
    assert f"SHA-256 {hashlib.sha256(archive.read_bytes()).hexdigest()}" in notice
    assert sorted(p.name for p in operator.iterdir()) == [archive.name]
    assert list((datastore / "exports").iterdir()) == []
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert "hunt.json" in names and "results/All.jsonl" in names
        rows = zipped.read("results/All.jsonl").decode().splitlines()
        assert len(rows) == 3
        assert len({name.split("/")[0] for name in names if name.endswith("client.json")}) == 3


async def test_stop_asks_first_then_cancels_and_relaunch_brings_them_back(tmp_path: Path
                                                                          ) -> None:
    app = console(tmp_path / "datastore", demo=3)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("3 of 3"), 90, "the demo fleet")
        hunt_id = await create_hunt_by_keys(pilot, "SELECT sleep(time=300) AS Slept FROM scope()")
        await until(pilot, lambda: app.hunts[hunt_id]["counts"]["running"] == 3, 60)

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # changed my mind
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        assert app.hunts[hunt_id]["state"] == "running"

        await pilot.press("x", "y")
        await until(pilot, lambda: app.hunts[hunt_id]["counts"]["errors"] == 3, 60,
                    "the cancelled collections")
        assert app.hunts[hunt_id]["state"] == "stopped"

        await pilot.press("r")
        await until(pilot, lambda: app.hunts[hunt_id]["counts"]["running"] == 3, 60,
                    "the relaunched collections")
        assert app.hunts[hunt_id]["counts"]["errors"] == 0
        assert app.hunts[hunt_id]["state"] == "running"


async def test_an_invalid_hunt_is_refused_in_place_and_nothing_is_created(tmp_path: Path
                                                                          ) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hunts_before = len(await app.api.list_hunts())
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewHuntScreen))
        await type_text(pilot, "no query yet")
        await pilot.press("tab")
        await type_text(pilot, "SELECT 2-1 FROM scope()")
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")
        refusal = app.screen.query_one("#query-refusal")
        await until(pilot, lambda: "line 1, col 9" in str(refusal.render()), 10, "the refusal")
        assert "collection query is not valid VQL: line 1, col 9" in str(refusal.render())
        assert isinstance(app.screen, NewHuntScreen)
        assert len(await app.api.list_hunts()) == hunts_before
        await pilot.press("escape")  # something was typed: asked first
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))


async def test_labels_are_added_and_removed_by_keys(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
        table = app.screen.query_one("#clients")
        await until(pilot, lambda: table.row_count == len(CLIENTS))
        client_id = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        await pilot.press("plus")
        await type_text(pilot, "Triage")
        await pilot.press("enter")
        await until(pilot, lambda: "Triage" in str(table.get_row(client_id)[-1]), 10)
        clients = {c["client_id"]: c for c in await app.api.list_clients()}
        assert clients[client_id]["operator_labels"] == ["Triage"]

        await pilot.press("minus")
        await type_text(pilot, "Triage")
        await pilot.press("enter")
        await until(pilot, lambda: "Triage" not in str(table.get_row(client_id)[-1]), 10)
        audit = await app.api.audit_log()
        assert [entry["action"] for entry in audit] == ["label", "label"]
        assert audit[0]["actor"] == "admin"  # the first admin: no operator is named as the user


async def test_the_command_palette_offers_the_screens_actions(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await type_text(pilot, "clients")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ClientsScreen), 10, "the clients")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), 10, "the keys")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_connect_attaches_to_a_running_server_which_outlives_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.processes import ServerProcess, velotui
    from velotui.app import VelotuiApp
    from velotui.server.datastore import Datastore
    from velotui.server_link import RemoteLink

    datastore = tmp_path / "datastore"
    store = Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    try:
        created = velotui("hunt", "create", "--datastore", str(datastore), "--query",
                          "SELECT * FROM info()", "--description", "made elsewhere")
        hunt_id = created.stdout.strip()
        app = VelotuiApp(RemoteLink(url=server.url, token=store.api_token(),
                                    ca_pem=store.ca_pem()))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await until(pilot, lambda: hunt_id in app.hunts, 10, "the server's hunt")
            assert cell(app, hunt_id, "Description") == "made elsewhere"
            await pilot.press("s")  # start it from the console, over the operator API
            await until(pilot, lambda: app.hunts[hunt_id]["state"] == "running", 10)

            # The zip comes over the connection to this machine, not to the server's disk.
            operator = tmp_path / "operator"
            operator.mkdir()
            monkeypatch.chdir(operator)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, ExportScreen))
            await pilot.press("enter")
            await until(pilot, lambda: exported_notice(app, hunt_id), 30, "the zip")
            archive = operator / f"{hunt_id}.zip"
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            assert f"SHA-256 {digest}" in str(exported_notice(app, hunt_id))
            with zipfile.ZipFile(archive) as zipped:
                assert "hunt.json" in zipped.namelist()
            assert list((datastore / "exports").iterdir()) == []
            await pilot.press("q")
        assert server.process is not None and server.process.poll() is None
        shown = velotui("hunt", "show", hunt_id, "--json", "--datastore", str(datastore))
        assert '"state": "running"' in shown.stdout
        audit = velotui("audit", "--json", "--datastore", str(datastore)).stdout
        assert '"action": "start"' in audit and '"actor": "admin"' in audit
        assert f'"sha256": "{digest}"' in audit
    finally:
        server.stop()


BIG_HUNT = "H.1M8F0000000D4"


def big_hunt(root: Path, clients: int, matched: int) -> Path:
    """A datastore with one hunt over ``clients`` clients: the first ``matched`` matched and
    completed, the others not matched."""
    datastore = Datastore.open(root)

    async def write() -> None:
        db = await Database.open(datastore.database_path)
        build = DataBuilder(db)
        await build.hunt(BIG_HUNT, "SELECT * FROM info()", created=NOW - 600, started=NOW - 590,
                         description="many clients", expires=FAR_FUTURE)
        for index in range(clients):
            client_id = f"C.{index:016x}"
            await build.client(client_id, {"Hostname": f"host-{index:04d}"},
                               first_seen=NOW - 3600, last_seen=NOW - 60)
            at = NOW - 500 + index * 0.1
            await build.check(BIG_HUNT, client_id, matched=index < matched, at=at)
            if index < matched:
                await build.collect(BIG_HUNT, client_id, created=at, started=at, finished=at + 1)
        await db.close()

    writer = threading.Thread(target=asyncio.run, args=(write(),))  # works from a loop too
    writer.start()
    writer.join()
    return datastore.root


async def test_a_big_hunts_clients_come_a_page_at_a_time(tmp_path: Path) -> None:
    app = console(big_hunt(tmp_path / "datastore", clients=450, matched=430))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen))
        screen = app.screen
        table = screen.query_one("#clients-table")

        def status() -> str:
            return str(screen.query_one("#clients-filter").render())

        await pilot.press("2")
        await until(pilot, lambda: status().startswith(
            f"clients 1-{PAGE_SIZE} of 450 in all queues"))
        assert table.row_count == PAGE_SIZE
        first_page = {str(key.value) for key in table.rows}
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: status().startswith(
            f"clients {PAGE_SIZE + 1}-{2 * PAGE_SIZE} of 450"))
        assert table.row_count == PAGE_SIZE
        assert first_page.isdisjoint(str(key.value) for key in table.rows)
        last = (450 - 1) // PAGE_SIZE
        await pilot.press(*["right_square_bracket"] * last)  # past the last page: it stays
        await until(pilot, lambda: status().startswith(
            f"clients {last * PAGE_SIZE + 1}-450 of 450"))
        assert table.row_count == 450 - last * PAGE_SIZE
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: status().startswith(
            f"clients {(last - 1) * PAGE_SIZE + 1}-{last * PAGE_SIZE} of 450"))

        await pilot.press("f", "f", "f")  # pending, running, completed: back to page one
        await until(pilot, lambda: status().startswith(
            f"clients 1-{PAGE_SIZE} of 430 in completed"))
        await pilot.press("f", "f", "f")  # results, errors, not matched
        await until(pilot, lambda: status().startswith("clients 1-20 of 20 in not matched"))
        assert table.row_count == 20


async def test_the_clients_tab_follows_a_running_hunt_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that the hunt's last changes come within it: they must not be lost.
    monkeypatch.setattr("velotui.screens.hunt_detail.FOLLOW_INTERVAL", 5.0)
    app = console(tmp_path / "datastore", demo=3)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("3 of 3"), 90, "the demo fleet")
        # Running for a while first (longer than a check takes to be folded into the queues):
        # the table shows them running, then must follow.
        hunt = await app.api.create_hunt(query="SELECT sleep(time=3) AS Slept FROM scope()")
        app.hunts[hunt["hunt_id"]] = hunt
        await app.push_screen(HuntDetailScreen(hunt["hunt_id"]))
        await pilot.press("2")
        table = app.screen.query_one("#clients-table")
        assert table.row_count == 0
        await app.api.start_hunt(hunt_id=hunt["hunt_id"])

        def queues() -> list[str]:
            return [str(table.get_row(key)[2]) for key in table.rows]

        await until(pilot, lambda: "running" in queues(), 60, "clients running")
        await until(pilot, lambda: queues() == ["results"] * 3, 60, "three clients with results")
        assert "clients 1-3 of 3 in all queues" in str(
            app.screen.query_one("#clients-filter").render())


async def test_text_from_agents_is_shown_as_it_is_never_read_as_markup(tmp_path: Path) -> None:
    """A host name, OS, row value or column name an agent sends is drawn character for
    character: ``[/]`` must not break drawing a table, ``[bold red]`` must not style it."""
    hostile = "[/]"
    styled = "[bold red]pwned"
    datastore = tmp_path / "datastore"
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{**simulated_facts(0), "Hostname": hostile, "OS": styled}]))
    app = console(datastore)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        config = write_agent_config(datastore, app.link.server_url, tmp_path / "agent.json")
        agent = AgentProcess(config, tmp_path / "agent", "--simulate", "1",
                             "--facts", str(facts)).start()
        try:
            await until(pilot, lambda: app.sub_title.startswith("1 of 1"), 60, "the agent")
            await pilot.press("c")
            table = app.screen.query_one("#clients")
            await until(pilot, lambda: table.row_count == 1, 10, "the client")
            await pilot.pause()  # drawn: a cell read as markup would have failed here
            row = table.get_row_at(0)
            assert [str(cell) for cell in row[1:3]] == [hostile, styled]
            await pilot.press("escape")

            hunt = await app.api.create_hunt(
                query=f"SELECT '{hostile}' AS X, '{styled}' AS `{hostile}` FROM scope()",
                start=True)
            app.hunts[hunt["hunt_id"]] = hunt
            await until(pilot, lambda: app.hunts[hunt["hunt_id"]]["counts"]["results"] == 1,
                        60, "the hunt's results")
            await app.push_screen(HuntDetailScreen(hunt["hunt_id"]))
            await pilot.press("3")
            results = app.screen.query_one("#results-table")
            await until(pilot, lambda: results.row_count == 1, 10, "the result row")
            await pilot.pause()
            labels = [str(column.label) for column in results.ordered_columns]
            shown = dict(zip(labels, map(str, results.get_row_at(0)), strict=True))
            assert shown["X"] == hostile and shown[hostile] == styled
            await pilot.press("2")
            clients = app.screen.query_one("#clients-table")
            await until(pilot, lambda: clients.row_count == 1, 10, "the hunt's client")
            await pilot.pause()
            assert str(clients.get_row_at(0)[1]) == hostile
        finally:
            agent.stop()
