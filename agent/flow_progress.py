"""How far a flow got, kept in the outbox with its messages so a restarted agent can continue it.

A VQL query cannot be resumed mid-way, so a restarted flow runs its query again and skips what it
had already produced: the first ``query_rows`` rows of the query, and the uploads it had already
made (in the order the query asked for them). Each record is written in the same transaction as
the message it describes, so what is on disk always agrees with the messages on disk.

Limits of this: it is exact for a deterministic query. A query whose rows change from one run to
the next (a process list, files being written, ``now()``) may produce different rows after a
restart: the rows already sent stay as they were, and the rest come from the new run, so some may
be missing and others appear twice in substance (never twice by seq). An upload is matched to the
recorded one by its order and path; a file that changed meanwhile is uploaded again under a new id
(see ``agent.flow_runner.FlowUploader``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from velotui.wire.protocol import FlowRequest

FLOW_KEY = "flow"
UPLOAD_KEY_PREFIX = "upload:"


@dataclass
class UploadProgress:
    """One upload the flow started: its file, how many of its bytes were put, and the SHA-256 of
    those bytes (to check, before continuing it, that the file still starts with them)."""

    upload_id: int
    path: str
    name: str
    offset: int = 0
    prefix_sha256: str = ""
    result: dict[str, Any] | None = None  # what upload() returned, once the last chunk was put

    @property
    def key(self) -> str:
        return f"{UPLOAD_KEY_PREFIX}{self.upload_id}"

    def record(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "offset": self.offset,
            "prefix_sha256": self.prefix_sha256,
            "result": self.result,
        }


@dataclass
class FlowProgress:
    """What a flow produced so far. ``started`` and ``deadline`` are wall-clock times (seconds
    since the epoch), the only clock that survives a restart; ``end`` is set once the flow was
    told to end early (cancelled, a limit reached), as (state, error)."""

    started: float
    deadline: float | None
    rows_sent: int = 0  # rows put into messages
    query_rows: int = 0  # rows of the query's output accounted for by those messages
    uploaded_bytes: int = 0  # file bytes put into Upload messages
    end: tuple[str, str | None] | None = None
    uploads: dict[int, UploadProgress] = field(default_factory=dict)
    # A hunt flow: its condition's rows are sent (or kept to go with the Status), and what the
    # server said of a held one (None: not yet).
    checked: bool = False
    go: bool | None = None
    go_query: str = ""  # the query a held hunt flow's go-ahead brought

    @classmethod
    def begin(cls, request: FlowRequest, now: float) -> FlowProgress:
        """The progress of a flow received at ``now``: nothing done, its deadline from the
        request's timeout (none when 0)."""
        return cls(started=now, deadline=now + request.timeout if request.timeout > 0 else None)

    def flow_record(self) -> dict[str, Any]:
        """The flow-wide part, to store under ``FLOW_KEY``."""
        return {
            FLOW_KEY: {
                "started": self.started,
                "deadline": self.deadline,
                "rows_sent": self.rows_sent,
                "query_rows": self.query_rows,
                "uploaded_bytes": self.uploaded_bytes,
                "end": list(self.end) if self.end is not None else None,
                "checked": self.checked,
                "go": self.go,
                "go_query": self.go_query,
            }
        }

    def upload_record(self, upload: UploadProgress) -> dict[str, Any]:
        """The flow-wide part and one upload's, to store with one of its chunks."""
        return {**self.flow_record(), upload.key: upload.record()}

    @classmethod
    def from_records(cls, records: Mapping[str, Any]) -> FlowProgress:
        """The progress stored as ``records``. Raises ValueError when they are not what
        ``flow_record`` and ``upload_record`` write."""
        try:
            flow = records[FLOW_KEY]
            end = flow["end"]
            progress = cls(
                started=float(flow["started"]),
                deadline=float(flow["deadline"]) if flow["deadline"] is not None else None,
                rows_sent=int(flow["rows_sent"]),
                query_rows=int(flow["query_rows"]),
                uploaded_bytes=int(flow["uploaded_bytes"]),
                end=(str(end[0]), end[1]) if end is not None else None,
                checked=bool(flow.get("checked", False)),
                go=None if flow.get("go") is None else bool(flow["go"]),
                go_query=str(flow.get("go_query", "")),
            )
            for key, value in records.items():
                if not key.startswith(UPLOAD_KEY_PREFIX):
                    continue
                upload_id = int(key.removeprefix(UPLOAD_KEY_PREFIX))
                progress.uploads[upload_id] = UploadProgress(
                    upload_id=upload_id,
                    path=str(value["path"]),
                    name=str(value["name"]),
                    offset=int(value["offset"]),
                    prefix_sha256=str(value["prefix_sha256"]),
                    result=dict(value["result"]) if value["result"] is not None else None,
                )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"unreadable flow progress ({error!r})") from None
        return progress
