"""The embedded server's own event loop, on its own thread, and the console's way to it.

The console's event loop draws frames and reads keys; the server's (agent connections, group
commits, VQL) runs on ``ServerThread``. The console reaches the server only through
``ThreadedService``: the same operator API methods as ``Service`` (and ``RemoteService``), each
call run on the server's loop while the console's loop goes on with other work. So a busy server
delays an answer, never a frame.

Streaming methods come back through a channel that holds at most ``STREAM_WINDOW`` events the
console has not taken yet: a console that falls behind (an export written to a slow disk) holds
the server's generator at its next event instead of letting events pile up. Leaving a stream
early (``break``, ``aclose``, a cancelled task) closes the generator on the server's loop; a
stream the server ends with an error raises that error in the console.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from velotui.server.errors import ServiceError
from velotui.server.operator_api import METHODS
from velotui.server.service import Service

T = TypeVar("T")

STREAM_WINDOW = 8
"""Events of one stream that may wait for the console to take them."""

STOPPED = "the embedded server has stopped"


class ServerThread:
    """An event loop running on a thread of its own until ``stop``.

    ``run`` awaits, from another loop, a coroutine run on this one. ``stop`` ends the loop the
    way ``asyncio.run`` does (what still runs is cancelled and awaited, asynchronous generators
    closed, the default executor shut down) and waits, without blocking its caller's loop, for
    the thread to end. Work submitted after that, or never started by then, ends in
    ServiceError.
    """

    def __init__(self, name: str = "velotui-server") -> None:
        self.loop = asyncio.new_event_loop()
        # A daemon: a console that dies without stopping it must not be kept alive by it.
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start(self) -> None:
        self.thread.start()

    @property
    def running(self) -> bool:
        """True until the loop has begun to shut down."""
        with self._lock:
            return not self._closed and self.thread.is_alive()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on this loop; its future, usable from any thread. Raises
        ServiceError (and closes the coroutine) once the loop is shutting down."""
        with self._lock:
            if self._closed:
                coroutine.close()
                raise ServiceError(STOPPED)
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of ``coroutine`` run on this loop, awaited on the caller's loop.

        Its exceptions are raised here as they were raised there. Cancelling the caller cancels
        the coroutine; the coroutine cancelled there (the loop stopping) raises ServiceError
        here, not CancelledError, so that the caller is not taken for cancelled itself."""
        future = self.submit(coroutine)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                future.cancel()
                raise
            raise ServiceError(STOPPED) from None

    async def stop(self) -> None:
        """Stop the loop (cancelling what still runs there) and wait for the thread to end."""
        if not self.thread.is_alive() and not self._ended.done():
            return  # never started
        with contextlib.suppress(RuntimeError):  # it has closed already
            self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.wrap_future(self._ended)
        self.thread.join()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                with self._lock:
                    self._closed = True
                self._finish_tasks()
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                with self._lock:
                    never_started = list(self._in_flight)
                for future in never_started:
                    future.cancel()
                asyncio.set_event_loop(None)
                self.loop.close()
                self._ended.set_result(None)

    def _finish_tasks(self) -> None:
        # Cancelling a task may start others (cleanup that schedules work): until none is left.
        while tasks := asyncio.all_tasks(self.loop):
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class ThreadedService:
    """The operator API of a server on a ``ServerThread``, for code on another loop: the same
    methods, called with keyword arguments, as ``Service`` and ``RemoteService``.

    ``await api.list_hunts()`` runs ``Service.list_hunts`` on the server's loop and gives its
    result; ``async for event in api.watch_hunts()`` follows a streaming method. A refusal is
    the server's ServiceError, with its message. Results are the plain values the service
    builds for each call, so they are the caller's to keep.
    """

    def __init__(self, service: Service, server_thread: ServerThread) -> None:
        self._service = service
        self._thread = server_thread

    async def call(self, method: str, **params: Any) -> Any:
        """The result of a plain method, computed on the server's loop."""
        return await self._thread.run(getattr(self._service, method)(**params))

    async def stream(self, method: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """The events of a streaming method, produced on the server's loop."""
        channel = _Channel(self._thread.loop)
        future = self._thread.submit(channel.pump(getattr(self._service, method)(**params)))
        try:
            while True:
                kind, value = await channel.take()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            future.cancel()  # the reader left early: close the generator over there

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in METHODS:
            raise AttributeError(name)
        if METHODS[name]:
            return lambda **params: self.stream(name, **params)

        async def call(**params: Any) -> Any:
            return await self.call(name, **params)

        return call


class _Channel:
    """Events from a generator on the server's loop to one reader on another loop; at most
    STREAM_WINDOW of them given and not yet taken."""

    def __init__(self, server_loop: asyncio.AbstractEventLoop) -> None:
        self._server_loop = server_loop
        self._reader_loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._room = asyncio.Semaphore(STREAM_WINDOW)  # only ever used on the server's loop

    async def pump(self, events: AsyncIterator[dict[str, Any]]) -> None:
        """On the server's loop: hand each event over once there is room for it."""
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    await self._room.acquire()
                    self._give("event", event)
        except asyncio.CancelledError:
            self._give("error", ServiceError(STOPPED))  # read only if the reader is still there
            raise
        except Exception as error:
            self._give("error", error)
        else:
            self._give("end", None)

    def _give(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the reader's loop has closed: nobody reads
            self._reader_loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))

    async def take(self) -> tuple[str, Any]:
        """On the reader's loop: the next (kind, value); kind is event, error or end."""
        item = await self._items.get()
        if item[0] == "event":
            with contextlib.suppress(RuntimeError):  # the server's loop has closed
                self._server_loop.call_soon_threadsafe(self._room.release)
        return item
