"""The filter bar: `/` opens a one-line input under a table, and the table follows each keystroke.

It is hidden until opened. Typing posts `FilterBar.Changed` with the text; esc clears the filter,
hides the bar and gives the focus back to the table; enter keeps the filter, hides the input and
leaves one line that says which filter is on (k9s and lazygit do the same), with the focus back on
the table. A screen binds `/` (the ``slash`` key) to `open()` and filters its rows on `Changed`;
screens whose rows are all in memory use `matches`.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Static


def matches(filter: str, cells: Sequence[str]) -> bool:
    """True when ``filter`` is empty or found in any of ``cells``, ignoring case."""
    needle = filter.strip().casefold()
    return not needle or any(needle in str(cell).casefold() for cell in cells)


class FilterBar(Widget):
    """A filter input for the table in view, hidden until `open()`."""

    DEFAULT_CSS = """
    FilterBar {
        height: auto;
        display: none;
        &.-open, &.-kept { display: block; }
        #filter-line { height: 1; display: none; }
        &.-open #filter-line { display: block; }
        #filter-prompt { width: 2; padding-left: 1; color: $text-warning; }
        /* By ID: above Input's own focused border. */
        #filter-input {
            width: 1fr;
            height: 1;
            border: none;
            padding: 0 1 0 0;
        }
        #filter-kept {
            height: 1;
            padding: 0 1;
            color: $text-warning;
            text-wrap: nowrap;
            text-overflow: ellipsis;
            display: none;
        }
        &.-kept #filter-kept { display: block; }
    }
    """

    BINDINGS = [Binding("escape", "clear", "Clear filter")]

    class Changed(Message):
        """The filter text changed (empty: no filter)."""

        def __init__(self, filter_bar: FilterBar, value: str) -> None:
            super().__init__()
            self.filter_bar = filter_bar
            self.value = value

        @property
        def control(self) -> FilterBar:
            return self.filter_bar

    def __init__(self, *, placeholder: str = "filter: type to narrow, enter keeps, esc clears",
                 name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._placeholder = placeholder
        self._served: Widget | None = None  # what had the focus when the bar opened

    def compose(self) -> ComposeResult:
        with Horizontal(id="filter-line"):
            yield Static("/", id="filter-prompt")
            yield Input(placeholder=self._placeholder, id="filter-input")
        yield Static("", id="filter-kept", markup=False)

    @property
    def value(self) -> str:
        """The filter in force ("" for none)."""
        return self.query_one(Input).value

    @property
    def active(self) -> bool:
        """True while a filter is typed or kept."""
        return bool(self.value) or self.has_class("-open")

    def open(self) -> None:
        """Show the input with the current filter and give it the focus."""
        focused = self.screen.focused
        if focused is not None and self not in focused.ancestors_with_self:
            self._served = focused
        self.remove_class("-kept")
        self.add_class("-open")
        field = self.query_one(Input)
        field.focus()
        field.cursor_position = len(field.value)

    def clear(self) -> bool:
        """Drop the filter, hide the bar, give the focus back; False (and nothing done) when
        there was none, so a screen's esc can clear a filter first and go back otherwise."""
        if not self.active:
            return False
        field = self.query_one(Input)
        with field.prevent(Input.Changed):
            field.value = ""
        self.remove_class("-open", "-kept")
        self.post_message(self.Changed(self, ""))
        self._give_focus_back()
        return True

    def keep(self, value: str) -> None:
        """Put ``value`` in force as if typed and kept with enter (the focus goes back to the
        table if the input had it); posts `Changed` when that changes the filter. An empty
        value clears it."""
        if not value:
            self.clear()
            return
        field = self.query_one(Input)
        changed = value != field.value
        was_open = self.has_class("-open")
        with field.prevent(Input.Changed):
            field.value = value
        self.remove_class("-open")
        self._show_kept(value)
        if changed:
            self.post_message(self.Changed(self, value))
        if was_open:
            self._give_focus_back()

    def _show_kept(self, value: str) -> None:
        self.query_one("#filter-kept", Static).update(
            f"filter: {value}   (/ to change, esc to clear)")
        self.add_class("-kept")

    def action_clear(self) -> None:
        self.clear()

    def _give_focus_back(self) -> None:
        served = self._served
        if served is not None and served.is_attached and served.focusable:
            served.focus()
        else:
            self.screen.focus_next()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value
        self.remove_class("-open")
        if value:
            self._show_kept(value)
        self._give_focus_back()
