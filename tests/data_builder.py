"""Stored data made the way the server makes it: every client, hunt, check, collection, row,
log line and upload goes through the data layer's own statements (the ones the server runs on
agents' messages), with the clock given by the test. So a fixture can only hold what the server
could have stored, and counts always agree with flows."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from velotui.server.data import Database, FlowRecord, HuntRecord
from velotui.server.data.flows import Ending, UploadChunk
from velotui.server.data.hunts import Candidate, Judged
from velotui.server.data.records import DEFAULT_LIMITS, FlowLimits
from velotui.server.hunts import DEFAULT_CLIENT_CONDITION
from velotui.server.ids import condition_flow_id, hunt_flow_id
from velotui.server.upload_store import UploadStore, upload_key

FINISHED = Ending("finished")


class DataBuilder:
    def __init__(self, db: Database, uploads: UploadStore | None = None) -> None:
        self.db = db
        self.uploads = uploads

    async def client(self, client_id: str, facts: dict[str, Any], *, first_seen: float,
                     last_seen: float, agent_labels: Sequence[str] = (),
                     operator_labels: Sequence[str] = (), public_key: bytes | None = None
                     ) -> None:
        key = public_key or (b"key-" + client_id.encode()).ljust(32, b".")[:32]
        await self.db.clients.record_hello(client_id, key, json.dumps(facts),
                                           list(agent_labels), 0, first_seen)
        await self.db.clients.touch(client_id, last_seen, 0)
        if operator_labels:
            await self.db.clients.set_operator_labels(client_id, list(operator_labels))

    async def hunt(self, hunt_id: str, query: str, *, created: float, started: float | None,
                   description: str = "", server_condition: str = "", rate: float = 0.0,
                   limit: int = 0, expires: float, creator: str = "operator",
                   limits: FlowLimits = DEFAULT_LIMITS) -> None:
        """A hunt created at ``created`` and (unless ``started`` is None) started then."""
        await self.db.hunts.create(HuntRecord(
            hunt_id=hunt_id, query=query, client_condition=DEFAULT_CLIENT_CONDITION,
            server_condition=server_condition, description=description, rate=rate,
            client_limit=limit, expires=expires, state="paused", created=created,
            creator=creator, **asdict(limits),
        ))
        if started is not None:
            await self.db.hunts.start(hunt_id, started, int(started * 1_000_000))

    async def check(self, hunt_id: str, client_id: str, *, matched: bool, at: float,
                    row: dict[str, Any] | None = None) -> None:
        """The client's condition check: launched, answered with ``row``, and judged."""
        flow = _flow(client_id, condition_flow_id(hunt_id), hunt_id, "condition", at,
                     DEFAULT_LIMITS)
        added, _moves = await self.db.hunts.add_checking(hunt_id, [flow], at)
        assert added, f"{client_id} was already checked for {hunt_id} (or it is not running)"
        await self.db.flows.ingest_rows(client_id, flow.flow_id, 1, [row or {}],
                                        Ending("finished"), at)
        await self.db.hunts.judged([Judged(hunt_id, client_id, flow.flow_id,
                                           "pending" if matched else "not_matched")], at)

    async def collect(self, hunt_id: str, client_id: str, *, attempt: int = 1,
                      created: float, started: float, finished: float | None,
                      batches: Sequence[Sequence[dict[str, Any]]] = (),
                      logs: Sequence[tuple[float, str, str]] = (),
                      uploads: Sequence[tuple[int, str, bytes]] = (),
                      end: Ending = FINISHED) -> str:
        """Recruit the client (pending) and run its collection: row batches, log lines (time,
        level, message), uploads (id, the agent's name, bytes; the file written where the
        server keeps it), then ``end`` at ``finished`` (None: left running). Its flow ID."""
        hunt = (await self.db.exports.hunt(hunt_id))
        assert hunt is not None
        flow = _flow(client_id, hunt_flow_id(hunt_id, attempt), hunt_id, "collection", created,
                     hunt.limits)
        change = await self.db.hunts.recruit(hunt_id, 1, lambda _candidate: flow, created,
                                             [Candidate(client_id, attempt - 1)])
        assert change is not None and change.recruited, f"{client_id} was not pending"
        await self.db.flows.mark_running(client_id, flow.flow_id, started)
        seq = 0
        for batch in batches:
            seq += 1
            await self.db.flows.ingest_rows(client_id, flow.flow_id, seq, list(batch), None,
                                            started)
        for time, level, message in logs:
            seq += 1
            await self.db.flows.ingest_log(client_id, flow.flow_id, seq, time, level, message,
                                           time)
        for upload_id, name, data in uploads:
            seq += 1
            await self.db.flows.ingest_upload(client_id, flow.flow_id, seq,
                                              self._upload(client_id, flow.flow_id, upload_id,
                                                           name, data), started)
        if finished is not None:
            await self.db.flows.ingest_rows(client_id, flow.flow_id, seq + 1, [], end,
                                            finished)
        return flow.flow_id

    async def relaunch(self, hunt_id: str, client_id: str, at: float) -> None:
        """The client, in errors, back to pending (as ``hunt relaunch`` does)."""
        moves = await self.db.hunts.requeue_errors(hunt_id, [client_id], at)
        assert moves, f"{client_id} is not in errors"

    def _upload(self, client_id: str, flow_id: str, upload_id: int, name: str, data: bytes
                ) -> UploadChunk:
        assert self.uploads is not None, "uploads need the uploads store"
        key = upload_key(client_id, flow_id, upload_id)
        self.uploads.write_chunk(key, 0, data)
        return UploadChunk(upload_id, name, 0, len(data), True, key, self.uploads.finish(key))


def collection_flow(hunt_id: str, created: float) -> Callable[[Candidate], FlowRecord]:
    """What the recruiter gives the data layer: the collection flow of a claimed client."""
    return lambda candidate: _flow(candidate.client_id,
                                   hunt_flow_id(hunt_id, candidate.attempt + 1), hunt_id,
                                   "collection", created, DEFAULT_LIMITS)


def _flow(client_id: str, flow_id: str, hunt_id: str, kind: str, created: float,
          limits: FlowLimits) -> FlowRecord:
    return replace(FlowRecord(
        client_id=client_id, flow_id=flow_id, hunt_id=hunt_id, kind=kind, query="SELECT 1",
        env={}, state="queued", created=created, timeout=0, max_rows=0, max_upload_bytes=0,
    ), **asdict(limits))
