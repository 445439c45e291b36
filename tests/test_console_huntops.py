"""Hunt operations by key with Pilot, each checked against the real server's state: pause and
resume (with real demo agents, whose collections a pause lets run), a scheduled hunt counting
down then started early or cancelled, the edit dialog and its refusals, the new-hunt form filled
in from a hunt, archive and the archived toggle, delete (here or by another operator), the
schedule and error-limit fields of the form, and why a client stands where it does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Checkbox, Input

from tests.console_artifacts import ARTIFACT_HUNT, with_artifact_hunt
from tests.console_driver import console, ready, type_text, until
from tests.console_seed import HUNTS, seed
from tests.test_console_tables import clipboard_writes, notices, terminal_output
from velotui.app import VelotuiApp
from velotui.display import countdown
from velotui.screens.client_why import ClientWhyScreen
from velotui.screens.dialogs import ConfirmScreen
from velotui.screens.hunt_detail import HuntDetailScreen
from velotui.screens.hunt_edit import HuntEditScreen
from velotui.screens.hunts import HuntsScreen, state_cell
from velotui.screens.new_hunt import NewHuntScreen, lifetime_text
from velotui.server.errors import ServiceError
from velotui.server.hunts import parse_duration
from velotui.server_link import EmbeddedLink
from velotui.widgets.artifact_parameters import ArtifactParameters
from velotui.widgets.hunt_panel import HuntPanel
from velotui.widgets.vql_editor import VQLEditor

pytestmark = pytest.mark.slow
SIZE = (80, 24)  # every key here must work in the smallest terminal
PAUSED, RUNNING, STOPPED = (next(hunt[0] for hunt in HUNTS if hunt[2] == state)
                            for state in ("paused", "running", "stopped"))
# The seeded hunts, newest first, as the table lists them: paused, running, stopped.
ROW_OF = {PAUSED: 0, RUNNING: 1, STOPPED: 2}


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    return seed(tmp_path / "datastore")


def state_shown(app: Any, hunt_id: str) -> str:
    return str(app.screen.query_one("#hunts").get_cell(hunt_id, "State"))


def listed(app: Any) -> list[str]:
    table = app.screen.query_one("#hunts")
    return [str(table.coordinate_to_cell_key((row, 0)).row_key.value)
            for row in range(table.row_count)]


async def on_hunt(pilot: Any, hunt_id: str) -> None:
    """The cursor on ``hunt_id``'s row, by keys: to the top, then down."""
    await pilot.press("g", *["j"] * listed(pilot.app).index(hunt_id))
    panel = pilot.app.screen.query_one(HuntPanel)
    await until(pilot, lambda: panel.view.title == hunt_id, 10, f"{hunt_id} selected")


async def server_hunt(app: Any, hunt_id: str) -> dict[str, Any]:
    return await app.api.get_hunt(hunt_id=hunt_id)


# Pure pieces ---------------------------------------------------------------------------------


def test_countdown_and_the_state_cell_say_what_an_operator_must_notice() -> None:
    assert countdown(1000 + 7140, 1000) == "starts in 1h 59m"
    assert countdown(1000 + 7199.9, 1000) == "starts in 1h 59m"  # 1h 59m until it is 1h 59m
    assert countdown(1000 + 2 * 86400 + 3 * 3600, 1000) == "starts in 2d 3h"
    assert countdown(1000 + 250, 1000) == "starts in 4m 10s"
    assert countdown(1000 + 45, 1000) == "starts in 45s"
    assert countdown(1000, 1000) == "starting"
    base = {"state": "paused", "stop_reason": None, "archived": None}
    assert state_cell(base, 0) == "paused"
    assert state_cell({**base, "stop_reason": "paused by admin"}, 0) == "paused"
    assert state_cell({**base, "stop_reason": "error limit reached"}, 0) == \
        "paused: error limit reached"
    assert state_cell({**base, "state": "scheduled", "start_at": 600}, 0) == "starts in 10m"
    assert state_cell({**base, "state": "stopped", "archived": 5.0}, 0) == "stopped, archived"
    assert [lifetime_text(s) for s in (7 * 86400, 36 * 3600, 5400, 7 * 86400 - 20,
                                       3 * 86400 + 3700, 40.4 * 86400)] == \
        ["7d", "36h", "90m", "7d", "73h", "40d"]


