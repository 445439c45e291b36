"""The client page and one-off collections driven by keys on the real console, its embedded
server and real (demo) agents: enter on a client opens its page with the hunts and collections
it really took part in; a collection typed on the page reaches the agent and its rows appear
while it still runs; x cancels it; bad VQL and an offline client get one line each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot

from tests.console_driver import console, ready, until
from tests.console_seed import CLIENTS, seed
from tests.test_console_tables import clipboard_writes, notices, terminal_output
from velotui.screens.client_page import ClientPageScreen
from velotui.screens.clients import ClientsScreen
from velotui.screens.collect import CollectionScreen, CollectScreen
from velotui.screens.hunt_detail import HuntDetailScreen
from velotui.screens.row_detail import RowDetailScreen
from velotui.widgets.live_table import LiveTable

pytestmark = pytest.mark.slow

# One row at once, then a wait the test ends by cancelling: the row is shown while it runs.
ROW_THEN_WAIT = ("SELECT * FROM chain(a={SELECT Hostname, 'first' AS Stage FROM info()},"
                 " b={SELECT sleep(time=300) AS Slept FROM scope()})")


def row_keys(table: LiveTable) -> list[str]:
    return [str(table.coordinate_to_cell_key((n, 0)).row_key.value)
            for n in range(table.row_count)]


def status(app: Any) -> str:
    return str(app.screen.query_one("#flow-status").render())


def problem(app: Any) -> str:
    return str(app.screen.query_one("#problem").render())


async def paste(pilot: Pilot[Any], text: str) -> None:
    """Paste ``text`` into the focused field, as a terminal's bracketed paste delivers it (a
    long query typed key by key would take seconds)."""
    pilot.app.post_message(events.Paste(text))  # the app hands it to the focused widget
    await pilot.pause()


async def open_client_page(pilot: Pilot[Any], client_id: str) -> ClientPageScreen:
    """From the home screen: c, the client's row, enter."""
    app = pilot.app
    await pilot.press("c")
    await until(pilot, lambda: isinstance(app.screen, ClientsScreen))
    table = app.screen.query_one("#clients", LiveTable)
    await until(pilot, lambda: client_id in table.rows, 10, "the client listed")
    table.move_cursor(row=table.get_row_index(client_id))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ClientPageScreen))
    page = app.screen
    assert isinstance(page, ClientPageScreen)
    await until(pilot, lambda: page._loaded, 10, "the client's history")
    return page


async def test_the_page_shows_real_hunts_and_collections_and_runs_one_live(
    tmp_path: Path
) -> None:
    app = console(tmp_path / "datastore", demo=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("1 of 1"), 90, "the demo agent")
        [client] = await app.api.list_clients()
        client_id = client["client_id"]
        # A hunt and a collection the agent really runs, before the page is opened.
        hunt = await app.api.create_hunt(query="SELECT Hostname FROM info()", start=True,
                                         description="hosts by key")
        await until(pilot, lambda: app.hunts[hunt["hunt_id"]]["counts"]["results"] == 1, 60,
                    "the hunt's result")
        earlier = await app.api.schedule_collection(client_id=client_id,
                                                    query="SELECT OS FROM info()")
        page = await open_client_page(pilot, client_id)
        hunts = page.query_one("#client-hunts", LiveTable)
        collections = page.query_one("#client-collections", LiveTable)
        await until(pilot, lambda: row_keys(collections) == [earlier["flow_id"]], 10)
        assert row_keys(hunts) == [hunt["hunt_id"]]
        assert hunts.get_cell(hunt["hunt_id"], "Queue").plain == "results"
        assert hunts.get_cell(hunt["hunt_id"], "Rows").plain == "1"
        assert collections.get_cell(earlier["flow_id"], "Query").plain == "SELECT OS FROM info()"
        assert client["hostname"] in str(page.query_one("#facts").render())
        await until(pilot, lambda: collections.get_cell(earlier["flow_id"], "State").plain
                    == "finished", 30, "the earlier collection finished, live on the page")

        await pilot.press("enter")  # on the hunt: its detail
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen))
        assert app.screen.hunt_id == hunt["hunt_id"]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is page)
        await pilot.press("tab", "enter")  # on the collection: its rows
        await until(pilot, lambda: isinstance(app.screen, CollectionScreen))
        assert app.screen.flow_id == earlier["flow_id"]
        await until(pilot, lambda: status(app).startswith("finished · 1 rows"), 10)
        assert app.screen.rows == [{"OS": client["os"]}]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is page)

        # A collection typed on the page: its first row shows while it still runs.
        written = terminal_output(app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CollectScreen))
        assert "online, it runs at once" in str(app.screen.query_one("#target").render())
        await paste(pilot, ROW_THEN_WAIT)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, CollectionScreen), 10)
        running = app.screen
        await until(pilot, lambda: running.rows, 30, "the first row, while it runs")
        assert running.rows == [{"Hostname": client["hostname"], "Stage": "first"}]
        await until(pilot, lambda: status(app).startswith("running · 1 rows"), 10)
        rows = running.query_one("#flow-rows")
        assert rows.get_cell("0", "Hostname").plain == client["hostname"]
        await pilot.press("y")  # the cell under the cursor
        assert json.loads(clipboard_writes(written)[-1]) == client["hostname"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen))
        await pilot.press("Y")
        assert json.loads(clipboard_writes(written)[-1]) == running.rows[0]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is running)

        await pilot.press("x")  # cancel: the agent is told, the state says so
        await until(pilot, lambda: status(app).startswith("cancelled"), 30, "cancelled")
        assert f"{running.flow_id} cancelled" in notices(app)
        flow = await app.api.flow(client_id=client_id, flow_id=running.flow_id)
        assert flow["state"] == "cancelled" and flow["rows"] == 1
        await pilot.press("x")  # nothing left to cancel: said so
        await until(pilot, lambda: notices(app)[-1].endswith("is not running: it is cancelled."))

        await pilot.press("escape")  # the page lists it, newest first
        await until(pilot, lambda: app.screen is page)
        await until(pilot, lambda: row_keys(collections) == [running.flow_id,
                                                             earlier["flow_id"]], 10)
        assert collections.get_cell(running.flow_id, "State").plain == "cancelled"


