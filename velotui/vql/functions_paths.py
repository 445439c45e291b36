"""VQL functions on path text: components, base and directory names, joining, path specs and
environment expansion (Velociraptor's names and arguments). Nothing here touches the file
system; bad input is logged and gives NULL."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from velotui.vql.gofmt import go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope


def register(registry: Registry) -> None:
    """Add the path functions to ``registry``."""
    for fn in (basename, dirname, path_join, path_split, relpath, pathspec, expand, environ):
        registry.function(fn)


ENVIRONMENT_SETTING = "environment"
"""The registry setting (a mapping) expand() reads variables from; the process's own
environment when unset. A simulated host sets its own."""

_SEPARATORS = re.compile(r"[\\/]+")
_DRIVE = re.compile(r"^[A-Za-z]:$")
_WINDOWS_TYPES = frozenset({"windows", "ntfs", "registry"})
_WINDOWS_ACCESSORS = frozenset({"ntfs", "lazy_ntfs", "mft", "registry", "reg", "raw_reg"})


def split_components(path: str) -> list[str]:
    """The components of ``path``, split on both / and \\ (as Velociraptor does for paths of
    no stated type), without empty ones."""
    return [part for part in _SEPARATORS.split(path) if part]


def join_components(components: list[str], sep: str) -> str:
    """``components`` joined by ``sep`` under a leading ``sep``, except when the first is a
    drive letter (``C:``); no components give ""."""
    if not components:
        return ""
    joined = sep.join(components)
    return joined if _DRIVE.match(components[0]) else sep + joined


def _separator(sep: Any, path_type: Any) -> str:
    if sep not in (None, ""):
        return go_text(sep)
    if isinstance(path_type, str) and path_type.lower() in _WINDOWS_TYPES:
        return "\\"
    return "/"


def _path_text(path: Any) -> str | None:
    if path is None:
        return None
    if isinstance(path, Mapping) and isinstance(path.get("Path"), str):
        return path["Path"]  # a pathspec() value
    return go_text(path)


def basename(scope: Scope, *, path: Any, sep: Any = None, path_type: Any = None) -> Any:
    """The last component of ``path`` (split on / and \\); NULL when it has none. ``sep`` and
    ``path_type`` are accepted for Velociraptor's signature and do not change the result."""
    text = _path_text(path)
    if text is None:
        return None
    components = split_components(text)
    return components[-1] if components else None


def dirname(scope: Scope, *, path: Any, sep: Any = None, path_type: Any = None) -> Any:
    """``path`` without its last component, joined by ``sep`` (default /, or \\ for a windows
    ``path_type``) under a leading separator unless it starts with a drive letter; NULL when
    the path has no components."""
    text = _path_text(path)
    if text is None:
        return None
    components = split_components(text)
    if not components:
        return None
    return join_components(components[:-1], _separator(sep, path_type))


def path_join(scope: Scope, *, components: Any, sep: Any = None, path_type: Any = None) -> Any:
    """The ``components`` (a list, or one string) joined into one path by ``sep`` (default /,
    or \\ for a windows ``path_type``); each may itself hold separators. NULL components are
    skipped."""
    if components is None:
        return None
    items = components if isinstance(components, list | tuple) else [components]
    parts: list[str] = []
    for item in items:
        text = _path_text(item)
        if text is not None:
            parts.extend(split_components(text))
    return join_components(parts, _separator(sep, path_type))


def path_split(scope: Scope, *, path: Any, path_type: Any = None) -> Any:
    """The components of ``path`` as a list (split on / and \\, empty ones dropped; a list of
    components passes through). ``path_type`` is accepted and does not change the split."""
    if path is None:
        return None
    if isinstance(path, list | tuple):
        return [go_text(part) for part in path]
    text = _path_text(path)
    return split_components(text or "")


def relpath(scope: Scope, *, path: Any, base: Any, sep: Any = None) -> Any:
    """``path`` relative to ``base`` (components compared exactly), joined by ``sep``
    (default /); ``..`` climbs out of ``base`` where the two part."""
    if path is None or base is None:
        return None
    target = split_components(_path_text(path) or "")
    start = split_components(_path_text(base) or "")
    common = 0
    while common < min(len(target), len(start)) and target[common] == start[common]:
        common += 1
    parts = [".."] * (len(start) - common) + target[common:]
    return _separator(sep, None).join(parts) if parts else "."


