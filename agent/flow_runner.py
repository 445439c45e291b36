"""Running one flow on the agent: a VQL query whose rows, logs and uploads stream to the server.

A flow's messages go into the agent's ``Outbox`` with per-flow sequence numbers: rows in batches
(flushed at ``ROW_BATCH_COUNT`` rows, ``ROW_BATCH_BYTES`` of encoded rows, or ``ROW_BATCH_DELAY``
seconds after the first unsent one, whichever comes first), log lines, upload chunks, and last of
all exactly one ``Status``. When the outbox is full the query waits, so a fast query cannot outrun
a slow server (unless the server is unreachable and the outbox refuses the flow, which then ends
in error). The flow honours its limits (rows, upload bytes, time) and a cancel from the server.

Each message is stored with the flow's progress (``agent.flow_progress``). A flow the agent was
running when it stopped or was killed is given back by the outbox on the next start and run again
with that progress: the query runs from the beginning, the rows and uploads already produced are
skipped, and the seqs continue, so for a deterministic query the server receives every row once.
The restarted flow keeps its original deadline, row and upload limits, and an end it had been told
(a cancel, a limit) before the restart. A query that does not produce the same rows twice may
produce different ones after a restart (see ``agent.flow_progress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import msgpack

from agent.flow_progress import FlowProgress, UploadProgress
from agent.outbox import FlowRefused, Outbox
from agent.plugins.temporary import remove_temporaries_after
from agent.plugins.upload import UPLOADER_SERVICE, UploadRefused
from velotui.vql import Program, Registry, VQLSyntaxError, compile_query, run, to_json_value
from velotui.wire.protocol import (
    MAX_CHECKED_ROWS,
    MAX_FRAME_BYTES,
    MAX_ITEMS_PER_FRAME,
    MAX_NAME,
    MAX_TEXT,
    Checked,
    FlowRequest,
    Log,
    Message,
    ProtocolError,
    Rows,
    Status,
    Upload,
    encode,
    json_value_items,
)

ROW_BATCH_COUNT = 1000
ROW_BATCH_BYTES = 1024 * 1024
ROW_BATCH_DELAY = 1.0
UPLOAD_CHUNK_BYTES = 512 * 1024
# A batch must fit in one frame with room for the message around the rows.
MAX_BATCH_BYTES = MAX_FRAME_BYTES - 64 * 1024
MAX_BATCH_ITEMS = MAX_ITEMS_PER_FRAME - 64
# Logs wait here for the outbox; a query that logs without end must not fill memory instead.
MAX_PENDING_LOGS = 1000

log = logging.getLogger(__name__)


class FlowRunner:
    """Runs one ``FlowRequest`` into an ``Outbox``; ``run()`` returns the Status it sent.

    With ``progress`` (what the outbox kept of a flow begun before a restart) it continues that
    flow instead of beginning one.
    """

    def __init__(
        self,
        request: FlowRequest,
        outbox: Outbox,
        registry: Registry,
        progress: FlowProgress | None = None,
    ) -> None:
        self.request = request
        self.flow_id = request.flow_id
        self._outbox = outbox
        self._registry = registry
        self.resumed = progress is not None
        self.progress = progress if progress is not None else FlowProgress.begin(
            request, time.time()
        )
        self.uploader = FlowUploader(self)
        self._rows_taken = self.progress.rows_sent  # rows pulled from the query, sent or waiting
        # Rows of the query already accounted for before a restart: run past, not sent again.
        self._rows_to_skip = self.progress.query_rows
        self._position = 0  # rows the query has given so far
        self._pending_rows: list[dict[str, Any]] = []
        self._pending_sizes: list[int] = []
        self._pending_positions: list[int] = []  # each pending row's place in the query's output
        self._pending_items: list[int] = []  # values in each pending row, nested ones included
        self._pending_bytes = 0
        self._pending_logs: deque[tuple[str, str, float]] = deque()
        self._dropped_logs = 0
        self._first_pending_at: float | None = None
        # Flushes what waits ROW_BATCH_DELAY after the first of it; a timer, not a task, since
        # most flows of a hunt end long before it fires.
        self._flush_timer: asyncio.TimerHandle | None = None
        self._timed_flush: asyncio.Task[Any] | None = None
        self._query: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()  # one flush at a time keeps batches in order
        # How the flow ends when something other than the query's own end stops it.
        self._end: tuple[str, str | None] | None = self.progress.end
        # A hunt flow's condition rows not sent yet: they go in a Checked before anything of the
        # query, or in the Status when nothing was sent before it.
        self._checked_rows: list[dict[str, Any]] | None = None
        self._checked_lock = asyncio.Lock()
        # Condition rows kept for the Status go out on their own if the query is still running
        # after a moment: the server must not show a collecting client as still checked.
        self._checked_timer: asyncio.TimerHandle | None = None
        self._checked_send: asyncio.Task[bool] | None = None
        self._go: asyncio.Future[bool | None] | None = None

    @property
    def rows_sent(self) -> int:
        """Rows put into the outbox so far (before a restart included)."""
        return self.progress.rows_sent

    # Control ---------------------------------------------------------------------------------

    def cancel(self, reason: str = "") -> None:
        """Stop the flow; it ends with state "cancelled" (unless it already ended otherwise)."""
        self._end_early("cancelled", reason or "cancelled by the server")

    @property
    def stopping(self) -> bool:
        """True once the flow has been told to end early (cancel or a limit)."""
        return self._end is not None

    def _end_early(self, state: str, error: str | None) -> None:
        if self._end is None:  # the first reason wins: a cancel after a limit changes nothing
            self._end = (state, error)
            # Kept, so that a restart before the Status ends the flow the same way.
            self.progress.end = self._end
            self._outbox.note(self.flow_id, self.progress.flow_record())
            if self._query is not None and self._query is not asyncio.current_task():
                self._query.cancel()
            if self._go is not None and not self._go.done():
                self._go.set_result(None)

    def go(self, run: bool, query: str = "") -> None:
        """The server's judgement of this held hunt flow: run ``query``, or end here."""
        if self.progress.go is None:
            self.progress.go = run
            self.progress.go_query = query if run else ""
            self._outbox.note(self.flow_id, self.progress.flow_record())
        if self._go is not None and not self._go.done():
            self._go.set_result(run)

    # Running ---------------------------------------------------------------------------------

    async def run(self) -> Status | None:
        """Run the flow to its end and put its Status (the flow's last message); return it.
        None when the server ended a held hunt flow at its condition (nothing more is sent).

        Waits when the outbox is full. Cancelling this coroutine (the agent is stopping) stops the
        query and sends no status: the outbox keeps the flow, to continue after a restart.
        """
        if not self.resumed:
            self._outbox.begin_flow(
                self.flow_id, encode(self.request), self.progress.flow_record()
            )
        try:
            ended = self._end
            if ended is None and self.request.condition:
                ended = await self._check_condition()
                if ended is NOT_RUN:
                    return None
            if ended is not None:  # told to end (before a restart too), or not matched
                state, error_text = ended
            else:
                try:
                    program = compile_query(self._query_text, self._registry)
                except VQLSyntaxError as error:
                    state, error_text = "error", str(error)  # "line L, col C: what is wrong"
                except Exception as error:  # a compile failure that is not a syntax error
                    state, error_text = "error", f"cannot compile the query: {error}"
                else:
                    state, error_text = await self._run_program(program)
        finally:
            await self._stop_timer()
        # Everything the query produced reaches the server with the status that closes it.
        await self._settle_checked()
        final_rows = await self._flush(keep_tail=True)
        status_fields: dict[str, Any] = {
            "flow_id": self.flow_id,
            "state": state,
            "error": error_text[:MAX_TEXT] if error_text is not None else None,
            "rows": self.progress.rows_sent + len(final_rows),
            "bytes": self.progress.uploaded_bytes,
            "duration": max(time.time() - self.progress.started, 0.0),
            "final_rows": final_rows,
            # The condition's rows, when nothing of the flow was sent before its end.
            "checked": self._checked_rows,
        }
        seq = await self._emit(lambda seq: Status(seq=seq, **status_fields), status=True)
        assert seq is not None  # a Status is never refused
        return Status(seq=seq, **status_fields)

    @property
    def _query_text(self) -> str:
        """The flow's query: a held hunt flow's came with its go-ahead."""
        if self.request.hold and self.request.condition:
            return self.progress.go_query
        return self.request.query

    async def _check_condition(self) -> tuple[str, str | None] | None:
        """A hunt flow's first stage: its client-side condition (unless run before a restart).
        Returns how the flow ends here (NOT_RUN when the server said so), or None to run the
        query."""
        if not self.progress.checked:
            rows = await self._condition_rows()
            if isinstance(rows, tuple):
                return rows
            if not self.request.hold:
                # No hidden condition and nobody to wait for: a row matches, none does not.
                self._checked_rows = rows
                if not rows:
                    return "finished", None
                self._checked_timer = asyncio.get_running_loop().call_later(
                    CHECKED_FOLD_DELAY, self._send_checked_soon)
                return None
            self._checked_rows = rows
            if not await self._send_checked():
                return self._end or ("error", "the condition's rows could not be kept")
        if not self.request.hold:
            return None
        run = self.progress.go
        if run is None:
            run = await self._wait_for_go()
        if run is None:
            return self._end or ("timeout",
                                 f"no go-ahead within {self.request.timeout:g} seconds")
        return None if run else NOT_RUN

    async def _condition_rows(self) -> list[dict[str, Any]] | tuple[str, str | None]:
        """The condition's rows as JSON values, or how the flow ends (an error)."""
        try:
            program = compile_query(self.request.condition, self._registry)
        except VQLSyntaxError as error:
            return "error", f"the client-side condition does not parse: {error}"
        except Exception as error:
            return "error", f"cannot compile the client-side condition: {error}"
        rows: list[dict[str, Any]] = []

        async def gather() -> None:
            async with contextlib.aclosing(run(program, env=self.request.env,
                                               registry=self._registry,
                                               on_log=self._on_log)) as results:
                async for row in results:
                    value = to_json_value(row)
                    json_value_items(value)
                    rows.append(value)
                    if len(rows) > MAX_CHECKED_ROWS:
                        return

        try:
            if self._time_left() == 0.0:
                raise TimeoutError
            # A timeout scope, not wait_for: no task of its own for each of a hunt's checks.
            async with asyncio.timeout(self._time_left()):
                await gather()
        except TimeoutError:
            return "timeout", f"timed out after {self.request.timeout:g} seconds"
        except ProtocolError as error:
            return "error", f"the client-side condition returned a row that cannot be sent" \
                            f" ({error.reason})"
        except Exception as error:
            return "error", f"the client-side condition failed: {error.__class__.__name__}:" \
                            f" {error}"
        if len(rows) > MAX_CHECKED_ROWS:
            return "error", f"the client-side condition returned more than" \
                            f" {MAX_CHECKED_ROWS:,} rows"
        return rows

    def _send_checked_soon(self) -> None:
        self._checked_timer = None
        if self._checked_rows is not None:
            self._checked_send = asyncio.create_task(self._send_checked())

    async def _settle_checked(self) -> None:
        """Before the Status: the condition rows are either sent already or go with it."""
        if self._checked_timer is not None:
            self._checked_timer.cancel()
            self._checked_timer = None
        if self._checked_send is not None:
            await self._checked_send

    async def _send_checked(self) -> bool:
        """Put the condition's rows (if not sent yet) ahead of anything else of the flow; False
        when the outbox refused the flow."""
        async with self._checked_lock:
            rows = self._checked_rows
            if rows is None:
                return True

            def stored(_seq: int) -> Mapping[str, Any]:
                self.progress.checked = True
                return self.progress.flow_record()

            self._checked_rows = None
            seq = await self._outbox_put(
                lambda seq: Checked(flow_id=self.flow_id, seq=seq, rows=rows), stored)
            return seq is not None

    async def _wait_for_go(self) -> bool | None:
        self._go = asyncio.get_running_loop().create_future()
        if self._end is not None:
            return None
        try:
            return await asyncio.wait_for(self._go, self._time_left())
        except TimeoutError:
            return None

    def _time_left(self) -> float | None:
        if self.progress.deadline is None:
            return None
        return max(self.progress.deadline - time.time(), 0.0)

    async def _run_program(self, program: Program) -> tuple[str, str | None]:
        if self._time_left() == 0.0:  # its deadline passed while the agent was down
            return "timeout", f"timed out after {self.request.timeout:g} seconds"
        self._query = query = asyncio.create_task(self._pump_rows(program))
        if self._end is not None:  # cancelled before the query began
            query.cancel()
        try:
            # A timeout scope, not wait_for: awaiting the query cancels it at the deadline, with
            # no task of its own for each of a hunt's flows.
            async with asyncio.timeout(self._time_left()):
                await query
        except TimeoutError:
            return "timeout", f"timed out after {self.request.timeout:g} seconds"
        except asyncio.CancelledError:
            if self._end is None or not query.cancelled():
                raise  # the agent is stopping: no status
            return self._end
        except Exception as error:
            log.error("flow %s: the query failed", self.flow_id, exc_info=error)
            return "error", f"the query failed: {error.__class__.__name__}: {error}"
        finally:
            if not query.done():
                query.cancel()
                # Let the query unwind (closing its plugins and files) before the status.
                with contextlib.suppress(BaseException):
                    await query
        if self._end is not None:
            return self._end
        return "finished", None

    async def _pump_rows(self, program: Program) -> None:
        max_rows = self.request.max_rows
        services: dict[str, Any] = {UPLOADER_SERVICE: self.uploader}
        rows = run(
            program,
            env=self.request.env,
            registry=self._registry,
            on_log=self._on_log,
            services=services,
        )
        # The query's temporary files go when the flow ends, not when its objects are freed.
        async with remove_temporaries_after(services), contextlib.aclosing(rows):
            async for row in rows:
                if self._end is not None:
                    return  # refused by the outbox while sending: nothing more is kept
                self._position += 1
                if self._position <= self._rows_to_skip:
                    continue  # sent before a restart
                if max_rows and self._rows_taken >= max_rows:
                    # One row too many: the limit is exceeded, not merely met. Closing the
                    # generator (leaving the block) stops the query.
                    self._end_early("error", f"row limit of {max_rows} reached")
                    return
                value = to_json_value(row)
                try:
                    size = len(msgpack.packb(value, use_bin_type=True))
                except (OverflowError, TypeError, ValueError) as error:
                    # Say so and go on: one odd value (an integer past 64 bits) is no reason
                    # to lose the flow.
                    self._on_log("error", f"a row cannot be sent ({error}); skipped")
                    continue
                if size > MAX_BATCH_BYTES:
                    self._on_log("error", f"a row of {size} bytes does not fit a message; skipped")
                    continue
                try:
                    items = json_value_items(value)  # what the server refuses, it is not sent
                except ProtocolError as error:
                    self._on_log("error", f"a row cannot be sent ({error.reason}); skipped")
                    continue
                if items > MAX_BATCH_ITEMS:
                    self._on_log("error", f"a row of {items} values does not fit a message;"
                                 " skipped")
                    continue
                if self._pending_rows and self._pending_bytes + size > MAX_BATCH_BYTES:
                    await self._flush()
                self._pending_rows.append(value)
                self._pending_sizes.append(size)
                self._pending_positions.append(self._position)
                self._pending_items.append(items)
                self._pending_bytes += size
                self._rows_taken += 1
                self._mark_pending()
                if (
                    len(self._pending_rows) >= ROW_BATCH_COUNT
                    or self._pending_bytes >= ROW_BATCH_BYTES
                ):
                    await self._flush()

    def _on_log(self, level: str, message: str) -> None:
        # Called synchronously from inside the query: queue it for the next flush. What the query
        # says while it runs through rows sent before a restart was said then.
        if self._position < self._rows_to_skip:
            return
        self._add_log(level, message)

    def _add_log(self, level: str, message: str) -> None:
        log.debug("flow %s: %s: %s", self.flow_id, level, message)
        if len(self._pending_logs) >= MAX_PENDING_LOGS:
            self._dropped_logs += 1
            return
        self._pending_logs.append((level, message[:MAX_TEXT], time.time()))
        self._mark_pending()

    # Flushing --------------------------------------------------------------------------------

    def _mark_pending(self) -> None:
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
            if self._flush_timer is None:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(ROW_BATCH_DELAY, self._flush_is_due)

    def _flush_is_due(self) -> None:
        """The timer fired: flush in a task of its own (it may wait for outbox space)."""
        self._flush_timer = None
        if self._first_pending_at is None:
            return
        if time.monotonic() < self._first_pending_at + ROW_BATCH_DELAY:
            # What waits now arrived after the last flush: wait for its own second.
            delay = self._first_pending_at + ROW_BATCH_DELAY - time.monotonic()
            self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_is_due)
            return
        if self._timed_flush is None or self._timed_flush.done():
            self._timed_flush = asyncio.create_task(self._flush())

    async def _stop_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._timed_flush is not None and not self._timed_flush.done():
            self._timed_flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timed_flush

    async def _flush(self, keep_tail: bool = False) -> list[dict[str, Any]]:
        """Put every pending row (in batches) and log line into the outbox; with ``keep_tail``,
        return the last batch of rows instead of sending it (it goes in the Status).

        Rows leave the pending list only once stored, so a flush interrupted by a cancel loses
        nothing: the final flush sends them. What arrives while a flush waits joins it. When the
        outbox refuses the flow, what is pending is dropped (but a tail still rides in the
        Status, which is never refused).
        """
        tail: list[dict[str, Any]] = []
        async with self._flush_lock:
            while True:
                if self._pending_rows:
                    count = self._next_batch_count()
                    batch = self._pending_rows[:count]
                    if keep_tail and count == len(self._pending_rows):
                        tail = batch  # the last batch rides in the flow's Status
                    else:
                        position = self._pending_positions[count - 1]
                        seq = await self._emit(
                            lambda seq, batch=batch: Rows(
                                flow_id=self.flow_id, seq=seq, rows=batch
                            ),
                            lambda _seq, count=count, position=position: self._rows_stored(
                                count, position
                            ),
                        )
                        if seq is None:
                            self._drop_pending()
                            continue
                    self._forget_pending(count)
                    await self._let_others_run()
                elif self._pending_logs:
                    level, message, at = self._pending_logs[0]
                    seq = await self._emit(
                        lambda seq, level=level, message=message, at=at: Log(
                            flow_id=self.flow_id, seq=seq, level=level, message=message, time=at
                        )
                    )
                    if seq is None:
                        self._drop_pending()
                        continue
                    self._pending_logs.popleft()
                    await self._let_others_run()
                elif self._dropped_logs:
                    dropped = self._dropped_logs
                    text = (
                        f"{dropped} log messages were dropped: the flow logged faster than it sent"
                    )
                    seq = await self._emit(
                        lambda seq, text=text: Log(
                            flow_id=self.flow_id,
                            seq=seq,
                            level="warning",
                            message=text,
                            time=time.time(),
                        )
                    )
                    if seq is None:
                        self._drop_pending()
                        continue
                    self._dropped_logs -= dropped
                else:
                    break
            self._first_pending_at = None
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
        return tail

    def _rows_stored(self, count: int, position: int) -> Mapping[str, Any]:
        self.progress.rows_sent += count
        self.progress.query_rows = position
        return self.progress.flow_record()

    def _forget_pending(self, count: int) -> None:
        del self._pending_rows[:count]
        self._pending_bytes -= sum(self._pending_sizes[:count])
        del self._pending_sizes[:count]
        del self._pending_positions[:count]
        del self._pending_items[:count]

    def _drop_pending(self) -> None:
        """The outbox refused the flow: nothing pending can be kept any more."""
        self._forget_pending(len(self._pending_rows))
        self._pending_logs.clear()
        self._dropped_logs = 0

    def _next_batch_count(self) -> int:
        """How many pending rows the next Rows message takes."""
        count = size = items = 0
        for row_size, row_items in zip(self._pending_sizes, self._pending_items, strict=True):
            if count == ROW_BATCH_COUNT or size >= ROW_BATCH_BYTES:
                break
            if count and (size + row_size > MAX_BATCH_BYTES
                          or items + row_items > MAX_BATCH_ITEMS):
                break
            count += 1
            size += row_size
            items += row_items
        return count

    async def _emit(
        self,
        build: Callable[[int], Message],
        stored: Callable[[int], Mapping[str, Any] | None] | None = None,
        status: bool = False,
    ) -> int | None:
        """Put ``build(seq)`` into the outbox (waiting for space), with the progress ``stored``
        gives once it is kept; return its seq, or None when the outbox refused the flow (which
        then ends in error). A hunt flow's condition rows go first, unless this is its Status,
        which carries them."""
        if not status and self._checked_rows is not None and not await self._send_checked():
            return None
        return await self._outbox_put(build, stored)

    async def _outbox_put(
        self,
        build: Callable[[int], Message],
        stored: Callable[[int], Mapping[str, Any] | None] | None = None,
    ) -> int | None:
        try:
            entry = await self._outbox.put(self.flow_id, build, stored)
        except FlowRefused as refusal:
            self._end_early("error", str(refusal))
            return None
        # No await between a message kept and the caller's note that it is: a cancel there (a
        # timed flush cancelled as the flow ends) would send its rows a second time. Callers
        # yield once they have noted it (``_let_others_run``).
        return entry.seq

    @staticmethod
    async def _let_others_run() -> None:
        # Let the outbox's writer and the connection run: a query that never waits would hold
        # the event loop until it ends, and nothing would be written, sent or acknowledged.
        await asyncio.sleep(0)


