"""What the new-hunt form and the one-off collection form share: the collection given as VQL or
as artifacts of the server's library, each chosen artifact with its parameters' form."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.containers import Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, RadioButton, RadioSet, Static

from velotui.screens.operator_keys import role_refuses
from velotui.server.errors import ServiceError
from velotui.widgets.artifact_parameters import ArtifactParameters
from velotui.widgets.artifact_picker import ArtifactPicker
from velotui.widgets.vql_editor import VQLEditor


class CollectionForm(Screen[None]):
    """A form whose collection is VQL (``#query``) or artifacts (an ``ArtifactPicker`` and a
    ``#artifacts`` column of ``ArtifactParameters``), switched by the ``#collection`` radio
    set. Subclasses say things on their status line (``_say``)."""

    @property
    def artifacts_mode(self) -> bool:
        return self.has_class("-artifacts-mode")

    def _say(self, text: str) -> None:
        raise NotImplementedError

    @work(exclusive=True, group="artifacts")
    async def load_artifacts(self) -> None:
        """The server's library, once, for the picker to search as the operator types."""
        picker = self.query_one(ArtifactPicker)
        try:
            artifacts = await self.app.api.list_artifacts()
        except ServiceError as error:
            picker.set_failure(str(error))
            return
        if self not in self.app.screen_stack:
            return  # the form was left while the library was on its way
        picker.set_artifacts(artifacts)
        await self.artifacts_loaded(artifacts)

    async def artifacts_loaded(self, library: list[dict[str, Any]]) -> None:
        """The library has come (for a subclass to fill in chosen artifacts)."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if role_refuses(self, action):
            return None  # greyed out: the console's operator may not
        if action == "remove_artifact":
            return self.artifacts_mode and bool(self._chosen())
        return True

    def action_ignore(self) -> None:
        pass

    def action_switch_collection(self) -> None:
        button = "#vql-mode" if self.artifacts_mode else "#artifacts-mode"
        self.query_one(button, RadioButton).value = True

    @on(RadioSet.Changed, "#collection")
    def collection_changed(self, event: RadioSet.Changed) -> None:
        artifacts = event.pressed.id == "artifacts-mode"
        self.set_class(artifacts, "-artifacts-mode")
        self.set_class(not artifacts, "-vql-mode")
        self.refresh_bindings()
        if self.collection_switched(artifacts):
            # On to where the collection is given.
            target: Widget = self.query_one(ArtifactPicker).search if artifacts \
                else self.query_one("#query", VQLEditor)
            target.focus()

    def collection_switched(self, artifacts: bool) -> bool:
        """The collection's kind changed; whether the focus moves to where it is given."""
        return True

    def _chosen(self) -> list[ArtifactParameters]:
        return list(self.query(ArtifactParameters))

    @on(ArtifactPicker.Chosen)
    async def artifact_chosen(self, event: ArtifactPicker.Chosen) -> None:
        name = event.artifact["name"]
        form = next((f for f in self._chosen() if f.artifact_name == name), None)
        if form is None:
            form = ArtifactParameters(event.artifact)
            await self.query_one("#artifacts", Vertical).mount(form)
            self.query_one("#none-chosen", Static).display = False
            self._say("")
            self.refresh_bindings()
        first = next(iter(form.fields.values()), None)
        (first or form).scroll_visible(animate=False)
        if first is not None:
            first.focus()

    @on(Button.Pressed, ".remove")
    async def remove_pressed(self, event: Button.Pressed) -> None:
        form = next(a for a in event.button.ancestors if isinstance(a, ArtifactParameters))
        await self._remove(form)

    async def action_remove_artifact(self) -> None:
        """Remove the artifact whose parameters hold the focus (else the last one added)."""
        chosen = self._chosen()
        focused = self.focused
        form = next((f for f in chosen if focused is not None and f in focused.ancestors),
                    chosen[-1] if chosen else None)
        if form is not None and self.artifacts_mode:
            await self._remove(form)

    async def _remove(self, form: ArtifactParameters) -> None:
        await form.remove()
        self.query_one("#none-chosen", Static).display = not self._chosen()
        self.refresh_bindings()
        self.query_one(ArtifactPicker).search.focus()
