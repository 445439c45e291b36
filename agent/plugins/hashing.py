"""hash(): the MD5, SHA1 and SHA256 digests of a file (or of the content, with accessor data)."""

from __future__ import annotations

import hashlib
from typing import Any

from agent.plugins.accessors import FILE, Accessor, Target, accessor_for
from agent.plugins.arguments import int_argument, os_error_text
from agent.plugins.blocking import call_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

CHUNK_BYTES = 1024 * 1024

DEFAULT_MAX_SIZE = 100 * 1024 * 1024
"""hash() reads at most this many bytes of a file unless the query asks for another size."""

HASH_NAMES = ("MD5", "SHA1", "SHA256")


def hash_file(
    path: Target,
    *,
    accessor: Accessor = FILE,
    names: tuple[str, ...] = HASH_NAMES,
    max_size: int | None = None,
) -> dict[str, str]:
    """Hex digests of the target's first ``max_size`` bytes (all of it when None), under the
    ``names`` asked for (MD5, SHA1, SHA256); raises OSError."""
    digests = {name: hashlib.new(name.lower()) for name in names}
    left = max_size
    with accessor.open(path) as handle:
        while left is None or left > 0:
            chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _hash_names(scope: Scope, hashselect: Any) -> tuple[str, ...] | None:
    if hashselect is None:
        return HASH_NAMES
    wanted = [hashselect] if isinstance(hashselect, str) else hashselect
    if not isinstance(wanted, list | tuple) or not wanted:
        scope.error(f"hash(): hashselect must name MD5, SHA1 or SHA256, not {hashselect!r}")
        return None
    names: list[str] = []
    for item in wanted:
        name = item.strip().upper() if isinstance(item, str) else None
        if name not in HASH_NAMES:
            scope.error(f"hash(): hashselect {item!r} is not one of MD5, SHA1, SHA256")
            return None
        names.append(name)
    return tuple(name for name in HASH_NAMES if name in names)


async def hash_(
    scope: Scope,
    *,
    path: Any,
    accessor: Any = None,
    hashselect: Any = None,
    max_size: Any = None,
) -> dict[str, str] | None:
    """A dict of the file's MD5, SHA1 and SHA256 (hex), or of those ``hashselect`` names; at
    most ``max_size`` bytes (100 MiB by default) are hashed. NULL when it cannot be read."""
    reader = accessor_for(scope, "hash", accessor)
    target = reader.target(scope, "hash", "path", path) if reader else None
    names = _hash_names(scope, hashselect)
    limit = int_argument(scope, "hash", "max_size",
                         max_size if max_size is not None else DEFAULT_MAX_SIZE)
    if reader is None or target is None or names is None or limit is None:
        return None
    try:
        # Hashing a big file takes seconds: keep it off the event loop the other agents share.
        return await call_blocking(
            lambda: hash_file(target, accessor=reader, names=names, max_size=limit)
        )
    except OSError as error:
        scope.error(f"hash(): {reader.describe(target)}: {os_error_text(error)}")
        return None


def register(registry: Registry) -> None:
    """Add hash() to the registry."""
    registry.function(hash_)
