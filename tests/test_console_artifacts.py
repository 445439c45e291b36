"""Artifact hunts made and read in the console, by keys, against its real embedded server: the
picker searches the server's library as the operator types, the parameter form follows the
parameters' types, a refused value is shown where the operator looks, and the overview lists
the artifacts and parameters a hunt ran with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Checkbox, Input, Select, TextArea

from tests.console_artifacts import with_test_artifacts
from tests.console_driver import console, ready, type_text, until
from velotui.screens.hunt_detail import HuntDetailScreen, artifacts_text
from velotui.screens.hunts import HuntsScreen
from velotui.screens.new_hunt import NewHuntScreen
from velotui.widgets.artifact_parameters import ArtifactParameters, number_problem
from velotui.widgets.artifact_picker import ArtifactPicker, matching_artifacts

pytestmark = pytest.mark.slow
SIZE = (80, 24)  # the smallest terminal the console is made for


def text_of(app: Any, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def picked(app: Any) -> list[str]:
    return [artifact["name"] for artifact in app.screen.query_one(ArtifactPicker).matches]


def chosen(app: Any) -> list[str]:
    return [form.artifact_name for form in app.screen.query(ArtifactParameters)]


async def artifacts_form(pilot: Any) -> None:
    """From the home screen: n, a description, then ctrl+t to the artifact picker, once the
    library has come."""
    app = pilot.app
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, NewHuntScreen))
    await type_text(pilot, "keys by artifact")
    await pilot.press("ctrl+t")
    picker = app.screen.query_one(ArtifactPicker)
    await until(pilot, lambda: picker.artifacts is not None, 30, "the artifact library")
    assert app.focused is picker.search


async def clear_and_type(pilot: Any, text: str) -> None:
    await pilot.press("home", "ctrl+k")  # an Input: to its start, then delete to its end
    await type_text(pilot, text)


def test_artifacts_match_every_word_in_the_name_first_then_in_the_description() -> None:
    library = [
        {"name": "Linux.Sys.Users", "description": "accounts from /etc/passwd"},
        {"name": "Generic.Client.Info", "description": "host name, users, labels"},
        {"name": "Linux.Ssh.AuthorizedKeys", "description": "keys that let users in"},
    ]
    names = [a["name"] for a in matching_artifacts(library, "USERS")]
    assert names == ["Linux.Sys.Users", "Generic.Client.Info", "Linux.Ssh.AuthorizedKeys"]
    assert [a["name"] for a in matching_artifacts(library, "ssh users")] == \
        ["Linux.Ssh.AuthorizedKeys"]
    assert matching_artifacts(library, "nothing like it") == []
    assert len(matching_artifacts(library, "  ")) == 3


def test_numbers_are_checked_as_the_server_checks_them() -> None:
    assert number_problem("int", "0x1F") is None and number_problem("int", "-12") is None
    assert number_problem("int", "1.5") == "not a whole number"
    assert number_problem("float", "1e3") is None
    assert number_problem("float", "ten") == "not a number"
    assert number_problem("int", "") is None  # no value: the artifact gets none
    assert number_problem("string", "anything") is None


def test_the_overview_shows_one_line_per_parameter_whatever_its_value() -> None:
    shown = artifacts_text([{"name": "A.B", "sources": ["A.B/One", "A.B/Two"],
                             "parameters": {"Rules": "rule x {\n condition: true\n}",
                                            "Flag": "", "Glob": "[/]*"}}]).plain
    assert shown.splitlines() == ["A.B  sources: One, Two", "  Rules  rule x { … (3 lines)",
                                  "  Flag   (empty)", "  Glob   [/]*"]


async def test_an_artifact_hunt_is_made_by_keys_and_its_overview_shows_what_it_runs(
    tmp_path: Path
) -> None:
    app = console(with_test_artifacts(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        before = set(app.hunts)
        await artifacts_form(pilot)

        # Found by a word of its description (one no built-in artifact has); it has no
        # parameters, so the search keeps the focus for the next one.
        await type_text(pilot, "wombat")
        await until(pilot, lambda: picked(app) == ["Test.Accounts.Users"])
        # Text from definitions is drawn as it is, never read as markup.
        assert "from the wombat password database [/etc/passwd]." in text_of(
            app, "#artifact-description")
        await pilot.press("enter")
        await until(pilot, lambda: chosen(app) == ["Test.Accounts.Users"])

        # One added by mistake, then removed by its key.
        await clear_and_type(pilot, "generic.client.info")
        await until(pilot, lambda: picked(app) == ["Generic.Client.Info"])
        await pilot.press("enter")
        await until(pilot, lambda: len(chosen(app)) == 2)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: chosen(app) == ["Test.Accounts.Users"])

        # Found by part of its name; its form takes the focus, fields by type, defaults in.
        await clear_and_type(pilot, "files.find")
        await until(pilot, lambda: picked(app) == ["Test.Files.Finder"])
        await pilot.press("enter")
        await until(pilot, lambda: len(chosen(app)) == 2)
        form = app.screen.query(ArtifactParameters).last()
        assert form.artifact_name == "Test.Files.Finder"
        fields = form.fields
        assert list(fields) == ["SearchGlob", "Hashes", "MaxSize", "Mode", "Extra"]  # no hidden
        assert isinstance(fields["Hashes"], Checkbox) and not fields["Hashes"].value
        assert isinstance(fields["Mode"], Select) and fields["Mode"].value == "quick"
        assert isinstance(fields["Extra"], TextArea) and fields["Extra"].text == "{}"
        assert isinstance(fields["MaxSize"], Input) and fields["MaxSize"].value == "1000000"
        assert app.focused is fields["SearchGlob"]
        assert "the files to find [/]" in str(form.query_one(".parameter-label").render())
        await clear_and_type(pilot, "/etc/pass*")
        await pilot.press("tab", "space")  # Hashes: on
        await until(pilot, lambda: fields["Hashes"].value)
        await pilot.press("q", "c")  # slips on a checkbox: neither quits nor leaves the form
        assert isinstance(app.screen, NewHuntScreen) and app.focused is fields["Hashes"]
        await pilot.press("tab", "tab", "enter")  # Mode's list open
        await until(pilot, lambda: fields["Mode"].expanded)
        await pilot.press("escape")  # closes the list, not the form
        await until(pilot, lambda: not fields["Mode"].expanded)
        assert isinstance(app.screen, NewHuntScreen)
        await pilot.press("enter", "down", "enter")
        await until(pilot, lambda: fields["Mode"].value == "thorough")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, HuntsScreen), 30, "the hunt made")

        [hunt_id] = set(app.hunts) - before
        hunt = await app.api.get_hunt(hunt_id=hunt_id)
        assert hunt["description"] == "keys by artifact"
        assert [a["name"] for a in hunt["artifacts"]] == ["Test.Accounts.Users",
                                                          "Test.Files.Finder"]
        finder = hunt["artifacts"][1]["parameters"]
        assert finder["SearchGlob"] == "/etc/pass*"
        assert finder["Hashes"] == "Y"
        assert finder["MaxSize"] == "1000000" and finder["Mode"] == "thorough"
        assert finder["Internal"] == "kept"
        compiled = await app.api.compile_artifacts(artifacts=[
            {"name": "Test.Accounts.Users", "parameters": {}},
            {"name": "Test.Files.Finder",
             "parameters": {"SearchGlob": "/etc/pass*", "Hashes": "Y", "Mode": "thorough"}}])
        assert hunt["query"] == compiled["query"]

        # The overview names the artifacts and every value they run with.
        await until(pilot, lambda: hunt_id in app.screen.query_one("#hunts").rows, 10)
        app.screen.query_one("#hunts").move_cursor(
            row=app.screen.query_one("#hunts").get_row_index(hunt_id))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HuntDetailScreen))
        overview = text_of(app, "#artifacts")
        assert "Test.Accounts.Users  sources: Accounts" in overview
        assert "Test.Files.Finder" in overview
        assert "SearchGlob  /etc/pass*" in overview
        assert "Hashes      Y" in overview
        assert "Mode        thorough" in overview
        assert "Collection (compiled from the artifacts)" in [
            str(label.render()) for label in app.screen.query(".heading")]


async def test_a_refused_value_is_shown_under_its_field_and_over_the_footer(tmp_path: Path
                                                                           ) -> None:
    app = console(with_test_artifacts(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hunts_before = len(await app.api.list_hunts())
        await artifacts_form(pilot)
        await pilot.press("ctrl+s")  # nothing chosen yet
        await until(pilot, lambda: text_of(app, "#picker-refusal").startswith(
            "Not created: no artifact"))

        await type_text(pilot, "test.files")
        await until(pilot, lambda: picked(app) == ["Test.Files.Finder"])
        await pilot.press("enter")
        await until(pilot, lambda: chosen(app) == ["Test.Files.Finder"])
        form = app.screen.query_one(ArtifactParameters)

        # A whole number is checked as it is typed, and nothing goes to the server.
        await pilot.press("tab", "tab")
        assert app.focused is form.fields["MaxSize"]
        await type_text(pilot, "k")
        await until(pilot, lambda: "not a whole number"
                    in text_of(app, ".parameter-problem.-shown"))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "parameter MaxSize: not a whole number"
                    in text_of(app, "#problem"))
        assert app.focused is form.fields["MaxSize"]
        await pilot.press("backspace")
        await until(pilot, lambda: not app.screen.query(".parameter-problem.-shown"))

        # JSON is the server's to check: once typing pauses, its one-line reason comes under
        # the field; ctrl+s then says it over the footer and puts the focus on the field, both
        # in view at 80x24.
        await pilot.press("tab", "tab")
        assert app.focused is form.fields["Extra"]
        await type_text(pilot, "oops")
        await until(pilot, lambda: app.screen.query(".parameter-problem.-shown"), 30,
                    "the server's check as typed")
        assert "parameter Extra (json): not JSON" in text_of(app, ".parameter-problem.-shown")
        assert "not JSON" not in text_of(app, "#problem")
        await pilot.press("shift+tab")  # away, so that ctrl+s is seen to bring the focus back
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not JSON" in text_of(app, "#problem"), 30, "the refusal")
        said = text_of(app, "#problem")
        assert said.startswith("Not created: Test.Files.Finder: parameter Extra (json): not JSON")
        assert "\n" not in said.strip()
        under = app.screen.query_one(".parameter-problem.-shown")
        assert "parameter Extra (json): not JSON" in str(under.render())
        assert app.focused is form.fields["Extra"]
        await pilot.pause(0.3)  # scrolled to the field
        screen = app.screen.region
        for widget in (app.screen.query_one("#problem"), under, form.fields["Extra"]):
            assert widget.region.height > 0 and screen.contains_region(widget.region), widget
        form_view = app.screen.query_one("#form").region
        assert form_view.contains_region(under.region)
        assert form_view.contains_region(form.fields["Extra"].region)
        assert isinstance(app.screen, NewHuntScreen)
        assert len(await app.api.list_hunts()) == hunts_before

        # The palette knows the form's keys too: back to a VQL query.
        form_screen = app.screen
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen is not form_screen, 10, "the palette")
        await type_text(pilot, "VQL or artifacts")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: form_screen.has_class("-vql-mode"), 10, "VQL again")
        assert app.screen is form_screen
        assert form_screen.query_one("#query") in app.focused.ancestors  # its text area
