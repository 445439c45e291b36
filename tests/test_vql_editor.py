"""The VQL editor: highlight spans, the live status line, Changed messages and keyboard focus."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Button
from textual.widgets.text_area import TextAreaTheme

from velotui.widgets.vql_editor import VQLEditor, VQLTextArea, highlight_spans


def spelled(text: str, spans: list[tuple[int, int, int | None, str]]) -> list[tuple[str, str]]:
    """Each span as (the text it covers, its name), cut by bytes as TextArea cuts it."""
    lines = [line.encode() for line in text.split("\n")]
    return [(lines[row][start:end].decode(), name) for row, start, end, name in spans]


def test_spans_name_keywords_strings_numbers_calls_and_comments() -> None:
    text = "SELECT Name, count() AS N FROM info() WHERE Size > 10 -- big ones"
    assert spelled(text, highlight_spans(text)) == [
        ("SELECT", "keyword"),
        (",", "punctuation.delimiter"),
        ("count", "function"),
        ("(", "punctuation.bracket"),
        (")", "punctuation.bracket"),
        ("AS", "keyword"),
        ("FROM", "keyword"),
        ("info", "function"),
        ("(", "punctuation.bracket"),
        (")", "punctuation.bracket"),
        ("WHERE", "keyword"),
        (">", "operator"),
        ("10", "number"),
        ("-- big ones", "comment"),
    ]


def test_spans_are_utf8_byte_offsets_and_cross_lines() -> None:
    text = "SELECT 'héllo' AS ü, 2 FROM scope() /* naïve\n  ça\n*/ WHERE TRUE OR NULL // fin"
    spans = highlight_spans(text)
    # "é" is two bytes: the string ends at byte 15 although it ends at character 14.
    assert (0, 7, 15, "string") in spans
    # "ü" is two more bytes, and no VQL name: the lexer stops there and resumes after it.
    assert (0, 23, 24, "number") in spans
    # The block comment: to the end of its first line, all of the middle one, into the last.
    comments = [span for span in spans if span[3] == "comment"]
    assert comments[:3] == [(0, 38, None, "comment"), (1, 0, None, "comment"), (2, 0, 2, "comment")]
    assert spelled(text, [span for span in spans if span[0] == 2]) == [
        ("*/", "comment"),
        ("WHERE", "keyword"),
        ("TRUE", "boolean"),
        ("OR", "keyword"),
        ("NULL", "constant.builtin"),
        ("// fin", "comment"),
    ]


def test_comment_markers_inside_strings_and_quotes_inside_comments_are_literal() -> None:
    text = "SELECT '-- not a comment', \"/* nor this\" FROM scope() -- it's a comment"
    assert [name for _, name in spelled(text, highlight_spans(text))].count("comment") == 1
    assert ("'-- not a comment'", "string") in spelled(text, highlight_spans(text))
    assert ("-- it's a comment", "comment") in spelled(text, highlight_spans(text))


def test_half_typed_text_still_highlights() -> None:
    # The lexer stops at "$"; highlighting resumes after it.
    text = "SELECT $ FROM scope() WHERE x = 'unterminated\nstill the string"
    spans = spelled(text, highlight_spans(text))
    assert ("FROM", "keyword") in spans
    assert ("scope", "function") in spans
    assert spans[-2:] == [("'unterminated", "string"), ("still the string", "string")]
    # An unterminated block comment runs to the end: no keywords inside it.
    text = "SELECT 1 FROM scope() /* WHERE"
    assert spelled(text, highlight_spans(text))[-1] == ("/* WHERE", "comment")
    assert highlight_spans("") == []


def test_every_highlight_name_is_styled_by_every_builtin_theme() -> None:
    text = "LET f(a) = SELECT * FROM s(x=[1, {SELECT 1 FROM y()}]) WHERE a.b[0:1] =~ 'x'"
    text += " AND NOT FALSE || NULL -- c"
    names = {span[3] for span in highlight_spans(text)}
    assert {"keyword", "string", "number", "comment", "function", "operator"} <= names
    for theme in TextAreaTheme.builtin_themes():
        assert names <= set(theme.syntax_styles), theme.name


class EditorApp(App[None]):
    """An editor and a button after it, to see where tab takes the focus."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.initial_text = text
        self.changes: list[VQLEditor.Changed] = []

    def compose(self) -> ComposeResult:
        yield VQLEditor(self.initial_text, id="condition")
        yield Button("Create", id="create")

    def on_mount(self) -> None:
        self.query_one(VQLEditor).focus()

    def on_vqleditor_changed(self, message: VQLEditor.Changed) -> None:
        self.changes.append(message)


def status_of(app: App[None]) -> str:
    return str(app.query_one("#vql-status").render())


