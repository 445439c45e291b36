"""A library of artifacts: the built-in definitions, those imported into a server, and folders
added for one command.

Later layers win: a definition imported with the name of a built-in one replaces it, as in
Velociraptor. Names are exact; a lookup that differs only in case finds the one definition it
can mean and says so otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from velotui.artifacts.definition import Artifact, ArtifactError, load_artifact

BUILTIN_FOLDER = Path(__file__).resolve().parent / "definitions"
SUFFIXES = (".yaml", ".yml")


class UnknownArtifact(LookupError):
    """No artifact of that name; the message suggests close names."""


def definition_files(path: Path) -> list[Path]:
    """The YAML files of a folder (recursively, sorted) or the file itself."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return [path]


def load_file(path: Path) -> Artifact:
    """The artifact one file defines. Raises ArtifactError (unreadable files too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ArtifactError(str(path), 1, f"cannot read: {reason}") from None
    return load_artifact(text, str(path))


class Library:
    """Artifacts by name."""

    def __init__(self, artifacts: Iterable[Artifact] = ()) -> None:
        self._by_name: dict[str, Artifact] = {}
        for artifact in artifacts:
            self.add(artifact)

    @classmethod
    def builtin(cls) -> Library:
        """The definitions that ship with velotui."""
        return cls(load_file(path) for path in definition_files(BUILTIN_FOLDER))

    def add(self, artifact: Artifact) -> None:
        self._by_name[artifact.name] = artifact

    def add_folder(self, path: Path) -> list[Artifact]:
        """Load every definition of ``path`` (a folder or a file); all or nothing: raises the
        first ArtifactError and adds none when one does not load."""
        if not path.exists():
            raise ArtifactError(str(path), 1, "no such file or folder")
        loaded = [load_file(file) for file in definition_files(path)]
        for artifact in loaded:
            self.add(artifact)
        return loaded

    def layered(self, artifacts: Iterable[Artifact]) -> Library:
        """A copy of this library with ``artifacts`` added over it."""
        copy = Library(self._by_name.values())
        for artifact in artifacts:
            copy.add(artifact)
        return copy

    def __iter__(self) -> Iterator[Artifact]:
        return iter(sorted(self._by_name.values(), key=lambda a: a.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def find(self, name: str) -> Artifact | None:
        artifact = self._by_name.get(name)
        if artifact is None:
            folded = [a for n, a in self._by_name.items() if n.lower() == name.lower()]
            artifact = folded[0] if len(folded) == 1 else None
        return artifact

    def get(self, name: str) -> Artifact:
        """The artifact called ``name``; raises UnknownArtifact with suggestions."""
        artifact = self.find(name)
        if artifact is None:
            words = [w for w in re.split(r"[.\s_]+", name.lower()) if len(w) > 2]
            close = [a.name for a in self if any(w in a.name.lower() for w in words)][:5]
            hint = f" (did you mean: {', '.join(close)}?)" if close else \
                " (see: velotui artifacts list)"
            raise UnknownArtifact(f"no artifact {name!r}{hint}")
        return artifact

    def search(self, pattern: str = "") -> list[Artifact]:
        """Artifacts whose name or description matches the regular expression (any case)."""
        if not pattern:
            return list(self)
        matcher = re.compile(pattern, re.IGNORECASE)
        return [a for a in self if matcher.search(a.name) or matcher.search(a.description)]