def _path_type(path_type: Any, accessor: Any, text: str) -> str:
    if isinstance(path_type, str) and path_type:
        return path_type.lower()
    if isinstance(accessor, str) and accessor.lower() in _WINDOWS_ACCESSORS:
        return "windows"
    if "\\" in text or re.match(r"^[A-Za-z]:", text):
        return "windows"
    return "linux"


def pathspec(
    scope: Scope,
    *,
    DelegateAccessor: Any = None,
    DelegatePath: Any = None,
    Delegate: Any = None,
    Path: Any = None,
    parse: Any = None,
    path_type: Any = None,
    accessor: Any = None,
) -> Any:
    """A structured path: a dict with ``Path`` (the path text, separators normalised for its
    type), ``Components``, ``Basename``, ``Dirname``, ``Type`` (linux or windows, from
    ``path_type``, the ``accessor`` or the path itself) and, when given, ``DelegateAccessor``,
    ``DelegatePath`` and ``Delegate`` (another pathspec) for accessors that open a path inside
    another. ``parse`` reads a path, or a pathspec serialized as JSON, from text instead."""
    if parse is not None:
        text = go_text(parse)
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError as error:
                scope.error(f"pathspec(): invalid JSON in parse: {error}")
                return None
            if not isinstance(parsed, dict):
                scope.error("pathspec(): parse must hold a JSON object or a path")
                return None
            DelegateAccessor = parsed.get("DelegateAccessor", DelegateAccessor)
            DelegatePath = parsed.get("DelegatePath", DelegatePath)
            Delegate = parsed.get("Delegate", Delegate)
            Path = parsed.get("Path", Path)
        else:
            Path = text
    if isinstance(Path, list | tuple):
        components = [go_text(part) for part in Path]
        text = "/".join(components)
    else:
        text = "" if Path is None else (_path_text(Path) or "")
        components = split_components(text)
    kind = _path_type(path_type, accessor, text)
    sep = "\\" if kind in _WINDOWS_TYPES else "/"
    result: dict[str, Any] = {}
    if DelegateAccessor is not None:
        result["DelegateAccessor"] = go_text(DelegateAccessor)
    if DelegatePath is not None:
        result["DelegatePath"] = _path_text(DelegatePath)
    if Delegate is not None:
        result["Delegate"] = Delegate
    result.update(
        Path=join_components(components, sep),
        Components=components,
        Basename=components[-1] if components else "",
        Dirname=join_components(components[:-1], sep),
        Type=kind,
    )
    return result


_VARIABLE = re.compile(r"\$(\$|\{([^}]*)\}|([A-Za-z0-9_]+))|%([A-Za-z0-9_()]+)%")


def expand(scope: Scope, *, path: Any) -> Any:
    """``path`` with environment variables replaced: ``$NAME`` and ``${NAME}`` (unset ones
    become empty, as in Go; ``$$`` is a dollar) and Windows' ``%NAME%`` (unset ones stay as
    written, as on Windows). Variables come from the registry's ``environment`` setting, else
    the process's environment."""
    if path is None:
        return None
    environment = scope.registry.setting(ENVIRONMENT_SETTING)
    if not isinstance(environment, Mapping):
        environment = os.environ

    def lookup(found: re.Match[str]) -> str:
        if found.group(1) == "$":
            return "$"
        windows_name = found.group(4)
        if windows_name is not None:
            value = _lookup_variable(environment, windows_name)
            return found.group(0) if value is None else value
        value = _lookup_variable(environment, found.group(2) or found.group(3) or "")
        return value or ""

    return _VARIABLE.sub(lookup, go_text(path))


def environ(scope: Scope, *, var: Any) -> Any:
    """The value of the environment variable ``var`` (from the registry's ``environment``
    setting, else the process's environment), or NULL when it is not set."""
    if var is None:
        return None
    environment = scope.registry.setting(ENVIRONMENT_SETTING)
    if not isinstance(environment, Mapping):
        environment = os.environ
    value = environment.get(go_text(var))
    return None if value is None else go_text(value)


def _lookup_variable(environment: Mapping[str, Any], name: str) -> str | None:
    value = environment.get(name)
    if value is None:
        # Windows names are case-insensitive (%SystemRoot% is SYSTEMROOT).
        lowered = name.lower()
        value = next((v for k, v in environment.items() if k.lower() == lowered), None)
    return None if value is None else go_text(value)
