"""The embedded server on its own thread: the console's loop is never the server's, calls and
streams cross between the two with their errors and their cancellations, and quitting leaves
nothing running.

Races are held with threading events that the test releases, never with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.console_driver import console, ready, until
from tests.console_seed import CLIENTS, HUNTS, seed
from velotui.app import VelotuiApp
from velotui.screens.clients import ClientsScreen
from velotui.screens.help import HelpScreen
from velotui.screens.hunts import HuntsScreen
from velotui.server.datastore import Datastore
from velotui.server.errors import ServiceError
from velotui.server_link import EmbeddedLink
from velotui.server_thread import STOPPED, STREAM_WINDOW, ServerThread, ThreadedService

SIZE = (100, 32)
HOLD_LIMIT = 120.0


class Hold:
    """Blocks an event loop from inside (a call scheduled on it that waits) until ``release``.
    ``held`` is set once the loop is blocked, ``freed`` once it goes on. The wait gives up after
    HOLD_LIMIT only so that a loop shared with the test cannot hang it: ``freed`` then says so."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.freed = threading.Event()
        loop.call_soon_threadsafe(self._block)

    def _block(self) -> None:
        self.held.set()
        self.release.wait(HOLD_LIMIT)
        self.freed.set()


async def wait_event(event: threading.Event) -> None:
    """Wait for a threading event without blocking this loop."""
    assert await asyncio.to_thread(event.wait, 30), "the event was never set"


# The console with its embedded server --------------------------------------------------------


