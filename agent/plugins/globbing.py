"""glob(): find files by wildcard patterns, walking the file system once for all of them.

Patterns support ``*``, ``?``, ``[...]``, ``{a,b}`` alternatives and ``**`` as a whole path
component for any number of directories (including none). All patterns of one call are matched in
a single walk, so a file matched by two patterns is reported once.

Symlinked directories are entered when a pattern component names them (``/var/run/*``) but never
by ``**``: each explicit component consumes a part of the pattern, so the walk always ends, even
in a tree that links to itself. ``nosymlink`` enters no symlinked directory at all, and
``one_filesystem`` none on another file system than the directory the pattern starts at.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import stat as stat_module
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.plugins.accessors import accessor_for
from agent.plugins.arguments import os_error_text, path_argument
from agent.plugins.blocking import CHECKPOINT, call_blocking, stream_blocking
from agent.plugins.file_rows import file_row
from velotui.vql import VQLSyntaxError, compile_query
from velotui.vql.executor import execute
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import truthy

MAX_BRACE_EXPANSIONS = 1024
"""More alternatives than this from one pattern is a mistake, not a search."""

_WINDOWS = os.name == "nt"
_SEPARATORS = "/\\" if _WINDOWS else "/"
_SEPARATOR_RE = re.compile("[/\\\\]+" if _WINDOWS else "/+")
_WILDCARD_RE = re.compile(r"[*?\[]")


def expand_braces(pattern: str) -> list[str]:
    """The pattern with each ``{a,b,...}`` replaced by its alternatives, in order."""
    search_from = 0
    while (start := pattern.find("{", search_from)) != -1:
        depth = 0
        parts: list[str] = []
        part_start = start + 1
        for position in range(start, len(pattern)):
            char = pattern[position]
            if char == "{":
                depth += 1
            elif char == "," and depth == 1:
                parts.append(pattern[part_start:position])
                part_start = position + 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    if not parts:
                        break  # "{abc}" has no alternatives: a literal brace
                    parts.append(pattern[part_start:position])
                    prefix, suffix = pattern[:start], pattern[position + 1 :]
                    expanded: list[str] = []
                    for part in parts:
                        expanded.extend(expand_braces(prefix + part + suffix))
                        if len(expanded) > MAX_BRACE_EXPANSIONS:
                            raise ValueError(
                                f"more than {MAX_BRACE_EXPANSIONS} alternatives in {pattern!r}"
                            )
                    return expanded
        else:
            return [pattern]  # unbalanced: literal
        search_from = start + 1
    return [pattern]


@dataclass(frozen=True)
class _Component:
    """One path component of a pattern."""

    text: str
    regex: re.Pattern[str] | None  # None for a literal name
    recursive: bool  # "**"

    def matches(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.match(name) is not None
        if _WINDOWS:
            return name.lower() == self.text.lower()
        return name == self.text


def _component(text: str) -> _Component:
    if text == "**":
        return _Component(text, None, True)
    if _WILDCARD_RE.search(text):
        flags = re.IGNORECASE if _WINDOWS else 0
        return _Component(text, re.compile(fnmatch.translate(text), flags), False)
    return _Component(text, None, False)


def split_pattern(pattern: str, root: str | None = None) -> tuple[str, list[str]]:
    """The pattern as (anchor, components): the directory the walk starts at and the path
    components below it. Relative patterns are under ``root``, or the working directory."""
    if root is not None:
        pattern = os.path.join(root, pattern.lstrip(_SEPARATORS))
    elif not os.path.isabs(pattern):
        pattern = os.path.join(os.getcwd(), pattern)
    pattern = os.path.normpath(pattern)
    drive, rest = os.path.splitdrive(pattern)
    components = [part for part in _SEPARATOR_RE.split(rest) if part and part != "."]
    return drive + os.sep, components


# Walking -------------------------------------------------------------------------------------

# A position is (pattern index, component index): "the next directory level must match that
# component of that pattern".
_Position = tuple[int, int]


class _NamedEntry:
    """What the walk needs of an ``os.DirEntry``, for a name looked up directly."""

    __slots__ = ("_link_status", "name", "path")

    def __init__(self, path: str, name: str, link_status: os.stat_result) -> None:
        self.path = path
        self.name = name
        self._link_status = link_status

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return os.stat(self.path) if follow_symlinks else self._link_status

    def is_symlink(self) -> bool:
        return stat_module.S_ISLNK(self._link_status.st_mode)

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self.is_symlink():
            return os.path.isdir(self.path)
        return stat_module.S_ISDIR(self._link_status.st_mode)


class GlobWalk:
    """One walk over the file system for a set of patterns; iterate ``rows()`` in a thread."""

    def __init__(
        self,
        patterns: Iterable[str],
        root: str | None = None,
        *,
        follow_symlinks: bool = True,
        one_filesystem: bool = False,
        admit: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self._follow_symlinks = follow_symlinks
        # Called (blocking) with a directory's file row before the walk enters it.
        self._admit = admit
        self._one_filesystem = one_filesystem
        self._device: int | None = None  # the anchor's file system, with one_filesystem
        self._patterns: list[list[_Component]] = []
        self._anchors: dict[str, set[_Position]] = {}
        for pattern in patterns:
            anchor, parts = split_pattern(pattern, root)
            if not parts:
                continue
            self._anchors.setdefault(anchor, set()).add((len(self._patterns), 0))
            self._patterns.append([_component(part) for part in parts])
        self.unreadable_count = 0
        self.first_unreadable: tuple[str, str] | None = None

    def rows(self) -> Iterator[dict[str, Any]]:
        """A file row for every match, and CHECKPOINT after each directory; blocking."""
        for anchor in sorted(self._anchors):
            yield from self._walk(anchor, self._closure(self._anchors[anchor]))

    def _closure(self, positions: Iterable[_Position]) -> set[_Position]:
        # "**" may match no directory at all, so the component after it applies here too.
        closed: set[_Position] = set()
        for pattern_index, component_index in positions:
            components = self._patterns[pattern_index]
            while component_index < len(components):
                closed.add((pattern_index, component_index))
                if not components[component_index].recursive:
                    break
                component_index += 1
        return closed

    def _note_unreadable(self, path: str, error: OSError) -> None:
        self.unreadable_count += 1
        if self.first_unreadable is None:
            self.first_unreadable = (path, os_error_text(error))

    def _walk(self, anchor: str, start: set[_Position]) -> Iterator[dict[str, Any]]:
        if self._one_filesystem:
            try:
                self._device = os.stat(anchor).st_dev
            except OSError as error:
                self._note_unreadable(anchor, error)
                return
        pending: list[tuple[str, set[_Position]]] = [(anchor, start)]
        while pending:
            directory, positions = pending.pop()
            entries = self._entries(directory, positions)
            yield CHECKPOINT
            subdirectories: list[tuple[str, set[_Position]]] = []
            for entry in entries:
                matched, named, recursive = self._advance(entry.name, positions)
                if matched:
                    try:
                        yield file_row(entry.path, entry.stat(follow_symlinks=False))
                    except OSError:
                        pass  # gone since the directory was listed
                next_positions = self._descend(entry, named, recursive)
                if next_positions:
                    subdirectories.append((entry.path, self._closure(next_positions)))
            pending.extend(reversed(subdirectories))

    def _entries(self, directory: str, positions: set[_Position]) -> list[Any]:
        components = [self._patterns[p][c] for p, c in positions]
        if all(c.regex is None and not c.recursive for c in components):
            # Only literal names are wanted here: look them up instead of listing the directory.
            found: list[Any] = []
            for name in sorted({c.text for c in components}):
                path = os.path.join(directory, name)
                try:
                    found.append(_NamedEntry(path, name, os.lstat(path)))
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as error:
                    self._note_unreadable(path, error)
            return found
        try:
            with os.scandir(directory) as listing:
                return sorted(listing, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            self._note_unreadable(directory, error)
            return []

    def _advance(
        self, name: str, positions: set[_Position]
    ) -> tuple[bool, set[_Position], set[_Position]]:
        """Whether ``name`` completes a pattern, and the positions it leads to below it: through
        named components, and through "**"."""
        matched = False
        named: set[_Position] = set()
        recursive: set[_Position] = set()
        for pattern_index, component_index in positions:
            components = self._patterns[pattern_index]
            component = components[component_index]
            is_last = component_index + 1 == len(components)
            if component.recursive:
                matched = matched or is_last
                recursive.add((pattern_index, component_index))
            elif component.matches(name):
                if is_last:
                    matched = True
                else:
                    named.add((pattern_index, component_index + 1))
        return matched, named, recursive

    def _descend(
        self, entry: Any, named: set[_Position], recursive: set[_Position]
    ) -> set[_Position]:
        if not named and not recursive:
            return set()
        try:
            if not entry.is_dir():
                return set()
            if self._device is not None and entry.stat().st_dev != self._device:
                return set()
            if entry.is_symlink():
                positions = named if self._follow_symlinks else set()
            else:
                positions = named | recursive
            if (positions and self._admit is not None
                    and not self._admit(file_row(entry.path, entry.stat(follow_symlinks=False)))):
                return set()
        except OSError:
            return set()
        return positions


# The plugin ----------------------------------------------------------------------------------


def _pattern_list(scope: Scope, globs: Any) -> list[str] | None:
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list | tuple) or not globs:
        scope.error(f"glob(): globs must be a pattern or a list of patterns, not {globs!r}")
        return None
    patterns: list[str] = []
    for item in globs:
        if not isinstance(item, str) or not item:
            scope.error(f"glob(): globs must hold pattern strings, not {item!r}")
            return None
        try:
            patterns.extend(expand_braces(item))
        except ValueError as error:
            scope.error(f"glob(): {error}")
            return None
    return patterns


_LAMBDA_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=>(.*)$", re.DOTALL)


def _recursion_filter(
    scope: Scope, callback: Any
) -> Callable[[dict[str, Any]], bool] | bool | None:
    """The walk's ``admit`` for a recursion callback: None when there is none, False after
    logging why it is not one.

    The walk runs in a worker thread; each call hands the condition to the event loop (which
    is free: it awaits that thread) and waits for its answer.
    """
    if callback is None or (isinstance(callback, str) and not callback.strip()):
        return None
    match = _LAMBDA_RE.match(callback) if isinstance(callback, str) else None
    if match is None:
        scope.error(f"glob(): recursion_callback must be VQL like \"x => NOT x.Name =~ 'proc'\","
                    f" not {callback!r}")
        return False
    parameter, condition = match.group(1), match.group(2)
    try:
        program = compile_query(f"SELECT ({condition}) AS Admit FROM scope()", scope.registry)
    except VQLSyntaxError as error:
        scope.error(f"glob(): recursion_callback {callback!r} is not VQL: {error}")
        return False
    plan = program.statements[0]
    loop = asyncio.get_running_loop()

    async def decide(row: dict[str, Any]) -> bool:
        async for result in execute(plan, scope.child({parameter: row})):  # type: ignore[arg-type]
            return truthy(result.get("Admit"))
        return False

    def admit(row: dict[str, Any]) -> bool:
        try:
            return asyncio.run_coroutine_threadsafe(decide(row), loop).result()
        except RuntimeError:
            return False  # the loop is closing: the query is over
        except Exception as error:
            scope.error(f"glob(): recursion_callback failed: {type(error).__name__}: {error}")
            return True

    return admit


async def glob(
    scope: Scope,
    *,
    globs: Any,
    root: Any = None,
    accessor: Any = None,
    nosymlink: Any = False,
    one_filesystem: Any = False,
    recursion_callback: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """One row per file matching any of the patterns (Name, OSPath, FullPath, Size, Mode, Mtime,
    Atime, Ctime, IsDir, IsLink); ``root`` is the directory relative patterns start from.
    ``nosymlink`` enters no symlinked directory; ``one_filesystem`` stays on the file system
    the search starts on; ``recursion_callback`` (VQL text ``"x => condition"``) enters only
    the directories whose row makes the condition true. The accessor is ``file`` (or ``auto``):
    ``data`` has no directories."""
    if isinstance(accessor, str) and accessor.strip().lower() == "data":
        scope.error("glob(): accessor 'data' has no directories to search (use file or auto)")
        return
    if accessor_for(scope, "glob", accessor, allowed=("auto", "file")) is None:
        return
    patterns = _pattern_list(scope, globs)
    admit = _recursion_filter(scope, recursion_callback)
    if patterns is None or admit is False:
        return
    base: str | None = None
    if root is not None:
        base = path_argument(scope, "glob", "root", root)
        if base is None:
            return
        base = os.path.abspath(base)
        if not await call_blocking(os.path.isdir, base):
            scope.error(f"glob(): root {base} is not a directory")
            return
    walk = GlobWalk(
        patterns, base, follow_symlinks=not nosymlink, one_filesystem=bool(one_filesystem),
        admit=admit,
    )
    async for row in stream_blocking(walk.rows()):
        yield row
    if walk.first_unreadable is not None:
        path, reason = walk.first_unreadable
        scope.warn(
            f"glob(): skipped {walk.unreadable_count} unreadable path(s), first {path}: {reason}"
        )


def register(registry: Registry) -> None:
    """Add glob() to the registry."""
    registry.plugin(glob)
