"""The velotui server: one TLS websocket listener for agents (``/agent``) and operators (``/api``),
the store, the client directory and the flows. ``velotui serve`` runs it alone; the console embeds
it in its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import time

import websockets
from websockets.asyncio.server import Server as WebsocketServer
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from velotui.runtime import release_free_memory, tune_for_many_connections
from velotui.server.artifact_library import ServerLibrary
from velotui.server.audit import AuditLog
from velotui.server.clients import ClientDirectory
from velotui.server.data import Database
from velotui.server.datastore import Datastore, checked_database_url
from velotui.server.flows import FlowManager
from velotui.server.foreman import Foreman
from velotui.server.hunt_manager import HuntManager
from velotui.server.hunt_rows import MatchCache
from velotui.server.operator_api import serve_operator
from velotui.server.operators import Operator, OperatorDirectory, token_hash
from velotui.server.service import Service
from velotui.server.sessions import (
    HANDSHAKE_QUEUED_FRAMES,
    AgentGate,
    AgentSession,
    allow_full_frames,
)
from velotui.server.settings import ServerSettings
from velotui.server.tls import server_ssl_context
from velotui.server.upload_store import FolderUploads, UploadStore
from velotui.vql import check
from velotui.wire import protocol
from velotui.wire.protocol import CloseCode

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8443"
TRIM_AFTER_CONNECTIONS = 100
TRIM_CHECK_INTERVAL = 1.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as (host, port). Raises ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class Server:
    """Everything the server runs, started and stopped as one."""

    def __init__(self, datastore: Datastore, listen: str = DEFAULT_LISTEN,
                 database: str | None = None) -> None:
        self.datastore = datastore
        # A database to move the datastore to (a PostgreSQL URL, or "sqlite"): recorded in the
        # datastore once it opened, so that a mistyped URL never sticks.
        self.database = database
        self.host, self.port = parse_listen(listen)
        self.artifacts = ServerLibrary(datastore.artifacts_dir)
        self.upload_store: UploadStore = FolderUploads(datastore.uploads_location())
        self.db: Database
        self.directory: ClientDirectory
        self.flows: FlowManager
        self.hunts: HuntManager
        self.foreman: Foreman
        self.audit: AuditLog
        self.operators: OperatorDirectory
        self.settings: ServerSettings
        self.enrolment_secret = ""
        self._listener: WebsocketServer | None = None
        self.url = ""
        self._connections_since_trim = 0
        self._last_connection = 0.0
        self._trimmer: asyncio.Task[None] | None = None
        self.agent_gate = AgentGate()
        self.result_matches = MatchCache()  # where operators' filters matched, per hunt
        # Open operator connections, each with the hash of the token it showed.
        self._operator_connections: dict[ServerConnection, str] = {}

    async def start(self) -> None:
        """Open the store, load state, and listen. Raises OSError if the address is taken,
        DatabaseUnreachable when the datastore's PostgreSQL cannot be opened."""
        tune_for_many_connections()
        check("SELECT * FROM scope()")  # build the VQL parser now, not in the first request
        self.enrolment_secret = self.datastore.enrolment_secret()
        if self.database is None:
            self.db = await Database.open(self.datastore.database_target())
        else:
            url = checked_database_url(self.database)
            self.db = await Database.open(url or self.datastore.database_path)
            self.datastore.set_database_url(url)
        self.operators = OperatorDirectory(self.db)
        await self.operators.load(self.datastore.api_token())
        self.directory = ClientDirectory(self.db)
        self.directory.on_revoked = self.client_revoked  # revoked on another frontend
        await self.directory.load()
        self.flows = FlowManager(self.db, self.upload_store, self.directory.sessions)
        await self.flows.load()
        self.audit = AuditLog(self.db)
        self.settings = ServerSettings(self.db)
        await self.settings.load()
        self.hunts = HuntManager(self.db, self.flows)
        self.foreman = Foreman(self.hunts, self.flows, self.directory, self.settings)
        await self.hunts.load()
        await self.foreman.load()
        self.hunts.start_reconciling()
        context = server_ssl_context(self.datastore.server_cert_path,
                                     self.datastore.server_key_path)
        self._listener = await websockets.asyncio.server.serve(
            self._route,
            self.host,
            self.port,
            ssl=context,
            # Handshake limits for everyone; raised once an agent or operator is authenticated.
            max_size=protocol.MAX_HANDSHAKE_FRAME_BYTES,
            max_queue=HANDSHAKE_QUEUED_FRAMES,
            compression=None,
            process_request=self._check_request,
            ping_interval=20,
            ping_timeout=60,
            close_timeout=5,
            backlog=4096,  # a fleet reconnecting at once must not overflow the listen queue
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        shown_host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        self.url = f"wss://{shown_host}:{self.port}"
        self.datastore.write_server_address(self.url)
        self._trimmer = asyncio.create_task(self._trim_after_bursts(), name="memory-trim")
        log.info("listening on %s (datastore %s)", self.url, self.datastore.root)

    @property
    def agent_url(self) -> str:
        return self.url + protocol.AGENT_PATH

    async def stop(self) -> None:
        """Close every connection, finish queued writes, and close the store."""
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
        if self._listener is not None:
            for session in list(self.directory.sessions.values()):
                try:
                    await session.close(int(CloseCode.GOING_AWAY), "the server is stopping")
                except Exception:
                    pass
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
            self.datastore.clear_server_address()
        await self.foreman.close()
        await self.hunts.close()
        await self.flows.close()
        await self.directory.close()
        await self.db.close()

    def service(self, operator: Operator | str) -> Service:
        """The operator API acting as ``operator`` (recorded in the audit log). A bare name is
        an in-process caller (a benchmark, a test) and acts as an admin; over the websocket the
        API checks each request against the caller's current role."""
        if isinstance(operator, str):
            operator = Operator(operator, "admin")
        return Service(self, operator)

    def add_operator_token(self, token: str, operator: str) -> None:
        """Also accept ``token`` on the operator API, as the operator named ``operator``, for
        as long as this server runs (the embedding console's own token). Raises ValueError when
        there is no such operator."""
        if self.operators.get(operator) is None:
            raise ValueError(f"no operator {operator!r} (see: velotui operator list)")
        self.operators.add_session_token(token, operator)

    def _operator_credential(self, token: str) -> str | None:
        """The hash a connection showing ``token`` is bound to, or None when no operator
        has that token."""
        if not token or self.operators.by_token(token) is None:
            return None
        return token_hash(token)

    async def shut_out_removed_operators(self) -> None:
        """Close every connection whose operator was removed: its streams end now, not at its
        next request."""
        for connection, credential in list(self._operator_connections.items()):
            if self.operators.by_hash(credential) is None:
                with contextlib.suppress(Exception):
                    await connection.close(int(CloseCode.AUTH_FAILED), "operator removed")

    # Connections --------------------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == protocol.AGENT_PATH:
            return None
        if path == protocol.OPERATOR_PATH:
            header = request.headers.get("Authorization", "")
            token = header.removeprefix("Bearer ").strip()
            credential = self._operator_credential(token)
            if credential is None:
                log.warning("operator connection refused: bad token")
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "bad or missing token\n")
            connection.velotui_credential = credential  # type: ignore[attr-defined]
            return None
        return connection.respond(http.HTTPStatus.NOT_FOUND, "no such endpoint\n")

    async def _trim_after_bursts(self) -> None:
        """Once a burst of connections (a fleet coming back) has passed, give the memory its
        handshakes used back to the system."""
        while True:
            await asyncio.sleep(TRIM_CHECK_INTERVAL)
            quiet = time.monotonic() - self._last_connection > TRIM_CHECK_INTERVAL
            if self._connections_since_trim >= TRIM_AFTER_CONNECTIONS and quiet:
                self._connections_since_trim = 0
                await asyncio.to_thread(release_free_memory)

    async def _route(self, connection: ServerConnection) -> None:
        path = connection.request.path.split("?", 1)[0] if connection.request else ""
        self._connections_since_trim += 1
        self._last_connection = time.monotonic()
        if path == protocol.AGENT_PATH:
            await AgentSession(self, connection).run()
        elif path == protocol.OPERATOR_PATH:
            allow_full_frames(connection)  # its bearer token was checked at the upgrade
            credential = getattr(connection, "velotui_credential", "")
            self._operator_connections[connection] = credential
            try:
                await serve_operator(connection, self, credential)
            finally:
                self._operator_connections.pop(connection, None)

    # Hooks for the foreman ----------------------------------------------------------------------

    async def client_checked_in(self, session: AgentSession, last_hunt_timestamp: int) -> None:
        """An agent connected or polled, reporting the newest hunt it was checked for."""
        await self.foreman.check_in(session, last_hunt_timestamp)

    async def client_revoked(self, client_id: str) -> None:
        """A client's key was revoked: close its connection and end its flows in flight."""
        session = self.directory.sessions.get(client_id)
        if session is not None:
            await session.close(int(CloseCode.AUTH_FAILED), "this client was revoked")
        await self.flows.end_many(self.flows.in_flight_of(client_id), "error",
                                  "the client was revoked")

    async def client_disconnected(self, session: AgentSession) -> None:
        """An agent's connection ended."""
