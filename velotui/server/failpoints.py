"""Failpoints: named places where a real server can be made to die or wait, for crash tests.

As etcd's gofail or TiKV's fail-rs: ``VELOTUI_FAILPOINTS="name=action;name=action"`` arms them,
where an action is ``exit`` (the process ends at once with ``os._exit(137)``, as a SIGKILL would
leave it: nothing flushed, nothing closed) or ``sleep(SECONDS)`` (the task waits there; the rest
of the server carries on). ``N*action`` acts only at the first N passes. Reaching an armed point
writes one line to standard error first, so a test can wait for it instead of guessing. Unset,
a failpoint costs one dictionary test.

The points (see where ``reach`` is called):
- ``recruit.before_write``: the recruiter has chosen the clients to recruit, nothing written;
- ``stop.after_commit``: a stop is durable, nothing else done yet (memory, agents);
- ``cancel.before_commit``: a flow's cancel is decided, not yet committed;
- ``ingest.before_commit`` / ``ingest.after_commit``: an agent's message received / committed,
  not yet acknowledged;
- ``finish.after_commit``: a flow's end (and its client's queue move) is committed, memory not
  yet updated;
- ``condition.after_judge``: a server-side condition judged, its outcome not yet stored.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass

ENV_VAR = "VELOTUI_FAILPOINTS"
EXIT_STATUS = 137

_TERM = re.compile(r"(?:(\d+)\*)?(exit|sleep\(\s*(\d+(?:\.\d+)?)\s*\))")


@dataclass
class _Action:
    kind: str  # "exit" or "sleep"
    seconds: float = 0.0
    remaining: int | None = None  # passes left that act; None: every pass


def parse(text: str) -> dict[str, _Action]:
    """The failpoints armed by ``text`` (the variable's syntax). Raises ValueError naming the
    term that does not parse."""
    actions: dict[str, _Action] = {}
    for term in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, action = term.partition("=")
        match = _TERM.fullmatch(action.strip())
        if not sep or not name.strip() or match is None:
            raise ValueError(f"{ENV_VAR}: {term!r} is not name=exit or name=sleep(SECONDS)")
        count, kind, seconds = match.groups()
        actions[name.strip()] = _Action(
            "exit" if kind == "exit" else "sleep", float(seconds or 0),
            int(count) if count else None,
        )
    return actions


_armed: dict[str, _Action] = parse(os.environ.get(ENV_VAR, ""))


def arm(text: str) -> None:
    """Arm failpoints in this process (tests of one process; others use the variable)."""
    _armed.clear()
    _armed.update(parse(text))


async def reach(name: str) -> None:
    """The server passes failpoint ``name``: act if it is armed."""
    if not _armed:
        return
    action = _armed.get(name)
    if action is None or action.remaining == 0:
        return
    if action.remaining is not None:
        action.remaining -= 1
    sys.stderr.write(f"velotui failpoint {name}: {action.kind}\n")
    sys.stderr.flush()
    if action.kind == "exit":
        os._exit(EXIT_STATUS)
    await asyncio.sleep(action.seconds)
    sys.stderr.write(f"velotui failpoint {name}: resumed\n")
    sys.stderr.flush()