# Pause, start, stop -------------------------------------------------------------------------


async def test_p_pauses_a_running_hunt_its_collections_go_on_and_s_resumes_it(
    tmp_path: Path
) -> None:
    app = console(tmp_path / "datastore", demo=2)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("2 of 2"), 90, "the demo fleet")
        hunt = await app.api.create_hunt(query="SELECT sleep(time=300) AS Slept FROM scope()",
                                         server_condition="", description="long", start=True)
        hunt_id = hunt["hunt_id"]
        await until(pilot, lambda: app.hunts[hunt_id]["counts"]["running"] == 2, 60,
                    "two collections running")
        await on_hunt(pilot, hunt_id)

        await pilot.press("p")
        await until(pilot, lambda: app.hunts[hunt_id]["state"] == "paused", 10, "paused")
        stored = await server_hunt(app, hunt_id)
        assert stored["state"] == "paused"
        assert stored["stop_reason"] == "paused by admin"
        # Paused, not stopped: what was running still runs.
        assert stored["counts"]["running"] == 2 and stored["counts"]["errors"] == 0
        assert state_shown(app, hunt_id) == "paused"  # asked for: no reason in the table
        assert any("paused: collections in flight finish" in n for n in notices(app))

        await pilot.press("p")  # paused already: the server's one line
        await until(pilot, lambda: "only a running or scheduled hunt" in notices(app)[-1], 10)

        await pilot.press("s")
        await until(pilot, lambda: app.hunts[hunt_id]["state"] == "running", 10, "resumed")
        assert (await server_hunt(app, hunt_id))["state"] == "running"


async def test_a_scheduled_hunt_counts_down_live_then_s_starts_it_and_x_cancels_one(
    seeded: Path
) -> None:
    clock = [time.time()]
    app = VelotuiApp(EmbeddedLink(datastore_path=seeded, listen="127.0.0.1:0"),
                     clock=lambda: clock[0])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        early = (await app.api.create_hunt(query="SELECT * FROM info()", start_at="+2h",
                                           description="early"))["hunt_id"]
        assert (await server_hunt(app, early))["state"] == "scheduled"
        await until(pilot, lambda: early in listed(app), 10, "the scheduled hunt")
        start_at = app.hunts[early]["start_at"]
        clock[0] = start_at - 7140
        await until(pilot, lambda: state_shown(app, early) == "starts in 1h 59m", 10)
        await on_hunt(pilot, early)
        panel = app.screen.query_one(HuntPanel)
        await until(pilot, lambda: panel.view.eta == "starts in 1h 59m", 10, "the panel")
        clock[0] = start_at - 90  # the countdown moves on by itself, nothing pushed
        await until(pilot, lambda: state_shown(app, early) == "starts in 1m 30s", 10)
        await until(pilot, lambda: panel.view.eta == "starts in 1m 30s", 10)

        await pilot.press("s")  # ahead of its schedule
        await until(pilot, lambda: app.hunts[early]["state"] == "running", 10, "started")
        assert (await server_hunt(app, early))["state"] == "running"
        assert f"{early} started ahead of its schedule" in notices(app)

        cancelled = (await app.api.create_hunt(query="SELECT * FROM info()", start_at="+2h",
                                               description="cancelled"))["hunt_id"]
        await until(pilot, lambda: cancelled in listed(app), 10)
        await on_hunt(pilot, cancelled)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Cancel" in str(app.screen.query_one(".title").render())
        await pilot.press("y")
        await until(pilot, lambda: app.hunts[cancelled]["state"] == "stopped", 10)
        stored = await server_hunt(app, cancelled)
        assert stored["stop_reason"].startswith("cancelled before its start")
        assert stored["start_at"] is None


