"""Failpoints: named places where a real server can be made to die or wait, for crash tests.

As etcd's gofail or TiKV's fail-rs: ``VELOTUI_FAILPOINTS="name=action;name=action"`` arms them,
where an action is ``exit`` (the process ends at once with ``os._exit(137)``, as a SIGKILL would
leave it: nothing flushed, nothing closed), ``sleep(SECONDS)`` (the task waits there; the rest
of the server carries on), ``hold(PATH)`` (the task waits there until the file PATH exists: the
test releases it by creating the file, so a pause lasts exactly as long as the test needs) or
``off``. ``N*action`` lasts N passes, and ``->`` chains actions:
``20*off->exit`` lets 20 passes by, then exits. Reaching an armed point
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
- ``delete.after_commit``: a hunt's rows are deleted (and its files listed for removal), its
  files not yet removed;
- ``check.before_write``: the foreman is about to record that it checks clients for a hunt (and
  to store their condition checks), nothing written yet.
- ``audit.before_commit``: an operator action's audit record is written in the transaction of
  the action's own writes, not yet committed (reached on the writer thread: ``exit`` or
  ``off`` only, see ``reach_in_writer``);
- ``audit.after_commit``: a transaction holding an audit record (and its action) has committed,
  nobody told yet (on the writer thread too).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass

ENV_VAR = "VELOTUI_FAILPOINTS"
EXIT_STATUS = 137

_TERM = re.compile(r"(?:(\d+)\*)?(off|exit|sleep\(\s*(\d+(?:\.\d+)?)\s*\)|hold\(([^;()]+)\))")
HOLD_POLL = 0.05  # seconds between looks for a held failpoint's release file


@dataclass
class _Step:
    kind: str  # "off", "exit", "sleep" or "hold"
    seconds: float = 0.0
    release: str = ""  # hold: the file whose existence releases the task
    remaining: int | None = None  # passes this step lasts; None: every pass from here on


@dataclass
class _Action:
    """What a failpoint does at each pass: its steps in turn (``20*off->exit``: nothing for
    20 passes, then exit)."""

    steps: list[_Step]

    def next_step(self) -> _Step | None:
        while self.steps:
            step = self.steps[0]
            if step.remaining is None:
                return step
            if step.remaining > 0:
                step.remaining -= 1
                return step
            self.steps.pop(0)
        return None


def parse(text: str) -> dict[str, _Action]:
    """The failpoints armed by ``text`` (the variable's syntax). Raises ValueError naming the
    term that does not parse."""
    actions: dict[str, _Action] = {}
    for term in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, chain = term.partition("=")
        steps = []
        for part in chain.split("->"):
            match = _TERM.fullmatch(part.strip())
            if not sep or not name.strip() or match is None:
                raise ValueError(f"{ENV_VAR}: {term!r} is not name=[N*]exit, name=[N*]off,"
                                 " name=[N*]sleep(SECONDS) or name=[N*]hold(PATH), chained"
                                 " with ->")
            count, kind, seconds, release = match.groups()
            steps.append(_Step(kind.partition("(")[0], seconds=float(seconds or 0),
                               remaining=int(count) if count else None,
                               release=(release or "").strip()))
        actions[name.strip()] = _Action(steps)
    return actions


class Barrier:
    """A failpoint held for a test in the same process: the task that reaches it waits there
    until the test releases it, and the test can wait until it is reached. No clock involved."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._released = asyncio.Event()
        self.passes = 0

    def release(self) -> None:
        self._released.set()

    async def _pass(self) -> None:
        self.passes += 1
        self.reached.set()
        await self._released.wait()


_armed: dict[str, _Action | Barrier] = dict(parse(os.environ.get(ENV_VAR, "")))


def hold(name: str) -> Barrier:
    """Hold failpoint ``name`` in this process until the returned barrier is released."""
    barrier = _armed[name] = Barrier()
    return barrier


def disarm() -> None:
    """Forget every failpoint armed in this process (releasing any barrier)."""
    for action in _armed.values():
        if isinstance(action, Barrier):
            action.release()
    _armed.clear()


async def reach(name: str) -> None:
    """The server passes failpoint ``name``: act if it is armed."""
    if not _armed:
        return
    action = _armed.get(name)
    if isinstance(action, Barrier):
        await action._pass()
        return
    step = action.next_step() if action is not None else None
    if step is None or step.kind == "off":
        return
    sys.stderr.write(f"velotui failpoint {name}: {step.kind}\n")
    sys.stderr.flush()
    if step.kind == "exit":
        os._exit(EXIT_STATUS)
    if step.kind == "hold":
        while not os.path.exists(step.release):
            await asyncio.sleep(HOLD_POLL)
    else:
        await asyncio.sleep(step.seconds)
    sys.stderr.write(f"velotui failpoint {name}: resumed\n")
    sys.stderr.flush()


def reach_in_writer(name: str) -> None:
    """The store's writer thread passes failpoint ``name`` (inside or just after a
    transaction, where nothing may await): only ``exit`` acts; a barrier, sleep or hold is
    not for this thread and is passed by."""
    if not _armed:
        return
    action = _armed.get(name)
    if action is None or isinstance(action, Barrier):
        return
    step = action.next_step()
    if step is None or step.kind != "exit":
        return
    sys.stderr.write(f"velotui failpoint {name}: exit\n")
    sys.stderr.flush()
    os._exit(EXIT_STATUS)
