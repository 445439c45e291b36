"""The server's artifact library: the built-in definitions, and those imported into the
datastore (``<datastore>/artifacts/<Name>.yaml``, one file each, written atomically).

An import is checked as a whole before anything is written: every definition must load, and
every artifact it calls or imports must be in the library or the same import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

from velotui.artifacts import Artifact, ArtifactError, CompileError, Library, load_artifact
from velotui.artifacts.compiler import dependencies
from velotui.artifacts.library import definition_files, load_file
from velotui.durable_files import write_file_atomically

MAX_DEFINITION_BYTES = 1024 * 1024


@functools.cache
def builtin_library() -> Library:
    """The built-in definitions, read once per process."""
    return Library.builtin()


def load_definitions(items: Iterable[tuple[str, str]]) -> list[Artifact]:
    """Artifacts from ``(origin, text)`` pairs; raises ArtifactError for the first that does
    not load (or is too large)."""
    loaded = []
    for origin, text in items:
        if len(text.encode("utf-8", "replace")) > MAX_DEFINITION_BYTES:
            raise ArtifactError(origin, 1, f"larger than {MAX_DEFINITION_BYTES} bytes")
        loaded.append(load_artifact(text, origin))
    return loaded


def with_definitions(library: Library, artifacts: Sequence[Artifact]) -> Library:
    """``library`` with ``artifacts`` over it, refusing (CompileError) any that calls or
    imports an artifact neither holds."""
    layered = library.layered(artifacts)
    dependencies(layered, artifacts)
    return layered


class ServerLibrary:
    """Built-in definitions with the datastore's imported ones over them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._library: Library | None = None

    def library(self) -> Library:
        if self._library is None:
            imported = ([load_file(p) for p in definition_files(self.folder)]
                        if self.folder.is_dir() else [])
            self._library = builtin_library().layered(imported)
        return self._library

    def import_definitions(self, artifacts: Sequence[Artifact]) -> list[str]:
        """Store ``artifacts`` (already loaded) in the datastore; returns their names. Raises
        CompileError when one calls an artifact that is nowhere to be found."""
        names = [a.name for a in artifacts]
        if len(set(names)) != len(names):
            raise CompileError("the same artifact name is defined twice in one import")
        with_definitions(self.library(), artifacts)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        for artifact in artifacts:
            write_file_atomically(self.folder / f"{artifact.name}.yaml",
                                  artifact.text.encode("utf-8"), mode=0o600)
        self._library = None
        return names