NOT_RUN = ("not run", None)  # a held hunt flow the server ended at its condition
# A query that ends within this after its condition matched sends the condition's rows with its
# Status: the whole flow in one message, as most flows of a hunt are.
CHECKED_FOLD_DELAY = 1.0


class FlowUploader:
    """The flow's ``uploader`` service: streams files through the outbox as Upload chunks.

    After a restart, the query's uploads are matched in order to the ones recorded: one whose
    last chunk was put returns its recorded result without sending anything; one cut short
    continues at the byte it had reached, under its own id, once the file is checked to still
    begin with the bytes sent (by their SHA-256). A file that no longer matches (moved, changed,
    another file in that place) marks the point where the query stopped repeating itself: the
    upload cut short stays incomplete on the server, this file and every later one are uploaded
    under new ids, and a warning says so in the flow's log.
    """

    def __init__(self, runner: FlowRunner) -> None:
        self._runner = runner
        self._progress = runner.progress
        self._next_upload_id = 0
        self._replaying = bool(self._progress.uploads)
        # Bytes of uploads under way not yet sent: counted against the limit from the start, so
        # uploads running side by side cannot overrun it together.
        self._reserved_bytes = 0

    @property
    def uploaded_bytes(self) -> int:
        """File bytes put into the outbox (before a restart included)."""
        return self._progress.uploaded_bytes

    async def upload(self, path: str, name: str | None) -> dict[str, Any]:
        """Send the file at ``path`` in chunks; return Path (``name`` or ``path``), Size, sha256
        and md5.

        The file is read as it is when opened: at most the size it had then. Raises
        UploadRefused when the flow's upload limit would be exceeded (the flow then ends with
        state "error") or the flow is ending; OSError when the file cannot be read.
        """
        runner = self._runner
        if runner.stopping:
            raise UploadRefused("the flow is ending")
        stored_name = (name or path)[:MAX_NAME]
        upload = self._recorded_upload(path, stored_name)
        if upload is not None and upload.result is not None:
            self._next_upload_id += 1
            return dict(upload.result)  # uploaded before the restart
        handle: BinaryIO = await asyncio.to_thread(open, path, "rb")
        try:
            size = (await asyncio.to_thread(os.fstat, handle.fileno())).st_size
            sha256, md5 = hashlib.sha256(), hashlib.md5()
            if upload is not None and not await asyncio.to_thread(
                _starts_with, handle, upload, sha256, md5
            ):
                self._diverge(f"{path} changed")
                upload = None
                sha256, md5 = hashlib.sha256(), hashlib.md5()
                await asyncio.to_thread(handle.seek, 0)
            if upload is None:
                upload = UploadProgress(self._next_upload_id, path, stored_name)
            left = size - upload.offset  # bytes still to send
            limit = runner.request.max_upload_bytes
            if limit and self.uploaded_bytes + self._reserved_bytes + left > limit:
                reason = f"upload limit of {limit} bytes reached"
                runner._end_early("error", reason)
                raise UploadRefused(reason)
            self._next_upload_id += 1
            self._reserved_bytes += left
            try:
                return await self._send_chunks(handle, size, upload, sha256, md5, name or path)
            finally:
                self._reserved_bytes -= left
        finally:
            handle.close()

    def _recorded_upload(self, path: str, name: str) -> UploadProgress | None:
        """The upload recorded before a restart that this call repeats, if any."""
        if not self._replaying:
            return None
        recorded = self._progress.uploads.get(self._next_upload_id)
        if recorded is None:
            # Past the last one recorded: new uploads from here, under ids none of the recorded
            # ones has (with uploads side by side, a later id may be recorded and this not).
            self._replaying = False
            self._next_upload_id = max(self._next_upload_id, max(self._progress.uploads) + 1)
            return None
        if recorded.path != path or recorded.name != name:
            self._diverge(f"upload {recorded.upload_id} was {recorded.path}, now {path}")
            return None
        return recorded

    def _diverge(self, what: str) -> None:
        """The query no longer repeats the uploads made before the restart."""
        self._replaying = False
        # New ids from here on: the server holds (perhaps part of) every recorded one.
        self._next_upload_id = max(self._next_upload_id, max(self._progress.uploads) + 1)
        self._runner._add_log(
            "warning",
            f"after the agent restarted, the query's uploads differ from before ({what}): an "
            "upload cut short by the restart stays incomplete, later files are uploaded anew",
        )

    async def _send_chunks(
        self,
        handle: BinaryIO,
        size: int,
        upload: UploadProgress,
        sha256: Any,
        md5: Any,
        shown_path: str,
    ) -> dict[str, Any]:
        """Send the file from ``upload.offset`` (``sha256`` and ``md5`` hold the bytes before
        it); return what upload() returns."""
        runner = self._runner
        offset = upload.offset
        while True:
            want = min(UPLOAD_CHUNK_BYTES, size - offset)
            # Reading and hashing happen off the event loop: a big file must not stall the agent.
            data = b""
            if want > 0:
                data = await asyncio.to_thread(_read_and_hash, handle, want, sha256, md5)
            # A short read means the file shrank since it was opened: what was read is the file.
            eof = offset + len(data) >= size or len(data) < want
            chunk_offset = offset
            digest = sha256.hexdigest() if eof else None

            def stored(_seq: int, data: bytes = data, eof: bool = eof) -> Mapping[str, Any]:
                upload.offset += len(data)
                upload.prefix_sha256 = sha256.hexdigest()
                if eof:
                    upload.result = {"Path": shown_path, "Size": upload.offset,
                                     "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}
                self._progress.uploads[upload.upload_id] = upload
                self._progress.uploaded_bytes += len(data)
                return self._progress.upload_record(upload)

            seq = await runner._emit(
                lambda seq, data=data, chunk_offset=chunk_offset, eof=eof, digest=digest: Upload(
                    flow_id=runner.flow_id,
                    seq=seq,
                    upload_id=upload.upload_id,
                    name=upload.name,
                    offset=chunk_offset,
                    data=data,
                    eof=eof,
                    sha256=digest,
                ),
                stored,
            )
            if seq is None:
                raise UploadRefused("the agent's outbox is full")
            offset += len(data)
            await runner._let_others_run()
            if eof:
                assert upload.result is not None
                return dict(upload.result)


def _starts_with(handle: BinaryIO, upload: UploadProgress, *hashes: Any) -> bool:
    """Hash the first ``upload.offset`` bytes of the file into ``hashes``; True when they are
    the bytes sent before the restart (same SHA-256)."""
    left = upload.offset
    while left > 0:
        data = handle.read(min(left, UPLOAD_CHUNK_BYTES))
        if not data:
            return False
        for digest in hashes:
            digest.update(data)
        left -= len(data)
    return hashes[0].hexdigest() == upload.prefix_sha256


def _read_and_hash(handle: BinaryIO, size: int, *hashes: Any) -> bytes:
    data = handle.read(size)
    for digest in hashes:
        digest.update(data)
    return data
