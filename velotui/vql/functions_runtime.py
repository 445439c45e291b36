"""VQL functions that ask about, or talk to, the engine running the query: log(), version(),
getpid() and rand() (Velociraptor's names and arguments)."""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any

from velotui.vql.gofmt import go_format, go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope


def register(registry: Registry) -> None:
    """Add the runtime functions to ``registry``."""
    for fn in (log, version, getpid, rand):
        registry.function(fn)


_LEVELS = {
    "DEFAULT": "info",
    "INFO": "info",
    "WARN": "warning",
    "WARNING": "warning",
    "ERROR": "error",
    "DEBUG": "debug",
}
_DEFAULT_DEDUP_SECONDS = 60
# Where log() keeps, per query run, when each format string was last emitted. The run's
# aggregate state is shared by all its scopes; this key cannot clash with a call site's.
_LAST_EMITTED = ("log()", "last emitted")


def log(
    scope: Scope, *, message: Any, args: Any = None, level: Any = None, dedup: Any = None
) -> bool:
    """Log ``message`` to the query's log and give TRUE (so it fits in a WHERE clause). With
    ``args`` (one value or a list) the message is a Go format string (%v, %s, %d ...).
    ``level`` is DEFAULT (info), INFO, WARN, ERROR or DEBUG (anything else is DEFAULT). The same
    format string is emitted at most once every ``dedup`` seconds (default 60, also for 0; -1
    emits every time, though the engine still drops an identical message repeated in one
    run)."""
    template = go_text(message)
    if args is None:
        text = template
    else:
        text = go_format(template, list(args) if isinstance(args, list | tuple) else [args])
    # As in Velociraptor, an unknown level is DEFAULT and a dedup of 0 is the default.
    engine_level = _LEVELS.get("" if level is None else go_text(level).upper(), "info")
    window = _DEFAULT_DEDUP_SECONDS if dedup is None or dedup == 0 else dedup
    if isinstance(window, int | float) and not isinstance(window, bool) and window >= 0:
        emitted: dict[str, float] = scope.agg.setdefault(_LAST_EMITTED, {})
        now = time.monotonic()
        last = emitted.get(template)
        if last is not None and now - last < window:
            return True
        emitted[template] = now
    scope.context.log(engine_level, text)
    return True


VERSION_ATTRIBUTE = "vql_version"
"""An implementation may carry this attribute (an int) to tell version() its version; one that
does not is version 1."""


def version(scope: Scope, *, function: Any = None, plugin: Any = None) -> Any:
    """The version of the function or plugin of that name (1 unless its implementation says
    otherwise with a ``vql_version`` attribute), or NULL when there is none: artifacts test
    ``version(plugin="x") > 2`` to choose between old and new ways of calling it."""
    if function is not None:
        found = scope.registry.lookup_function(go_text(function))
    elif plugin is not None:
        found = scope.registry.lookup_plugin(go_text(plugin))
    else:
        scope.error("version(): needs function or plugin")
        return None
    if found is None:
        return None
    number = getattr(found.impl, VERSION_ATTRIBUTE, 1)
    return number if isinstance(number, int) else 1


def getpid(scope: Scope) -> int:
    """The process id of the program running the query (artifacts use it to skip their own
    process)."""
    return os.getpid()


def rand(scope: Scope, *, range: Any = None) -> Any:
    """A random integer from 0 up to, not including, ``range``. Without a positive range,
    0 as in Velociraptor."""
    if isinstance(range, float):
        range = int(range) if math.isfinite(range) else 0
    if not isinstance(range, int) or isinstance(range, bool) or range <= 0:
        if range is not None and not isinstance(range, int):
            scope.error(f"rand(): range must be an integer, not {go_text(range)!r}")
            return None
        return 0
    return random.randrange(range)