# Edit ---------------------------------------------------------------------------------------


def field(app: Any, field_id: str) -> str:
    return app.screen.query_one(f"#{field_id}", Input).value


def refusal(app: Any, field_id: str) -> str:
    shown = app.screen.query_one(f"#{field_id}-refusal")
    return str(shown.render()) if shown.has_class("-shown") else ""


async def retype(pilot: Any, field_id: str, text: str) -> None:
    """Focus a field by tabs from where the focus is, then type over it."""
    app = pilot.app
    for _ in range(8):
        if app.focused is app.screen.query_one(f"#{field_id}"):
            break
        await pilot.press("tab")
    await pilot.press("ctrl+u")  # Input: delete to the start of the line
    await pilot.press("end", "ctrl+u")
    await type_text(pilot, text)


async def test_u_edits_a_running_hunt_sends_what_changed_and_shows_refusals_by_field(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await on_hunt(pilot, RUNNING)
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, HuntEditScreen), 10, "the dialog")
        # Its current values.
        assert [field(app, f) for f in ("rate", "limit", "max_errors", "description")] == \
            ["60", "0", "0", "Auth logs on finance hosts"]
        assert field(app, "expires") == "2100-01-01T00:00Z"

        await retype(pilot, "rate", "5")
        await retype(pilot, "max_errors", "lots")
        await pilot.press("ctrl+s")  # refused here: nothing is sent
        await until(pilot, lambda: refusal(app, "max_errors").startswith("Not changed"), 10)
        assert app.focused is app.screen.query_one("#max_errors")
        assert (await server_hunt(app, RUNNING))["rate"] == 60

        await retype(pilot, "max_errors", "10%")
        assert refusal(app, "max_errors") == ""  # gone once the value passes
        await retype(pilot, "description", "Auth logs, slower")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "applied")
        stored = await server_hunt(app, RUNNING)
        assert (stored["rate"], stored["max_errors_percent"], stored["description"]) == \
            (5, 10, "Auth logs, slower")
        assert stored["limit"] == 0 and stored["expires"] == app.hunts[RUNNING]["expires"]
        said = next(n.message for n in app._notifications if n.title == f"{RUNNING} changed")
        assert "rate: 60/min -> 5/min" in said and "max errors: none -> 10%" in said
        audit = [e for e in await app.api.audit_log() if e["action"] == "set"]
        assert len(audit) == 1

        # The server's refusals, under the field they concern; nothing changes.
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, HuntEditScreen), 10, "the dialog")
        assert field(app, "rate") == "5"  # the values as they are now
        await retype(pilot, "limit", "1")  # 3 clients are recruited already
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "below" in refusal(app, "limit"), 10, "the limit refused")
        await retype(pilot, "limit", "0")
        await retype(pilot, "expires", "someday")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "is not a time" in refusal(app, "expires"), 10)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "cancelled")
        sets = [e for e in await app.api.audit_log() if e["action"] == "set"]
        assert [e["outcome"] for e in sets] == ["allowed", "refused", "refused"]
        assert (await server_hunt(app, RUNNING))["limit"] == 0


# Copy ---------------------------------------------------------------------------------------


