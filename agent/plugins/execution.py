"""execve(): run a program on the client, with the arguments and rows of Velociraptor's execve().

The program runs without a shell (argv is passed as it is), in a session of its own so that
cancelling the query, a time-out or a LIMIT kills it and everything it started. An agent whose
config says ``prevent_execve`` refuses to run anything.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Mapping
from typing import Any

from agent.plugins.arguments import int_argument, path_argument
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

PREVENT_EXECVE_SETTING = "prevent_execve"
"""Registry setting: True when the agent's config forbids execve()."""

DEFAULT_LENGTH = 10240
"""Bytes of output per row when ``length`` is not given (as Velociraptor)."""

_READ_SIZE = 65536


def _argv(scope: Scope, value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        scope.error(f"execve(): argv must be a non-empty list of strings, not {value!r}")
        return None
    argv: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            scope.error(f"execve(): argv items must be strings, not {item!r}")
            return None
        argv.append(str(item))
    if not argv[0]:
        scope.error("execve(): argv[0] (the program) is empty")
        return None
    return argv


def _environment(scope: Scope, value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        scope.error(f"execve(): env must be a dict of names to values, not {value!r}")
        return None
    return {str(name): "" if item is None else str(item) for name, item in value.items()}


def _resolve_program(program: str) -> str:
    # Like Go's exec.Command, find the program on the agent's own PATH, even when env replaces
    # the child's environment with one that has no PATH.
    if os.sep in program:
        return program
    return shutil.which(program) or program


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    kill_group = getattr(os, "killpg", None)  # POSIX: the program's session goes with it
    try:
        if kill_group is not None:
            kill_group(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


class _Splitter:
    """Turns a stream's bytes into row texts: at ``sep`` when given, else in ``length`` chunks."""

    def __init__(self, sep: str | None, length: int) -> None:
        self._sep = sep.encode("utf-8") if sep else None
        self._length = length
        self._buffer = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        pieces: list[bytes] = []
        if self._sep is not None:
            while True:
                at = self._buffer.find(self._sep)
                if at < 0 or at > self._length:
                    break
                pieces.append(bytes(self._buffer[:at]))
                del self._buffer[: at + len(self._sep)]
        while len(self._buffer) >= self._length:
            pieces.append(bytes(self._buffer[: self._length]))
            del self._buffer[: self._length]
        return [self._decoder.decode(piece) for piece in pieces]

    def finish(self) -> list[str]:
        rest = bytes(self._buffer)
        self._buffer.clear()
        text = self._decoder.decode(rest, final=True)
        return [text] if text else []


async def _pump(
    stream: asyncio.StreamReader, splitter: _Splitter, column: str, queue: asyncio.Queue[Any]
) -> None:
    while True:
        data = await stream.read(_READ_SIZE)
        if not data:
            break
        for text in splitter.feed(data):
            await queue.put((column, text))
    for text in splitter.finish():
        await queue.put((column, text))
    await queue.put((column, None))


def _row(stdout: str = "", stderr: str = "", return_code: int = 0, complete: bool = False
         ) -> dict[str, Any]:
    return {"Stdout": stdout, "Stderr": stderr, "ReturnCode": return_code, "Complete": complete}


async def _next_item(scope: Scope, queue: asyncio.Queue[Any]) -> Any:
    context = scope.context
    if context.deadline is None:
        return await queue.get()
    # No output for a while must not keep the query past its deadline: look at it at least
    # once a second.
    while True:
        remaining = max(context.deadline - context.clock(), 0.0)
        try:
            return await asyncio.wait_for(queue.get(), min(remaining + 0.01, 1.0))
        except TimeoutError:
            context.check_deadline()


async def execve(
    scope: Scope,
    *,
    argv: Any,
    sep: Any = None,
    length: Any = None,
    env: Any = None,
    cwd: Any = None,
    secret: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """Run ``argv`` (no shell) and yield its output: rows of Stdout, Stderr, ReturnCode and
    Complete. With ``sep`` each piece of standard output between separators is a row; without,
    output comes in rows of at most ``length`` bytes (10240). A last row holds the ReturnCode
    with Complete true. ``env`` (a dict) is the program's whole environment; ``cwd`` its working
    folder. Refused when the agent's config sets prevent_execve."""
    if scope.registry.setting(PREVENT_EXECVE_SETTING):
        scope.error("execve(): refused: this agent's config sets prevent_execve")
        return
    if secret is not None:
        scope.error("execve(): secret is not supported by this agent (no secrets service)")
        return
    command = _argv(scope, argv)
    if command is None:
        return
    if sep is not None and (not isinstance(sep, str) or not sep):
        scope.error(f"execve(): sep must be a non-empty string, not {sep!r}")
        return
    size = DEFAULT_LENGTH if length is None else int_argument(
        scope, "execve", "length", length, minimum=1)
    if size is None:
        return
    environment = None if env is None else _environment(scope, env)
    if env is not None and environment is None:
        return
    folder = None if cwd is None else path_argument(scope, "execve", "cwd", cwd)
    if cwd is not None and folder is None:
        return

    try:
        process = await asyncio.create_subprocess_exec(
            _resolve_program(command[0]), *command[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            cwd=folder,
            start_new_session=True,
        )
    except OSError as error:
        where = f" in {folder}" if folder else ""
        scope.error(f"execve(): cannot run {command[0]}{where}: {error.strerror or error}")
        return

    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        asyncio.create_task(_pump(process.stdout, _Splitter(sep, size), "Stdout", queue)),
        # Velociraptor splits only standard output at sep; errors come in chunks.
        asyncio.create_task(_pump(process.stderr, _Splitter(None, size), "Stderr", queue)),
    ]
    try:
        open_streams = len(pumps)
        while open_streams:
            column, text = await _next_item(scope, queue)
            if text is None:
                open_streams -= 1
            elif column == "Stdout":
                yield _row(stdout=text)
            else:
                yield _row(stderr=text)
        return_code = await process.wait()
        yield _row(return_code=return_code, complete=True)
    finally:
        # Cancelled, timed out, or stopped by a LIMIT: the program and its children go too.
        _kill_group(process)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()


def register(registry: Registry) -> None:
    """Add execve() to the registry."""
    registry.plugin(execve)
