"""One agent's connection to its server: connect, prove its key, serve flows, reconnect.

The session outlives its connections. Flows keep running while the connection is down, their
messages wait in the ``Outbox`` on disk (until it is full, see ``agent.outbox``), and after the
next ``Welcome`` everything unacknowledged is sent again, in order, before anything new.

It also outlives the agent's process: on start it takes back from the outbox the flows that were
running when the agent stopped or was killed, reports them in ``Hello.running_flows`` (with every
flow that still has unacknowledged messages), resends what the server did not acknowledge and
continues each unfinished flow where it had got to (see ``agent.flow_runner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from agent.config import AgentConfig
from agent.flow_progress import FlowProgress
from agent.flow_runner import FlowRunner
from agent.frame_trace import FrameTrace
from agent.outbox import Outbox
from agent.outbox_file import StoredFlow
from agent.plugins import client_registry
from agent.plugins.info import host_info
from agent.reconnect import ConnectionOutcome, ReconnectSchedule
from agent.state import AgentState
from velotui.vql import to_json_value
from velotui.wire.protocol import (
    MAX_FRAME_BYTES,
    MAX_TEXT,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    Cancel,
    Challenge,
    CheckIn,
    CheckNow,
    CloseCode,
    FlowRequest,
    Go,
    Hello,
    HuntCheckpoint,
    Message,
    ProtocolError,
    Status,
    Welcome,
    decode,
    encode,
    retry_hint,
)
from velotui.wire.tls import pinned_client_ssl_context

HANDSHAKE_TIMEOUT = 30.0
OPEN_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0
MAX_HELLO_FLOWS = 1024
MAX_HELLO_LABELS = 256

log = logging.getLogger(__name__)

_MessageType = TypeVar("_MessageType", bound=Message)


@functools.cache
def agent_version() -> str:
    """The installed velotui version, sent in Hello for the operator's information."""
    try:
        return metadata.version("velotui")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def close_code_text(code: int | None) -> str:
    """A close code with its name, like ``4003 AUTH_FAILED``."""
    if code is None:
        return "no close code"
    try:
        return f"{code} {CloseCode(code).name}"
    except ValueError:
        return str(code)