async def test_c_fills_the_form_from_a_hunt_and_creates_a_hunt_of_the_same_spec(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.api.set_hunt(hunt_id=RUNNING, max_errors="7")
        await on_hunt(pilot, RUNNING)
        await until(pilot, lambda: app.hunts[RUNNING]["max_errors"] == 7, 10)
        original = await server_hunt(app, RUNNING)
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, NewHuntScreen), 10, "the form")
        form = app.screen
        editors = {e.id: e.text for e in form.query(VQLEditor)}
        assert editors == {"query": original["query"],
                           "client_condition": original["client_condition"],
                           "server_condition": original["server_condition"]}
        assert [field(app, f) for f in ("description", "rate", "max_errors", "start_at")] == \
            [original["description"], "60", "7", ""]
        assert field(app, "expires") == "26707d"
        assert not form.has_input  # nothing typed yet: esc would leave without asking
        await retype(pilot, "description", "copied")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "created")
        [copy_id] = set(app.hunts) - {h[0] for h in HUNTS}
        copy = await server_hunt(app, copy_id)
        same = ("query", "client_condition", "server_condition", "rate", "limit", "timeout",
                "max_rows", "max_upload_bytes", "max_errors", "max_errors_percent")
        assert {k: copy[k] for k in same} == {k: original[k] for k in same}
        assert copy["description"] == "copied" and copy["state"] == "paused"
        # Its lifetime as the form wrote it (this seeded one: ~26,707 days, to the day).
        lifetime = lifetime_text(original["expires"] - original["created"])
        assert abs((copy["expires"] - copy["created"]) - parse_duration(lifetime)) < 120


async def test_c_on_an_artifact_hunt_fills_in_its_artifacts_with_their_values(
    tmp_path: Path
) -> None:
    app = console(with_artifact_hunt(seed(tmp_path / "datastore")))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await on_hunt(pilot, ARTIFACT_HUNT)
        original = await server_hunt(app, ARTIFACT_HUNT)
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, NewHuntScreen), 10, "the form")
        form = app.screen
        await until(pilot, lambda: len(form.query(ArtifactParameters)) == 2, 30, "artifacts")
        assert form.artifacts_mode
        finder = form.query(ArtifactParameters).first()
        assert finder.values() == {"SearchGlob": "/home/*/.ssh/authorized_keys",
                                   "Hashes": "Y", "Extra": '{\n  "depth": 3\n}'}
        assert app.focused is form.query_one("#description")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "created")
        [copy_id] = set(app.hunts) - {h[0] for h in HUNTS} - {ARTIFACT_HUNT}
        copy = await server_hunt(app, copy_id)
        assert copy["artifacts"] == original["artifacts"]
        assert copy["query"] == original["query"]


# Archive and delete -------------------------------------------------------------------------


async def test_a_archives_h_shows_archived_hunts_marked_and_d_deletes_after_asking(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await on_hunt(pilot, RUNNING)
        await pilot.press("A")  # running: refused in one line
        await until(pilot, lambda: any(n.title == "Refused" for n in app._notifications), 10)
        assert (await server_hunt(app, RUNNING))["archived"] is None

        await on_hunt(pilot, STOPPED)
        await pilot.press("A")
        await until(pilot, lambda: STOPPED not in listed(app), 10, "hidden once archived")
        assert STOPPED not in [h["hunt_id"] for h in await app.api.list_hunts()]
        assert (await server_hunt(app, STOPPED))["archived"] is not None
        await pilot.press("H")
        await until(pilot, lambda: STOPPED in listed(app), 10, "shown by H")
        assert state_shown(app, STOPPED) == "stopped, archived"
        assert "H hides them" in str(app.screen.query_one("#empty").render())
        await pilot.press("H")
        await until(pilot, lambda: STOPPED not in listed(app), 10, "hidden again")

        await pilot.press("H")
        await until(pilot, lambda: STOPPED in listed(app), 10)
        await on_hunt(pilot, STOPPED)
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # asked, declined: nothing is deleted
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen))
        assert (await server_hunt(app, STOPPED))["hunt_id"] == STOPPED
        await pilot.press("D", "y")
        await until(pilot, lambda: STOPPED not in listed(app), 10, "deleted")
        with pytest.raises(ServiceError):
            await server_hunt(app, STOPPED)
        said = next(n for n in notices(app) if n.startswith(f"deleted {STOPPED}:"))
        # What the server counted (rows of every kind, the one file a client uploaded).
        assert said.endswith(" KB freed (4 rows, 1 file)")

        await on_hunt(pilot, RUNNING)
        await pilot.press("D", "y")  # running: refused, still there
        await until(pilot, lambda: "running" in notices(app)[-1], 10, "the refusal")
        assert RUNNING in listed(app)
        assert (await server_hunt(app, RUNNING))["state"] == "running"


