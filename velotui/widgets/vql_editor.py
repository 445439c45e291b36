"""A VQL editor for forms: syntax highlighting without tree-sitter and a live parse status.

``highlight_spans`` turns VQL text into highlight spans (pure, testable without an app);
``VQLTextArea`` is a TextArea that draws them; ``VQLEditor`` puts a status line under one
("✓ valid VQL" or ``line L, col C: what is wrong``) and reports ``VQLEditor.Changed`` once typing
pauses.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any, ClassVar, Literal, Self

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static, TextArea

from velotui.external_editor import EditorFailed, edit_text
from velotui.vql import VQLSyntaxError, parse, tokenize

# Highlight names are the ones every builtin TextAreaTheme styles (monokai, dracula, vscode_dark,
# github_light, css), so switching the theme never leaves a token plain.
_KEYWORD_KINDS = (
    "SELECT", "FROM", "WHERE", "LET", "AS", "LIMIT", "DESC", "NOT", "IN", "GROUP_BY", "ORDER_BY",
)  # fmt: skip
_OPERATOR_KINDS = ("REGEX", "NE", "LE", "GE", "EQ", "LT", "GT", "PLUS", "MINUS", "STAR", "SLASH")
_TOKEN_HIGHLIGHTS: dict[str, str] = {
    **dict.fromkeys(_KEYWORD_KINDS, "keyword"),
    **dict.fromkeys(_OPERATOR_KINDS, "operator"),
    **dict.fromkeys(("LPAR", "RPAR", "LSQB", "RSQB", "LBRACE", "RBRACE"), "punctuation.bracket"),
    **dict.fromkeys(("COMMA", "DOT", "COLON"), "punctuation.delimiter"),
    "TRUE": "boolean",
    "FALSE": "boolean",
    "NULL": "constant.builtin",
    "NUMBER": "number",
}

# Strings, quoted names and comments, found left to right so a "--" inside a string is not a
# comment and a quote inside a comment opens no string. tokenize() skips comments, so they can
# only be found here. Unterminated strings and block comments run to the end of the text, as in
# any editor: what you are typing shows as what it will become.
_LITERALS = re.compile(
    r"""
      (?P<string>
          '''.*?'''                                # raw string: before '...' would eat its quotes
        | '(?:[^'\\]|\\.)*(?:'|\\?\Z)
        | "(?:[^"\\]|\\.)*(?:"|\\?\Z)
      )
    | (?P<quoted>`[^`]+`)                          # a quoted name: not styled, but opaque
    | (?P<comment>--[^\n]*|//[^\n]*|/\*.*?(?:\*/|\Z))
    """,
    re.DOTALL | re.VERBOSE,
)

# How often the lexer may be restarted past a character it cannot lex. Each restart costs a
# lexer setup, so a pasted blob full of stray characters degrades to plain text, not to lag.
_MAX_LEX_RESTARTS = 100


def highlight_spans(text: str) -> list[tuple[int, int, int | None, str]]:
    """Highlight spans for VQL ``text``, as ``TextArea._highlights`` holds them.

    Returns ``(line, start_byte, end_byte, name)`` tuples sorted by line and start: ``line`` is a
    0-based index into ``text.split("\\n")``; the offsets are UTF-8 byte offsets within that line;
    ``end_byte`` is None when the span runs on past the end of the line (a multi-line string or
    comment). Never raises: text that does not lex is left plain from the bad character until the
    lexer can resume after it.
    """
    regions = _literal_regions(text)
    spans = [(start, end, name) for start, end, name in regions if name]
    spans.extend(_token_spans(text, regions))
    spans.sort()
    return _to_line_bytes(text, spans)


def _literal_regions(text: str) -> list[tuple[int, int, str]]:
    """Strings, quoted names and comments as (start, end, highlight name or "")."""
    regions = []
    for match in _LITERALS.finditer(text):
        kind = match.lastgroup
        name = "string" if kind == "string" else "comment" if kind == "comment" else ""
        regions.append((match.start(), match.end(), name))
    return regions


def _token_spans(text: str, regions: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Spans for the lexer's tokens outside ``regions`` (which the regex scan styles itself)."""
    region_starts = [start for start, _, _ in regions]

    def region_at(position: int) -> int | None:
        """End of the region holding ``position``, if any."""
        index = bisect_right(region_starts, position) - 1
        if index >= 0 and regions[index][1] > position:
            return regions[index][1]
        return None

    def outside_regions(start: int, end: int) -> bool:
        if region_at(start) is not None:
            return False
        index = bisect_right(region_starts, start)
        return index >= len(regions) or region_starts[index] >= end

    tokens: list[tuple[str, int, int]] = []
    position, restarts = 0, 0
    while position < len(text) and restarts <= _MAX_LEX_RESTARTS:
        restarts += 1
        lexed = tokenize(text[position:] if position else text)
        tokens.extend((token.kind, token.start + position, token.end + position) for token in lexed)
        # The lexer stopped after its last token plus any blanks or comments: the next thing
        # left is the character it could not lex (or an unterminated string, already styled).
        stop = tokens[-1][2] if lexed else position
        while stop < len(text):
            if text[stop].isspace():
                stop += 1
            elif (region_end := region_at(stop)) is not None:
                stop = region_end
            else:
                break
        position = stop + 1

    spans = []
    for index, (kind, start, end) in enumerate(tokens):
        if not outside_regions(start, end):
            continue  # inside an unterminated block comment the lexer still sees "/" and "*"
        if kind == "NAME":
            # A call: the next token is "(" (comments between the two are allowed, as in VQL).
            if index + 1 < len(tokens) and tokens[index + 1][0] == "LPAR":
                spans.append((start, end, "function"))
        elif kind in ("AND_OP", "OR_OP"):
            spans.append((start, end, "keyword" if text[start].isalpha() else "operator"))
        elif (name := _TOKEN_HIGHLIGHTS.get(kind)) is not None:
            spans.append((start, end, name))
    return spans


def _to_line_bytes(
    text: str, spans: list[tuple[int, int, str]]
) -> list[tuple[int, int, int | None, str]]:
    """Character spans over the whole text -> per-line UTF-8 byte spans."""
    lines = text.split("\n")
    line_starts = [0]
    for line in lines[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    byte_tables: dict[int, list[int] | None] = {}

    def to_byte(row: int, column: int) -> int:
        # TextArea maps bytes back to characters per line; ASCII lines need no table.
        if row not in byte_tables:
            byte_tables[row] = _utf8_offsets(lines[row])
        table = byte_tables[row]
        return column if table is None else table[column]

    result: list[tuple[int, int, int | None, str]] = []
    for start, end, name in spans:
        if end <= start:
            continue
        first = bisect_right(line_starts, start) - 1
        last = bisect_right(line_starts, end - 1) - 1
        start_column = start - line_starts[first]
        end_column = min(end - line_starts[last], len(lines[last]))  # a span may end on "\n"
        if first == last:
            if end_column > start_column:
                result.append(
                    (first, to_byte(first, start_column), to_byte(first, end_column), name)
                )
            continue
        result.append((first, to_byte(first, start_column), None, name))
        result.extend((row, 0, None, name) for row in range(first + 1, last) if lines[row])
        # An end byte of 0 would mean "to the end of the line" to TextArea, so never emit one.
        if end_column > 0:
            result.append((last, 0, to_byte(last, end_column), name))
    result.sort(key=lambda span: (span[0], span[1]))
    return result


def _utf8_offsets(line: str) -> list[int] | None:
    """Byte offset of each character position in ``line`` (None when bytes equal characters)."""
    if line.isascii():
        return None
    offsets, total = [0], 0
    for character in line:
        code = ord(character)
        total += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
        offsets.append(total)
    return offsets


def prepare() -> None:
    """Build the VQL lexer and parser this module uses (a quarter of a second each, once per
    process), so that the first editor shown does not pay for them. Safe from any thread."""
    highlight_spans("SELECT * FROM scope()")
    _verdict("SELECT * FROM scope()")


def _verdict(text: str) -> tuple[VQLSyntaxError | None, bool]:
    """The syntax error in ``text`` (or None) and whether it holds no statement at all."""
    try:
        # parse() caches its trees by text, so checking at every pause in typing is cheap.
        return None, not parse(text)
    except VQLSyntaxError as error:
        return error, False


class VQLTextArea(TextArea):
    """A TextArea highlighting VQL from the engine's own lexer (no tree-sitter needed).

    Defaults suit a narrow form: soft wrap, no line numbers, and ``tab`` moving focus on so a
    form is driven by keys alone.
    """

    DEFAULT_THEME: ClassVar[str] = "vscode_dark"
    """A TextArea theme that stays readable when colours are reduced to 256."""

    def __init__(
        self,
        text: str = "",
        *,
        theme: str | None = None,
        soft_wrap: bool = True,
        show_line_numbers: bool = False,
        tab_behavior: Literal["focus", "indent"] = "focus",
        **kwargs: Any,
    ) -> None:
        """Same arguments as ``TextArea``; ``theme`` defaults to ``DEFAULT_THEME``."""
        super().__init__(
            text,
            theme=theme or self.DEFAULT_THEME,
            soft_wrap=soft_wrap,
            show_line_numbers=show_line_numbers,
            tab_behavior=tab_behavior,
            **kwargs,
        )

    def _build_highlight_map(self) -> None:
        """Refill ``_highlights`` from ``highlight_spans`` (TextArea calls this on every edit)."""
        self._line_cache.clear()
        highlights = self._highlights
        highlights.clear()
        # Join the document's own lines so row numbers match whatever newlines the text used.
        for row, start, end, name in highlight_spans("\n".join(self.document.lines)):
            highlights[row].append((start, end, name))


class VQLEditor(Widget):
    """A VQL editor with a status line: "✓ valid VQL" or ``line L, col C: what is wrong``.

    The text is checked ``CHECK_DELAY`` seconds after typing stops, then ``VQLEditor.Changed``
    is posted (handler ``on_vqleditor_changed``, or ``@on(VQLEditor.Changed)``). The text area's
    own ``TextArea.Changed`` is stopped here, so a form sees one kind of message per editor.
    ``ctrl+e`` opens the text in the operator's ``$EDITOR`` and reads it back.
    """

    BINDINGS = [
        # Priority: the text area's own ctrl+e (end of line) would take it first.
        Binding("ctrl+e", "external_editor", "$EDITOR", id="external-editor", priority=True),
    ]

    DEFAULT_CSS = """
    VQLEditor {
        height: auto;
    }
    VQLEditor > VQLTextArea {
        height: 7;  /* five lines of text inside the border */
    }
    VQLEditor > #vql-status {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    VQLEditor > #vql-status.-valid {
        color: $text-success;
    }
    VQLEditor > #vql-status.-invalid {
        color: $text-error;
    }
    """

    CHECK_DELAY: ClassVar[float] = 0.15
    """Seconds of quiet after the last keystroke before the text is checked."""

    class Changed(Message):
        """The editor's text changed and has been checked; floods collapse to the latest."""

        def __init__(self, editor: VQLEditor, text: str, error: VQLSyntaxError | None) -> None:
            super().__init__()
            self.editor = editor
            self.text = text
            self.error = error

        @property
        def control(self) -> VQLEditor:
            """The editor, so ``@on(VQLEditor.Changed, "#id")`` selects by the editor's id."""
            return self.editor

        @property
        def valid(self) -> bool:
            """True when ``text`` parses and, unless the editor allows it, is not empty."""
            error, empty = _verdict(self.text)
            return error is None and (self.editor.allow_empty or not empty)

        def can_replace(self, message: Message) -> bool:
            # A newer check of the same editor makes this one stale.
            return isinstance(message, VQLEditor.Changed) and message.editor is self.editor

    def __init__(
        self,
        text: str = "",
        *,
        allow_empty: bool = False,
        id: str | None = None,
        classes: str | None = None,
        placeholder: str = "",
    ) -> None:
        """An editor holding ``text``; ``allow_empty`` makes an empty query count as valid."""
        super().__init__(id=id, classes=classes)
        self._allow_empty = allow_empty
        self._text_area = VQLTextArea(text, id="vql-text", placeholder=placeholder)
        # No markup: error messages quote VQL, which is full of square brackets.
        self._status = Static("", id="vql-status", markup=False)
        self._check_timer: Timer | None = None
        self._reported_text = text  # the initial text needs no Changed message
        self._show_status()

    def compose(self) -> ComposeResult:
        yield self._text_area
        yield self._status

    @property
    def text_area(self) -> VQLTextArea:
        """The text area inside (to move its cursor, read its selection, ...)."""
        return self._text_area

    @property
    def text(self) -> str:
        """The query as typed."""
        return self._text_area.text

    @text.setter
    def text(self, text: str) -> None:
        if text == self.text:
            return
        self._text_area.load_text(text)
        # Set by code, not typed: no reason to wait before checking and reporting.
        self._settle()

    @property
    def allow_empty(self) -> bool:
        """Whether an empty query (no statement) counts as valid."""
        return self._allow_empty

    @allow_empty.setter
    def allow_empty(self, allow_empty: bool) -> None:
        self._allow_empty = allow_empty
        self._show_status()

    @property
    def error(self) -> VQLSyntaxError | None:
        """The syntax error in the current text, or None when it parses.

        Always about the current text, even while the status line waits for typing to pause.
        """
        return _verdict(self.text)[0]

    @property
    def valid(self) -> bool:
        """True when the text parses and is not empty (or ``allow_empty`` is set)."""
        error, empty = _verdict(self.text)
        return error is None and (self._allow_empty or not empty)

    @property
    def check_pending(self) -> bool:
        """True while typing has not paused long enough for the status line to catch up."""
        return self._check_timer is not None

    def focus(self, scroll_visible: bool = True) -> Self:
        """Focus the text area (the editor itself takes no focus)."""
        self._text_area.focus(scroll_visible)
        return self

    def action_external_editor(self) -> None:
        """Edit the text in ``$EDITOR`` (the console suspended meanwhile); back here after."""
        try:
            text = edit_text(self.app, self.text, suffix=".vql")
        except EditorFailed as error:
            self.notify(str(error), title="Not edited", severity="error")
            return
        self.text = text
        self._text_area.move_cursor(self._text_area.document.end)
        self.focus()

    @on(TextArea.Changed, "#vql-text")
    def _text_edited(self, event: TextArea.Changed) -> None:
        event.stop()
        # Restart the countdown on each keystroke: fast typing never waits on the parser.
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(self.CHECK_DELAY, self._settle, name="vql-check")

    def _settle(self) -> None:
        """Check the text now, show the verdict, and report it if the text moved on."""
        if self._check_timer is not None:
            self._check_timer.stop()
            self._check_timer = None
        error = self._show_status()
        text = self.text
        if text != self._reported_text:  # typed and undone before the pause: nothing changed
            self._reported_text = text
            self.post_message(self.Changed(self, text, error))

    def _show_status(self) -> VQLSyntaxError | None:
        """Write the verdict on the current text into the status line; return its error."""
        error, empty = _verdict(self.text)
        if error is not None:
            message, state = str(error), "-invalid"
        elif empty:
            message, state = ("✓ empty", "-valid") if self._allow_empty else ("empty", "-empty")
        else:
            message, state = "✓ valid VQL", "-valid"
        self._status.update(message)
        self._status.set_class(state == "-valid", "-valid")
        self._status.set_class(state == "-invalid", "-invalid")
        self._status.set_class(state == "-empty", "-empty")
        return error