async def test_refusals_offline_clients_and_artifacts(tmp_path: Path) -> None:
    """On a seeded (offline) client: bad VQL is refused with its line and column and runs
    nothing; a good query is queued and said to run when the client connects, and can be
    cancelled; artifacts are compiled by the server, which keeps their names with the flow."""
    app = console(seed(tmp_path / "datastore"))
    client_id = CLIENTS[3][0]  # db-01: in errors in two hunts
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        page = await open_client_page(pilot, client_id)
        hunts = page.query_one("#client-hunts", LiveTable)
        assert sorted(row_keys(hunts)) == ["H.1M8F0000000A1", "H.1M8F0000000B2"]
        # Cut to what 80 columns leave; whole in the row (y copies it).
        assert hunts.get_cell("H.1M8F0000000A1", "Error").plain.startswith("upload limit of")
        assert page.hunts["H.1M8F0000000A1"]["error"] == "upload limit of 1000000 bytes reached"
        assert "offline, last seen" in str(page.query_one("#facts").render())
        assert page.query_one("#client-collections", LiveTable).row_count == 0

        await pilot.press("i")  # every fact
        await until(pilot, lambda: isinstance(app.screen, RowDetailScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is page)

        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CollectScreen))
        form = app.screen
        assert "offline, it runs when the client connects" in \
            str(form.query_one("#target").render())
        await pilot.press("ctrl+s")
        assert problem(app) == "Not run: the query is empty"
        await paste(pilot, "SELECT * FRM info()")
        await pilot.press("ctrl+s")
        assert problem(app) == ("Not run: the query is not valid VQL: line 1, col 14:"
                                " unexpected name 'info'")
        assert app.screen is form
        history = await app.api.client_history(client_id=client_id)
        assert history["collections"] == []  # nothing was sent

        await pilot.press("ctrl+t")  # artifacts: each is sent compiled, named first
        await until(pilot, lambda: form.artifacts_mode)
        await pilot.press("ctrl+s")
        assert problem(app).startswith("Not run: no artifact chosen")
        await paste(pilot, "mounts")
        await until(pilot, lambda: form.query_one("#picker").matches, 10, "matches")
        await pilot.press("enter")
        await until(pilot, lambda: form._chosen())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, CollectionScreen), 10)
        queued = app.screen
        flow = queued.flow
        assert [a["name"] for a in flow["artifacts"]] == ["Linux.Mounts"]
        assert "_ArtifactName='Linux.Mounts'" in flow["query"]
        await until(pilot, lambda: "it runs when the client connects" in status(app), 10)
        assert status(app).startswith("queued · 0 rows")
        assert any("is offline; it runs when the client connects" in n for n in notices(app))
        await pilot.press("x")
        await until(pilot, lambda: status(app).startswith("cancelled"), 10, "cancelled")

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is page)
        collections = page.query_one("#client-collections", LiveTable)
        await until(pilot, lambda: row_keys(collections) == [queued.flow_id], 10)
        assert collections.get_cell(queued.flow_id, "Query").plain == "artifacts: Linux.Mounts"
        assert collections.get_cell(queued.flow_id, "State").plain == "cancelled"