async def test_a_hunt_deleted_here_or_elsewhere_leaves_the_list_and_its_open_detail(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await on_hunt(pilot, STOPPED)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen), 10, "the detail")
        deleted = await app.api.delete_hunt(hunt_id=STOPPED)  # as another operator would
        assert deleted["hunt_id"] == STOPPED
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "the detail closed")
        await until(pilot, lambda: STOPPED not in listed(app), 10, "the row gone")
        assert STOPPED not in app.hunts

        # D on the detail screen: asked, deleted, and the screen of a hunt gone closes.
        await on_hunt(pilot, PAUSED)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen), 10, "the detail")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 10, "the detail closed")
        assert listed(app) == [RUNNING]
        with pytest.raises(ServiceError):
            await server_hunt(app, PAUSED)


# The form's schedule and error limit ---------------------------------------------------------


async def test_the_form_schedules_a_hunt_with_an_error_limit_and_refuses_by_field(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewHuntScreen), 10, "the form")
        form = app.screen
        await type_text(pilot, "nightly")
        await pilot.press("tab")
        await type_text(pilot, "SELECT * FROM info()")
        form.query_one("#start_at", Input).focus()
        await pilot.pause()
        await type_text(pilot, "whenever")
        await pilot.press("tab")
        await type_text(pilot, "many")
        await pilot.press("ctrl+s")  # the error limit is checked here
        await until(pilot, lambda: refusal(app, "max_errors").startswith("Not created"), 10)
        await retype(pilot, "max_errors", "10%")
        await pilot.press("ctrl+s")  # the time by the server
        await until(pilot, lambda: "is not a time" in refusal(app, "start_at"), 10)
        assert app.focused is form.query_one("#start_at")
        form.query_one("#start", Checkbox).value = True
        await retype(pilot, "start_at", "+2h")
        await pilot.press("ctrl+s")  # both now and later
        await until(pilot, lambda: "not both" in refusal(app, "start_at"), 10)
        assert len(await app.api.list_hunts(all=True)) == len(HUNTS)
        form.query_one("#start", Checkbox).value = False
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "created")
        [hunt_id] = set(app.hunts) - {h[0] for h in HUNTS}
        stored = await server_hunt(app, hunt_id)
        assert stored["state"] == "scheduled"
        assert abs(stored["start_at"] - (time.time() + 7200)) < 120
        assert (stored["max_errors"], stored["max_errors_percent"]) == (0, 10)
        assert any(n.startswith(f"{hunt_id} created: starts in 1h 59m") for n in notices(app))


# Why ----------------------------------------------------------------------------------------


async def test_w_explains_the_selected_client_copies_it_with_y_and_esc_closes(
    seeded: Path
) -> None:
    app = console(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        written = terminal_output(app)
        await on_hunt(pilot, RUNNING)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen), 10, "the detail")
        detail = app.screen
        await pilot.press("w")  # the overview: no client to explain, nothing happens
        await pilot.pause()
        assert app.screen is detail
        await pilot.press("2")
        table = detail.query_one("#clients-table")
        await until(pilot, lambda: table.row_count == 5, 30, "the clients")
        await pilot.press("j", "j", "j")  # db-01, in errors
        client_id = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, ClientWhyScreen), 30, "the answer")
        expected = await app.api.explain_hunt_client(hunt_id=RUNNING, client_id=client_id)
        assert expected["status"] == "errors"
        summary = str(app.screen.query_one("#why-summary").render())
        assert summary == expected["summary"] and "upload limit" in summary
        await pilot.press("y")
        await until(pilot, lambda: clipboard_writes(written), 10, "the copy")
        assert json.loads(clipboard_writes(written)[-1]) == expected
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is detail, 10, "closed")
