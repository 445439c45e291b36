"""An artifact picker for forms: a search box over the library, its matches, and the description
of the one highlighted.

The library comes once from the server (``set_artifacts``); each key typed filters it here, on
the client, so searching never waits on the server. ``up``/``down`` in the search box move through
the matches and ``enter`` chooses the highlighted one (posting ``ArtifactPicker.Chosen``); the
matches list takes no focus, so ``tab`` goes straight on to the next field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option


def matching_artifacts(artifacts: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The artifacts whose name or description holds every word of ``text`` (case ignored):
    those with every word in the name first, then the others, each group in name order."""
    words = text.lower().split()
    by_name, by_description = [], []
    for artifact in artifacts:
        name = artifact["name"].lower()
        about = f"{name} {str(artifact.get('description') or '').lower()}"
        if all(word in name for word in words):
            by_name.append(artifact)
        elif all(word in about for word in words):
            by_description.append(artifact)
    return sorted(by_name, key=_name) + sorted(by_description, key=_name)


def _name(artifact: dict[str, Any]) -> str:
    return str(artifact["name"]).lower()


class ArtifactPicker(Vertical):
    """Search box, matches and the highlighted match's description."""

    DEFAULT_CSS = """
    ArtifactPicker {
        height: auto;
    }
    ArtifactPicker > #artifact-matches {
        height: 5;
        border: none;
        padding: 0;
        scrollbar-size-vertical: 1;
    }
    /* The list never has the focus; its highlight is the cursor while searching. */
    ArtifactPicker.-searching > #artifact-matches > .option-list--option-highlighted {
        color: $block-cursor-foreground;
        background: $block-cursor-background;
        text-style: $block-cursor-text-style;
    }
    ArtifactPicker > #artifact-count {
        padding: 0 1;
        color: $text-muted;
    }
    ArtifactPicker > #artifact-description {
        height: auto;
        max-height: 3;
        padding: 0 1;
        color: $text-muted;
        text-style: italic;
    }
    """

    BINDINGS = [
        Binding("down", "move(1)", "Next match", show=False),
        Binding("up", "move(-1)", "Previous match", show=False),
        Binding("pagedown", "move(5)", "Matches: page down", show=False),
        Binding("pageup", "move(-5)", "Matches: page up", show=False),
    ]

    class Chosen(Message):
        """The operator chose ``artifact`` (its summary, as ``list_artifacts`` gives it)."""

        def __init__(self, picker: ArtifactPicker, artifact: dict[str, Any]) -> None:
            super().__init__()
            self.picker = picker
            self.artifact = artifact

        @property
        def control(self) -> ArtifactPicker:
            return self.picker

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.artifacts: list[dict[str, Any]] | None = None  # None until the library came
        self.matches: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="type part of an artifact's name or description",
                    id="artifact-search")
        yield Static("loading the artifact library…", id="artifact-count")
        matches = OptionList(id="artifact-matches")
        matches.can_focus = False  # driven from the search box
        yield matches
        yield Static("", id="artifact-description")

    def on_descendant_focus(self) -> None:
        self._searching(True)

    def on_descendant_blur(self) -> None:
        self._searching(False)

    def _searching(self, searching: bool) -> None:
        self.set_class(searching, "-searching")
        self.query_one("#artifact-matches", OptionList).refresh()

    @property
    def search(self) -> Input:
        return self.query_one("#artifact-search", Input)

    def set_artifacts(self, artifacts: Sequence[dict[str, Any]]) -> None:
        """The library to pick from (the server's summaries)."""
        self.artifacts = list(artifacts)
        self._refilter()

    def set_failure(self, reason: str) -> None:
        """The library could not be had: say why where the matches would be."""
        self.query_one("#artifact-count", Static).update(
            Text(f"no artifact library: {reason}", style="bold"))

    @on(Input.Changed, "#artifact-search")
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self._refilter()

    def _refilter(self) -> None:
        if self.artifacts is None:
            return
        self.matches = matching_artifacts(self.artifacts, self.search.value)
        matches = self.query_one("#artifact-matches", OptionList)
        matches.clear_options()
        matches.add_options(Option(Text(a["name"])) for a in self.matches)
        if self.matches:
            matches.highlighted = 0
        shown = f"{len(self.matches)} of {len(self.artifacts)} artifacts"
        if self.matches:
            shown += " (↑↓ choose, enter adds)"
        self.query_one("#artifact-count", Static).update(shown)
        self._describe()

    @property
    def highlighted(self) -> dict[str, Any] | None:
        index = self.query_one("#artifact-matches", OptionList).highlighted
        if index is None or not 0 <= index < len(self.matches):
            return None
        return self.matches[index]

    @on(OptionList.OptionHighlighted, "#artifact-matches")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self._describe()

    def _describe(self) -> None:
        artifact = self.highlighted
        text = Text()
        if artifact is not None:
            # The first lines say what it is; the rest is for `velotui artifacts show`.
            text = Text(" ".join(str(artifact.get("description") or "").split())
                        or "(no description)")
        self.query_one("#artifact-description", Static).update(text)

    def action_move(self, step: int) -> None:
        matches = self.query_one("#artifact-matches", OptionList)
        if not self.matches:
            return
        current = matches.highlighted if matches.highlighted is not None else 0
        matches.highlighted = min(max(current + step, 0), len(self.matches) - 1)

    @on(Input.Submitted, "#artifact-search")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._choose()

    @on(OptionList.OptionSelected, "#artifact-matches")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose()

    def _choose(self) -> None:
        artifact = self.highlighted
        if artifact is not None:
            self.post_message(self.Chosen(self, artifact))