async def settle(pilot: Pilot[None]) -> None:
    """Wait out the check's debounce (pausing, however slow the machine), then its messages."""
    editor = pilot.app.query_one(VQLEditor)
    await pilot.pause()  # the text area's own Changed reaches the editor and starts the timer
    for _ in range(100):
        if not editor.check_pending:
            break
        await pilot.pause(VQLEditor.CHECK_DELAY)
    assert not editor.check_pending
    await pilot.pause()


async def test_typing_shows_a_tick_or_the_error_and_reports_each_change() -> None:
    app = EditorApp()
    async with app.run_test(size=(80, 24)) as pilot:
        editor = app.query_one(VQLEditor)
        assert status_of(app) == "empty"
        assert not editor.valid

        await pilot.press(*"SELECT 1 FROM scope()")
        await settle(pilot)
        assert status_of(app) == "✓ valid VQL"
        assert editor.valid and editor.error is None
        assert app.changes[-1].text == "SELECT 1 FROM scope()"
        assert app.changes[-1].error is None and app.changes[-1].valid

        # Turn "1" into "2-1": VQL lexes "-1" as a number, so this does not parse.
        await pilot.press("home", *["right"] * 7, "delete", *"2-1")
        await settle(pilot)
        assert editor.text == "SELECT 2-1 FROM scope()"
        assert status_of(app).startswith("line 1, col 9: ")
        assert app.query_one("#vql-status").has_class("-invalid")
        error = app.changes[-1].error
        assert error is not None and (error.line, error.column) == (1, 9)
        assert not app.changes[-1].valid

        # "2 - 1" parses.
        await pilot.press("left", "left", "space", "right", "space")
        await settle(pilot)
        assert editor.text == "SELECT 2 - 1 FROM scope()"
        assert status_of(app) == "✓ valid VQL"
        assert app.changes[-1].error is None


async def test_a_flood_of_edits_is_checked_once_it_pauses() -> None:
    app = EditorApp("SELECT 1 FROM scope()")
    async with app.run_test(size=(80, 24)) as pilot:
        text_area = app.query_one(VQLTextArea)
        text_area.move_cursor(text_area.document.end)
        for character in " WHERE":  # edits queued back to back, as a paste or fast typing
            text_area.insert(character)
        await settle(pilot)
        # One report for the whole flood, about the text as it stands.
        assert [change.text for change in app.changes] == ["SELECT 1 FROM scope() WHERE"]
        assert app.changes[0].error is not None
        assert str(app.changes[0].error).startswith("line 1, col 28: ")


async def test_setting_the_text_checks_and_reports_at_once() -> None:
    app = EditorApp()
    async with app.run_test(size=(80, 24)) as pilot:
        editor = app.query_one(VQLEditor)
        editor.text = "SELECT * FROM info("
        assert editor.error is not None
        assert status_of(app) == str(editor.error)
        await settle(pilot)
        assert [change.text for change in app.changes] == ["SELECT * FROM info("]


@pytest.mark.parametrize(
    ("allow_empty", "status", "valid"), [(False, "empty", False), (True, "✓ empty", True)]
)
async def test_empty_text_is_a_hint_unless_allowed(
    allow_empty: bool, status: str, valid: bool
) -> None:
    app = EditorApp("-- only a comment")
    async with app.run_test(size=(80, 24)):
        editor = app.query_one(VQLEditor)
        editor.allow_empty = allow_empty
        assert status_of(app) == status
        assert editor.valid is valid
        assert editor.error is None


async def test_tab_moves_focus_out_of_the_editor() -> None:
    app = EditorApp("SELECT 1 FROM scope()")
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.focused, VQLTextArea)
        await pilot.press("tab")
        assert app.focused is app.query_one("#create", Button)
        assert app.query_one(VQLEditor).text == "SELECT 1 FROM scope()"  # no tab typed


async def test_the_displayed_lines_are_highlighted() -> None:
    text = "SELECT 'ü' AS x\nFROM scope() -- fin"
    app = EditorApp(text)
    async with app.run_test(size=(80, 24)) as pilot:
        text_area = app.query_one(VQLTextArea)
        assert text_area.theme == VQLTextArea.DEFAULT_THEME
        assert dict(text_area._highlights) == {
            0: [(0, 6, "keyword"), (7, 11, "string"), (12, 14, "keyword")],
            1: [
                (0, 4, "keyword"),
                (5, 10, "function"),
                (10, 11, "punctuation.bracket"),
                (11, 12, "punctuation.bracket"),
                (13, 19, "comment"),
            ],
        }
        # Edits rebuild the map: typing a new first line shifts the rows down.
        await pilot.press("home", *"LET a = 1", "enter")
        assert text_area._highlights[0][0] == (0, 3, "keyword")
        assert text_area._highlights[1][0] == (0, 6, "keyword")
        # The lines are drawn with the theme's colours (what _render_line makes of the map).
        keyword_colour = text_area._theme.syntax_styles["keyword"].color
        strip = text_area.render_line(1)
        assert any(segment.style and segment.style.color == keyword_colour for segment in strip)