class AgentSession:
    """One agent (identity, state, outbox, flows) and its connection to the server."""

    def __init__(
        self,
        config: AgentConfig,
        state: AgentState,
        *,
        facts: Mapping[str, Any] | None = None,
        name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        outbox: Outbox | None = None,
        rng: random.Random | None = None,
        frame_trace: FrameTrace | None = None,
    ) -> None:
        """Without ``outbox``, opens the one in the state folder (blocking). Raises ValueError
        when the config's CA is not usable, OSError when the outbox cannot be opened."""
        self.config = config
        self.state = state
        self.frame_trace = frame_trace
        self.facts = dict(facts) if facts else None
        self.name = name or state.identity.client_id
        self.outbox = (
            outbox
            if outbox is not None
            else Outbox.open(state.outbox_file, config.outbox_max_bytes)
        )
        self.registry = client_registry(labels=config.labels, facts=self.facts,
                                        prevent_execve=config.prevent_execve,
                                        client_id=state.identity.client_id)
        # The labels the server is told are the ones config.Labels shows a query.
        self.labels: list[str] = list(self.registry.variables()["config"]["Labels"])
        self._ssl_context = ssl_context or pinned_client_ssl_context(config.ca_pem)
        self._rng = rng or random.Random()
        # Which server URL to try next and when (failover between frontends, with backoff).
        self.schedule = ReconnectSchedule(config.connect_urls, config.max_backoff, self._rng)
        self._flows: dict[str, FlowRunner] = {}
        # Go-aheads (their queries) for held hunt flows that arrived before the flow was resumed
        # after a restart.
        self._go_ahead: dict[str, str] = {}
        self._flow_tasks: set[asyncio.Task[Any]] = set()
        self._check_in_now = asyncio.Event()
        # The last problem met at each server URL: the same one again is logged quietly.
        self._last_problems: dict[str, str] = {}
        self.log = _AgentLog(log, self.name)

    # The reconnect loop ----------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Continue the flows the outbox kept, then stay connected until cancelled: after each
        failed or lost connection, move on to the next server URL and connect again after a
        backoff (see ``agent.reconnect``). Then stop every flow (the outbox keeps them) and
        close the outbox."""
        try:
            await self.resume_flows()
            urls = self.schedule.rotation.order
            if len(urls) > 1:
                self.log.info("%d servers; trying %s first", len(urls), self.schedule.url)
            while True:
                outcome = await self.connect_once()
                attempt = self.schedule.after(outcome)
                self.log.info("reconnecting to %s in %.1f s", attempt.url, attempt.delay)
                await asyncio.sleep(attempt.delay)
        finally:
            await self._stop_flows()
            await self.outbox.close()

    async def connect_once(self) -> ConnectionOutcome:
        """Connect to the schedule's current server URL, authenticate and serve until the
        connection ends; say how it ended.

        Connection failures are logged and reported, never raised; cancellation closes the
        connection with GOING_AWAY and propagates.
        """
        url = self.schedule.url
        outcome = ConnectionOutcome(url=url)
        try:
            async with connect(
                url,
                ssl=self._ssl_context,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                proxy=None,  # the config names the server; no proxy from the environment
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                user_agent_header=f"velotui-agent/{agent_version()}",
            ) as connection:
                await self._serve(connection, outcome)
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                outcome.problem = f"the connection to {url} was lost"
            else:
                outcome.close_code = closed.rcvd.code
                if closed.rcvd.code == CloseCode.TRY_AGAIN_LATER:
                    outcome.retry_hint = retry_hint(closed.rcvd.reason)
                outcome.problem = (
                    f"the server at {url} closed the connection"
                    f" ({close_code_text(closed.rcvd.code)}"
                    + (f": {closed.rcvd.reason})" if closed.rcvd.reason else ")")
                )
        except ProtocolError as error:
            outcome.problem = f"the server at {url} broke the protocol: {error.reason}"
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
            outcome.problem = f"cannot connect to {url}: {_describe(error)}"
        except Exception:
            # A bug must not end the agent for good: log it in full and try again later.
            self.log.exception("the connection failed unexpectedly")
            outcome.problem = f"the connection to {url} failed unexpectedly"
        self._report(outcome)
        return outcome

    def _report(self, outcome: ConnectionOutcome) -> None:
        if not outcome.problem:
            return
        if outcome.close_code == CloseCode.AUTH_FAILED:
            self.log.error("authentication refused: %s", outcome.problem)
        elif outcome.close_code == CloseCode.REPLACED:
            self.log.error(
                "%s; is another agent running with the state folder %s?",
                outcome.problem,
                self.state.folder,
            )
        elif outcome.problem != self._last_problems.get(outcome.url) or outcome.authenticated:
            self.log.warning("%s", outcome.problem)
        else:
            # The same failure again and again: once at warning level is enough.
            self.log.info("%s", outcome.problem)
        self._last_problems[outcome.url] = outcome.problem

    async def _serve(self, connection: ClientConnection, outcome: ConnectionOutcome) -> None:
        try:
            try:
                welcome = await self._handshake(connection)
            except TimeoutError:
                raise ProtocolError("no answer to the handshake") from None
            outcome.authenticated = True
            self._last_problems.clear()
            self.outbox.server_connected = True
            started = time.monotonic()
            self.log.info(
                "connected to %s as %s%s",
                outcome.url,
                welcome.client_id,
                " (newly enrolled)" if welcome.enrolled else "",
            )
            try:
                await self._exchange(connection)
            finally:
                self.outbox.server_connected = False
                outcome.session_seconds = time.monotonic() - started
        except ProtocolError as error:
            await connection.close(error.code, error.reason)
            raise
        except asyncio.CancelledError:
            await connection.close(CloseCode.GOING_AWAY, "agent stopping")
            raise

    async def _handshake(self, connection: ClientConnection) -> Welcome:
        facts = await asyncio.to_thread(host_info, self.facts)
        identity = self.state.identity
        hello = Hello(
            version=PROTOCOL_VERSION,
            public_key=identity.public_key_bytes,
            enrolment_secret=self.config.enrolment_secret,
            facts=to_json_value(facts),
            labels=[label[:MAX_TEXT] for label in self.labels[:MAX_HELLO_LABELS]],
            last_hunt_timestamp=self.state.last_hunt_timestamp,
            running_flows=self.open_flow_ids()[:MAX_HELLO_FLOWS],
            agent_version=agent_version(),
        )
        await connection.send(encode(hello))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            challenge = await self._receive(connection, Challenge)
            await connection.send(encode(Auth(signature=identity.sign(challenge.nonce))))
            welcome = await self._receive(connection, Welcome)
        if welcome.client_id != identity.client_id:
            self.log.warning(
                "the server calls this agent %s, its key says %s",
                welcome.client_id,
                identity.client_id,
            )
        return welcome

    async def _exchange(self, connection: ClientConnection) -> None:
        """Run the writer, the reader and the check-ins until one of them ends the connection."""
        resent = asyncio.Event()
        tasks = {
            asyncio.create_task(self._write(connection, resent), name=f"{self.name} writer"),
            asyncio.create_task(self._read(connection), name=f"{self.name} reader"),
            asyncio.create_task(self._check_in(connection, resent), name=f"{self.name} check-in"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error

    async def _write(self, connection: ClientConnection, resent: asyncio.Event) -> None:
        # What the last connection (or the last run of the agent) left unacknowledged goes
        # first, in the order it was made.
        for entry in self.outbox.rewind():
            frame = await self.outbox.read_frame(entry)
            if frame is not None:
                await connection.send(frame)
        resent.set()
        while True:
            entry = await self.outbox.next_unsent()
            frame = await self.outbox.read_frame(entry)
            if frame is not None:
                await connection.send(frame)

    async def _check_in(self, connection: ClientConnection, resent: asyncio.Event) -> None:
        await resent.wait()
        while True:
            self._check_in_now.clear()
            check_in = CheckIn(last_hunt_timestamp=self.state.last_hunt_timestamp)
            await connection.send(encode(check_in))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval):
                    await self._check_in_now.wait()

    def _trace(self, message: Message) -> None:
        if self.frame_trace is not None:
            self.frame_trace.record(self.state.identity.client_id, message)

    async def _receive(self, connection: ClientConnection, expected: type[_MessageType]
                       ) -> _MessageType:
        return await _receive(connection, expected, self._trace)

    async def _read(self, connection: ClientConnection) -> None:
        while True:
            message = decode(await connection.recv(), "server")
            self._trace(message)
            await self.handle_message(message)

    async def handle_message(self, message: Message) -> None:
        """Act on one message from the server after the handshake.

        Raises ProtocolError for a message that has no place there (a challenge or welcome).
        """
        if isinstance(message, Ack):
            self.outbox.ack(message.flow_id, message.seq)
        elif isinstance(message, FlowRequest):
            self.start_flow(message)
        elif isinstance(message, Go):
            self.outbox.ack(message.flow_id, message.seq)
            runner = self._flows.get(message.flow_id)
            if runner is not None:
                runner.go(message.run, message.query)
            elif not message.run:
                self.outbox.drop_flow(message.flow_id)
            else:  # a flow still to be resumed after a restart: it finds its go-ahead here
                self._go_ahead[message.flow_id] = message.query
        elif isinstance(message, Cancel):
            runner = self._flows.get(message.flow_id)
            if runner is not None:
                self.log.info("flow %s cancelled", message.flow_id)
                runner.cancel(message.reason)
        elif isinstance(message, CheckNow):
            self._check_in_now.set()
        elif isinstance(message, HuntCheckpoint):
            await self._record_checkpoint(message.last_hunt_timestamp)
        else:
            raise ProtocolError(f"unexpected {message.TYPE} after the handshake")

    async def _record_checkpoint(self, timestamp: int) -> None:
        try:
            # It fsyncs: off the event loop, which a thousand simulated agents share.
            await asyncio.to_thread(self.state.record_hunt_checkpoint, timestamp)
        except OSError as error:
            self.log.error("cannot record the hunt checkpoint: %s", error)

    # Flows -----------------------------------------------------------------------------------

    def start_flow(self, request: FlowRequest) -> bool:
        """Start running ``request`` unless this flow is running or still unacknowledged here;
        True when it was started."""
        if request.flow_id in self._flows or self.outbox.knows(request.flow_id):
            # A repeated request (after a reconnect) must not run the flow twice.
            self.log.debug("flow %s is already here", request.flow_id)
            return False
        self._run(FlowRunner(request, self.outbox, self.registry))
        self.log.info("flow %s started", request.flow_id)
        return True

    async def resume_flows(self) -> int:
        """Continue every flow the outbox kept unfinished (the agent stopped or was killed while
        running it); return how many. A flow that cannot be continued ends in error."""
        resumed = 0
        for stored in self.outbox.flows_to_resume():
            if stored.flow_id in self._flows:
                continue
            try:
                request = decode(stored.request or b"", "server")
                if not isinstance(request, FlowRequest) or request.flow_id != stored.flow_id:
                    raise ValueError("not this flow's request")
                progress = FlowProgress.from_records(stored.progress)
            except (ProtocolError, ValueError) as error:
                await self._end_unresumable(stored, str(error))
                continue
            self._run(FlowRunner(request, self.outbox, self.registry, progress))
            self.log.info(
                "flow %s continues after a restart (%d rows sent before)",
                stored.flow_id,
                progress.rows_sent,
            )
            resumed += 1
        return resumed

    async def _end_unresumable(self, stored: StoredFlow, problem: str) -> None:
        self.log.error("flow %s cannot be continued: %s", stored.flow_id, problem)
        error = f"the agent restarted and cannot continue the flow: {problem}"[:MAX_TEXT]
        await self.outbox.put(
            stored.flow_id,
            lambda seq: Status(flow_id=stored.flow_id, seq=seq, state="error", error=error),
        )

    def _run(self, runner: FlowRunner) -> None:
        flow_id = runner.flow_id
        self._flows[flow_id] = runner
        query = self._go_ahead.pop(flow_id, None)
        if query is not None:
            runner.go(True, query)
        task = asyncio.create_task(runner.run(), name=f"flow {flow_id}")
        self._flow_tasks.add(task)
        task.add_done_callback(lambda done: self._flow_ended(flow_id, done))

    def _flow_ended(self, flow_id: str, task: asyncio.Task[Any]) -> None:
        self._flow_tasks.discard(task)
        self._flows.pop(flow_id, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.log.error("flow %s failed", flow_id, exc_info=error)
        else:
            status = task.result()
            if status is None:  # a held hunt flow the server ended at its condition
                self.outbox.drop_flow(flow_id)
                self.log.info("flow %s: its condition did not match", flow_id)
            else:
                self.log.info("flow %s %s (%d rows)", flow_id, status.state, status.rows)

    def open_flow_ids(self) -> list[str]:
        """Flows running here or with messages the server has not acknowledged."""
        return list(dict.fromkeys([*self._flows, *self.outbox.flow_ids()]))

    async def _stop_flows(self) -> None:
        tasks = list(self._flow_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _receive(connection: ClientConnection, expected: type[_MessageType],
                   trace: Any = None) -> _MessageType:
    message = decode(await connection.recv(), "server")
    if trace is not None:
        trace(message)
    if not isinstance(message, expected):
        raise ProtocolError(f"expected {expected.TYPE}, got {message.TYPE}")
    return message


class _AgentLog(logging.LoggerAdapter):
    """Prefixes each line with the agent's name: with --simulate, many agents share one log."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.extra}: {msg}", kwargs


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({error.verify_message})"
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or error.__class__.__name__
    return text