async def test_keys_and_frames_go_on_while_the_servers_loop_is_held(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hold = Hold(app.link.server_thread.loop)
        try:
            await wait_event(hold.held)
            answer = asyncio.create_task(app.api.list_hunts())

            # Keys are handled and new screens drawn while the server cannot run at all.
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            drawn = threading.Event()
            app.screen.screen_layout_refresh_signal.subscribe(app, lambda _: drawn.set())
            app.screen.refresh(layout=True)
            await until(pilot, drawn.is_set, 10, "a frame of the help screen")
            await pilot.press("escape")
            await pilot.press("c")
            assert isinstance(app.screen, ClientsScreen)  # its table waits for the server
            table = app.screen.query_one("#clients")
            assert table.row_count == 0
            assert not answer.done() and not hold.freed.is_set()
        finally:
            hold.release.set()

        # Once the server's loop goes on, what was asked meanwhile is answered.
        assert sorted(hunt["hunt_id"] for hunt in await answer) == sorted(h[0] for h in HUNTS)
        await until(pilot, lambda: table.row_count == len(CLIENTS), 10, "the clients")


async def test_quitting_stops_the_server_its_fleet_and_its_thread(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    threads_before = set(threading.enumerate())
    app = console(datastore, demo=2)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.sub_title.startswith("2 of 2"), 90, "the demo fleet")
        server_thread = app.link.server_thread.thread
        fleet = list(app.link.fleet)
        assert server_thread.is_alive() and server_thread is not threading.current_thread()
        assert Datastore.open(datastore).read_server_address() is not None
        await pilot.press("q")
    assert app.return_code == 0
    assert not server_thread.is_alive()
    assert app.link.server_thread is None and app.link.server is None
    assert fleet and all(process.poll() is not None for process in fleet)
    assert Datastore.open(datastore).read_server_address() is None  # the server stopped
    left = [thread for thread in set(threading.enumerate()) - threads_before
            if not thread.daemon]
    assert left == [], left


async def test_a_console_that_cannot_start_says_why_and_leaves_nothing_running(
    tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    threads_before = set(threading.enumerate())
    app = VelotuiApp(EmbeddedLink(datastore_path=tmp_path / "datastore",
                                  listen=f"127.0.0.1:{taken.getsockname()[1]}"))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.failure is not None, 30, "the failure")
    finally:
        taken.close()
    assert app.failure is not None and app.failure.startswith("velotui: cannot start: ")
    assert "address already in use" in app.failure
    assert app.return_value == 1
    assert app.link.server_thread is None
    assert set(threading.enumerate()) - threads_before == set()  # the store's threads too


async def test_a_refusal_comes_back_with_the_servers_message(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        with pytest.raises(ServiceError, match=r"^no hunt 'H\.0000000000000' \(see: velotui"):
            await app.api.get_hunt(hunt_id="H.0000000000000")
        with pytest.raises(ServiceError, match=r"^hunt ID must look like"):
            async for _event in app.api.export_hunt(hunt_id="nonsense"):
                pass
        assert isinstance(app.screen, HuntsScreen)


# The bridge, with generators of the test's own on a server thread ------------------------------


class Producer:
    """Operator-API-shaped methods recording what happens on the server's side."""

    def __init__(self) -> None:
        self.produced = 0
        self.threads: set[str] = set()
        self.closed = threading.Event()
        self.cancelled = threading.Event()
        self.entered = threading.Event()

    async def numbers(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                self.threads.add(threading.current_thread().name)
                self.produced += 1
                yield {"event": "number", "n": self.produced}
        finally:
            self.closed.set()

    async def refuse_after(self, count: int) -> AsyncIterator[dict[str, Any]]:
        for n in range(count):
            yield {"event": "number", "n": n}
        raise ServiceError("refused after a while")

    async def wait_forever(self) -> None:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@contextlib.asynccontextmanager
async def bridged() -> AsyncIterator[tuple[ThreadedService, Producer, ServerThread]]:
    server_thread = ServerThread("test-server")
    server_thread.start()
    producer = Producer()
    try:
        yield ThreadedService(producer, server_thread), producer, server_thread  # type: ignore[arg-type]
    finally:
        await server_thread.stop()


async def next_event_on_server(server_thread: ServerThread) -> None:
    """Let the server's loop run everything scheduled on it before now."""
    await server_thread.run(asyncio.sleep(0))


async def test_a_stream_runs_on_the_server_thread_and_waits_for_its_reader() -> None:
    async with bridged() as (api, producer, server_thread):
        events = api.stream("numbers")
        assert (await anext(events))["n"] == 1
        await next_event_on_server(server_thread)
        # The reader took one: the window holds the next ones, and one more waits for room.
        assert producer.produced == 1 + STREAM_WINDOW + 1
        for expected in range(2, 5):
            assert (await anext(events))["n"] == expected
        await next_event_on_server(server_thread)
        assert producer.produced == 4 + STREAM_WINDOW + 1
        assert producer.threads == {"test-server"}

        await events.aclose()  # the reader leaves: the generator is closed over there
        await wait_event(producer.closed)


async def test_an_error_ends_the_stream_after_its_events() -> None:
    async with bridged() as (api, _producer, _server_thread):
        received = []
        with pytest.raises(ServiceError, match=r"^refused after a while$"):
            async for event in api.stream("refuse_after", count=3):
                received.append(event["n"])
        assert received == [0, 1, 2]


async def test_a_cancelled_caller_cancels_the_call_on_the_server() -> None:
    async with bridged() as (api, producer, _server_thread):
        call = asyncio.create_task(api.call("wait_forever"))
        await wait_event(producer.entered)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await wait_event(producer.cancelled)


async def test_stopping_the_server_ends_calls_and_streams_with_a_refusal() -> None:
    async with bridged() as (api, producer, server_thread):
        call = asyncio.create_task(api.call("wait_forever"))
        events = api.stream("numbers")
        await anext(events)
        await wait_event(producer.entered)
        await server_thread.stop()
        with pytest.raises(ServiceError, match=f"^{STOPPED}$"):
            await call
        with pytest.raises(ServiceError, match=f"^{STOPPED}$"):
            async for _event in events:
                pass
        with pytest.raises(ServiceError, match=f"^{STOPPED}$"):
            await api.call("wait_forever")
        assert not server_thread.thread.is_alive()
