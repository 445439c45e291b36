"""Exporting a hunt: one zip holding the hunt, every client's rows, logs and uploaded files.

The zip is streamed. The event loop reads stored row batches a few at a time and hands them,
through a bounded queue, to one worker thread that owns the zip: it unpacks, formats,
compresses and writes them, so memory stays flat whatever the hunt's size and the event loop,
left with only the database reads, keeps serving agents while a big export runs.

The zip is written without ever seeking back (each entry's sizes follow its data), so its bytes
can leave while it is being made: ``stream_hunt`` hands them out in chunks, through a pipe a few
chunks deep, and a reader that falls behind holds the whole export up rather than making the
server buffer the zip. The same bytes can also be kept on the server (``keep``, or
``export_hunt``'s destination): written to a temporary file beside it and renamed into place
only once complete, so an interrupted export never leaves half a zip under the final name.
Where the server keeps exports is the datastore's ``exports`` folder, under a name the operator
gives and ``export_destination`` checks: never a path, never a file that is not an earlier export.

Layout (``fmt`` picks the ``.jsonl`` and/or ``.csv`` entries; ``summary`` drops the folders)::

    hunt.json                          the hunt, its queries, counts, timings and export options
    results/All.jsonl, All.csv         every client's rows, with ClientId, Fqdn, FlowId first
                                       (and, for artifacts, _Source: Artifact[/Source])
    results/<Artifact>[/<Source>].jsonl, .csv   one artifact source's rows, for artifact hunts
    <hostname>-<client_id>/client.json the client, its place in the hunt, its flow
    <hostname>-<client_id>/results.jsonl, results.csv
    <hostname>-<client_id>/log.jsonl   the flow's log lines
    <hostname>-<client_id>/uploads.json each upload: its entry, the agent's name, size, sha256
    <hostname>-<client_id>/uploads/<safe name>

Every entry name is built here from sanitised components: no absolute paths, drive letters,
``..``, backslashes, control characters or empty components, whatever an agent called its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import os
import queue
import re
import stat
import tempfile
import threading
import time
import unicodedata
import zipfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from velotui.artifacts import SOURCE_COLUMN
from velotui.durable_files import fsync_folder
from velotui.server.data import CHECKING, QUEUES, Database, HuntRecord
from velotui.server.data.export_reads import ExportReader
from velotui.server.data.flows import unpack_rows
from velotui.server.upload_store import UploadStore
from velotui.vql.values import cell_text, to_json_value

T = TypeVar("T")

FORMATS = ("json", "csv", "both")
ADDED_COLUMNS = ("ClientId", "Fqdn", "FlowId")

# At most QUEUE_DEPTH operations wait for the worker, each holding at most BATCHES_PER_READ
# stored batches, a text chunk of about CHUNK_CHARS or nothing: a few megabytes in all.
QUEUE_DEPTH = 4
CHUNK_CHARS = 256 * 1024
COPY_CHUNK_BYTES = 1024 * 1024
# A stored batch can be up to a frame (4 MiB): read a few at a time, never a few hundred.
BATCHES_PER_READ = 4
PROGRESS_INTERVAL = 0.25
# A streamed zip leaves in chunks of CHUNK_BYTES; at most PIPE_DEPTH wait for the reader.
CHUNK_BYTES = 256 * 1024
PIPE_DEPTH = 4

# Components are capped in UTF-8 bytes: file systems limit names to 255 bytes, and a folder name
# plus a disambiguating suffix must still fit.
COMPONENT_BYTES = 120
HOSTNAME_BYTES = 64
_UNSAFE_CHARACTERS = re.compile(r'[<>:"/\\|?*]')
_DOT_RUNS = re.compile(r"\.{2,}")
# Names Windows reserves for devices, whatever the extension and in any case: extracting them
# there misbehaves. It counts the superscript digits as digits (COM¹), and numbers from 0 on.
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"
}
_UNWANTED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class ExportError(Exception):
    """The export cannot be made: an unknown hunt, a name or destination that cannot be used or
    written, or a reader that went away."""


@dataclass(frozen=True)
class ExportProgress:
    """How far an export has got; every count is of what the zip already holds."""

    entries_written: int
    rows_written: int  # rows in results/All.* (each row once, whatever the format)
    bytes_written: int  # bytes of the zip file so far
    clients_done: int
    clients_total: int


@dataclass(frozen=True)
class ExportChunk:
    """The zip's next bytes, ``offset`` bytes from its start."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class ExportResult:
    """A finished export."""

    path: Path | None  # where the server kept the zip; None when it was only streamed
    entries: int
    rows: int
    bytes: int  # the zip file's size
    clients: int
    sha256: str  # of the whole zip, hex


# Entry names ------------------------------------------------------------------------------------


def _cap(text: str, limit: int, keep_end: bool = False) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    # Cutting bytes may split a character; "ignore" drops the half.
    cut = data[-limit:] if keep_end else data[:limit]
    return cut.decode("utf-8", errors="ignore")


def safe_component(text: str, fallback: str = "_", limit: int = COMPONENT_BYTES,
                   keep_end: bool = False) -> str:
    """``text`` as one path component safe on any system: no separators, drive colons, control
    or invisible characters, runs of dots, trailing dots or spaces, or reserved device names;
    at most ``limit`` UTF-8 bytes (keeping the end when ``keep_end``). ``fallback`` when
    nothing is left."""
    cleaned = "".join(
        "_" if unicodedata.category(ch) in _UNWANTED_CATEGORIES else ch for ch in str(text)
    )
    cleaned = _UNSAFE_CHARACTERS.sub("_", cleaned)
    # ".." anywhere would alarm zip-slip checkers even where it is harmless; one dot says as much.
    cleaned = _DOT_RUNS.sub(".", cleaned)
    cleaned = _cap(cleaned, limit, keep_end)
    # Windows drops trailing dots and spaces, so "x." and "x" would be one file there.
    cleaned = cleaned.strip(" ").rstrip(". ")
    if cleaned in ("", "."):
        return fallback
    if is_reserved_name(cleaned):
        cleaned = "_" + cleaned
    return cleaned


def is_reserved_name(name: str) -> bool:
    """Whether Windows takes the file name ``name`` for a device: ``CON``, ``nul.txt``,
    ``COM1.tar.gz``, ``LPT¹``, ``AUX .log``, ``CON.``; what counts is the part before the first
    dot, without trailing spaces, in any case."""
    return name.rstrip(". ").split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def safe_upload_name(name: str) -> str:
    """An agent's name for a file (any path, from any system) as one safe file name: its path
    components joined with ``_``, dropping empty, ``.`` and ``..`` ones; the end is kept when it
    is too long, as that is where the file's own name is."""
    parts = [p for p in re.split(r"[/\\]", str(name)) if p not in ("", ".", "..")]
    joined = "_".join(safe_component(p, fallback="", keep_end=True) for p in parts)
    return safe_component(joined, fallback="upload", keep_end=True)


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name (2).ext`` and so on, not yet in ``used`` (compared case-insensitively,
    as extraction on Windows and macOS would); the result is added to ``used``."""
    candidate = name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        stem, extension = name, ""
    else:
        extension = "." + extension
    number = 2
    while candidate.casefold() in used:
        candidate = f"{stem} ({number}){extension}"
        number += 1
    used.add(candidate.casefold())
    return candidate


# Where the server keeps exports ------------------------------------------------------------------


def _name_problem(name: str) -> str | None:
    if not isinstance(name, str):
        return "it is not text"
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "give a file name, not a path (no / or \\)"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("."):
        return "it starts with a dot"
    if any(unicodedata.category(ch) in _UNWANTED_CATEGORIES for ch in name):
        return "it contains control or invisible characters"
    if not name.lower().endswith(".zip"):
        return "it must end in .zip"
    if len(name.encode("utf-8")) > COMPONENT_BYTES:
        return f"it is longer than {COMPONENT_BYTES} bytes"
    if safe_component(name) != name:
        return ('it is not a portable file name (no <>:"|?*, no trailing space, no device name'
                " such as CON or NUL)")
    return None


def _is_earlier_export(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "hunt.json" in archive.NameToInfo
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def check_destination(destination: Path) -> None:
    """Raise ExportError unless an export may be written at ``destination``: its folder exists,
    and nothing is there yet or an earlier export is (a regular file, a zip with hunt.json), to
    be replaced. Never a link, a folder, a database or any other file. Blocking (it may read a
    zip's directory)."""
    if not destination.parent.is_dir():
        raise ExportError(f"cannot write {destination}: {destination.parent} is not a folder")
    try:
        status = destination.lstat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise ExportError(f"cannot write {destination}: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode) or not _is_earlier_export(destination):
        raise ExportError(f"{destination.name} exists and is not an earlier export: give another"
                          " name")


def export_destination(exports_dir: Path, name: str) -> Path:
    """Where the server keeps the export the operator named ``name``: ``exports_dir / name``.
    The operator names the file, never the path. Raises ExportError, with the reason in one
    line, when ``name`` is not a plain, portable ``.zip`` file name (a separator, ``..``, a
    leading dot, control characters...) or names an existing file that is not an earlier
    export. Blocking (see ``check_destination``)."""
    problem = _name_problem(name)
    if problem is not None:
        raise ExportError(f"{name!r} cannot name an export: {problem}")
    destination = exports_dir / name
    check_destination(destination)
    return destination


# The zip's bytes --------------------------------------------------------------------------------


class _ReaderGone(ExportError):
    """The streamed export's reader stopped reading (cancelled, or the connection closed)."""


class _ZipOutput:
    """What zipfile writes into, on the worker thread: every byte is counted and hashed, written
    to the kept file when there is one (a temporary file beside ``keep``, renamed into place by
    ``commit``) and, when ``send``, handed to the event loop in chunks of CHUNK_BYTES, at most
    PIPE_DEPTH of them waiting for the reader. It has no ``seek``, so zipfile writes each entry's
    sizes after its data and never goes back: bytes can leave as soon as they are made, and
    what is kept is byte for byte what was sent."""

    def __init__(self, keep: Path | None, send: bool) -> None:
        self.keep = keep
        self.send = send
        self.position = 0
        self.sha256 = ""
        self._hash = hashlib.sha256()
        self._unsent = bytearray()
        self._sent = 0
        self._file: IO[bytes] | None = None
        self._temp_path: Path | None = None
        self._discarding = False
        # Thread side: room for a chunk in the pipe. Loop side: the chunks, and a wake-up.
        self._loop = asyncio.get_running_loop()
        self._room = threading.Semaphore(PIPE_DEPTH)
        self._abandoned = False
        self.chunks: deque[ExportChunk] = deque()
        self.changed = asyncio.Event()

    # Worker thread side.

    def open(self) -> None:
        if self.keep is not None:
            descriptor, temp_name = tempfile.mkstemp(
                dir=self.keep.parent, prefix=f".{self.keep.name}.", suffix=".tmp"
            )
            self._temp_path = Path(temp_name)
            self._file = os.fdopen(descriptor, "wb")

    def write(self, data: bytes) -> int:
        if self._discarding:
            return len(data)
        self._hash.update(data)
        if self._file is not None:
            self._file.write(data)
        if self.send:
            self._unsent += data
            while len(self._unsent) >= CHUNK_BYTES:
                self._hand_over(bytes(self._unsent[:CHUNK_BYTES]))
                del self._unsent[:CHUNK_BYTES]
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Nothing: the kept file is synced once, by ``commit``."""

    def commit(self) -> None:
        """After the zip is closed: send the last bytes, then put the kept file in place."""
        if self._unsent:
            self._hand_over(bytes(self._unsent))
            self._unsent.clear()
        self.sha256 = self._hash.hexdigest()
        if self._file is not None and self._temp_path is not None and self.keep is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._temp_path, self.keep)
            self._temp_path = None
            # The zip is complete and in place; a folder that cannot be synced does not undo it.
            with contextlib.suppress(OSError):
                fsync_folder(self.keep.parent)

    def stop_writing(self) -> None:
        """From now on writes are dropped: the export is being thrown away."""
        self._discarding = True

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._temp_path is not None:
            with contextlib.suppress(OSError):
                self._temp_path.unlink()
            self._temp_path = None

    def _hand_over(self, data: bytes) -> None:
        # Waits while PIPE_DEPTH chunks wait for the reader: a slow reader slows the export down.
        self._room.acquire()
        if self._abandoned:
            self._room.release()  # for the next write, which fails the same way
            raise _ReaderGone("the export's reader went away")
        chunk = ExportChunk(self._sent, data)
        self._sent += len(data)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._arrive, chunk)

    # Event loop side.

    def _arrive(self, chunk: ExportChunk) -> None:
        self.chunks.append(chunk)
        self.changed.set()

    def taken(self) -> None:
        """The reader is done with one chunk: room for the next."""
        self._room.release()

    def abandon(self) -> None:
        """Nobody will read any more: a write waiting for room fails instead of waiting."""
        self._abandoned = True
        self._room.release()


# The worker thread ------------------------------------------------------------------------------


def _settle(future: asyncio.Future[Any], result: Any = None) -> None:
    if not future.done():
        future.set_result(result)


class _ZipWorker:
    """The one thread that writes the zip. The event loop hands it operations through an
    unbounded queue guarded by a semaphore the thread releases, so at most QUEUE_DEPTH wait and
    the loop never blocks on a full queue."""

    def __init__(self, output: _ZipOutput, date_time: tuple[int, int, int, int, int, int]) -> None:
        self._output = output
        self._date_time = date_time
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(QUEUE_DEPTH)
        self._operations: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._aborting = False
        self._committed = False
        self.error: BaseException | None = None
        # Counts of what the zip holds, written by the thread only.
        self.entries = 0
        self.rows = 0
        self.clients = 0
        self.bytes = 0
        self._zip: zipfile.ZipFile | None = None
        self._entry: IO[bytes] | None = None
        self._source: IO[bytes] | None = None
        self._source_left = 0
        self._thread = threading.Thread(target=self._run, name="velotui-export", daemon=True)
        self._thread.start()

    # Event loop side.

    def raise_if_failed(self) -> None:
        """Raise what the thread ran into (an OSError as ExportError)."""
        error = self.error
        if error is None:
            return
        if isinstance(error, OSError):
            where = self._output.keep or "the export"
            raise ExportError(f"cannot write {where}: {error}") from error
        raise error

    async def submit(self, operation: Callable[..., Any], *args: Any) -> None:
        """Run ``operation(*args)`` on the thread after what was submitted before."""
        self.raise_if_failed()
        await self._slots.acquire()
        self._operations.put((operation, args, None))

    async def call(self, operation: Callable[..., T], *args: Any) -> T:
        """Run ``operation(*args)`` on the thread after what was submitted before; its result."""
        self.raise_if_failed()
        await self._slots.acquire()
        future: asyncio.Future[T] = self._loop.create_future()
        self._operations.put((operation, args, future))
        result = await future
        self.raise_if_failed()
        return result

    async def finish(self) -> None:
        """Complete the zip and rename it into place; raises what went wrong."""
        await self.call(self._commit)
        self._operations.put(None)
        await asyncio.shield(self._stopped)
        self.raise_if_failed()

    async def abort(self) -> None:
        """Drop what is queued and remove the temporary file."""
        self._aborting = True
        self._output.abandon()  # a write waiting for the reader gives up
        self._operations.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            # Shielded: a second cancellation must not leave the thread's cleanup unawaited.
            await asyncio.shield(self._stopped)

    async def write_json(self, name: str, document: Any) -> None:
        text = json.dumps(to_json_value(document), indent=2, ensure_ascii=False) + "\n"
        await self.submit(self._open_entry, name)
        await self.submit(self._write, text.encode("utf-8"))
        await self.submit(self._close_entry)

    @contextlib.asynccontextmanager
    async def entry(self, name: str) -> AsyncIterator[_TextEntry]:
        """A text entry written in chunks; closed when the block ends without error."""
        await self.submit(self._open_entry, name)
        text = _TextEntry(self)
        yield text
        await text.flush()
        await self.submit(self._close_entry)

    async def count(self, rows: int = 0, clients: int = 0) -> None:
        """Count rows or clients as written once everything handed over before is."""
        await self.submit(self._count, rows, clients)

    # Thread side.

    def _run(self) -> None:
        try:
            while True:
                item = self._operations.get()
                if item is None:
                    return
                operation, args, future = item
                result = None
                try:
                    # After a failure the rest is skipped; the loop learns of it at its next step.
                    if self.error is None and not self._aborting:
                        result = operation(*args)
                except BaseException as error:
                    self.error = error
                finally:
                    self._call_loop(self._slots.release)
                    if future is not None:  # settled even when skipped: nobody waits forever
                        self._call_loop(_settle, future, result)
        finally:
            if not self._committed:
                self._discard()
            self._call_loop(_settle, self._stopped)

    def _call_loop(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _start(self) -> None:
        self._output.open()
        # The output has no seek: zipfile then writes data descriptors and never goes back.
        self._zip = zipfile.ZipFile(self._output, "w", zipfile.ZIP_DEFLATED,  # type: ignore[arg-type]
                                    allowZip64=True)

    def _open_entry(self, name: str) -> None:
        assert self._zip is not None and self._entry is None
        info = zipfile.ZipInfo(name, self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16  # results are sensitive: owner only when extracted
        # force_zip64: the size is unknown when the entry starts and may pass 4 GiB.
        self._entry = self._zip.open(info, "w", force_zip64=True)

    def _write(self, data: bytes) -> None:
        assert self._entry is not None
        self._entry.write(data)
        self.bytes = self._output.position

    def _close_entry(self) -> None:
        assert self._entry is not None
        self._entry.close()
        self._entry = None
        self.entries += 1
        self.bytes = self._output.position

    def _write_encoded(self, encode: Callable[..., tuple[bytes, int]], args: tuple[Any, ...],
                       count_rows: bool) -> None:
        data, rows = encode(*args)
        self._write(data)
        if count_rows:
            self.rows += rows

    def _open_source(self, uploads: UploadStore, key: str, size: int) -> None:
        self._source = uploads.open(key)  # closed by _close_source or _discard
        self._source_left = size

    def _copy_chunk(self) -> None:
        assert self._source is not None and self._entry is not None
        data = self._source.read(min(COPY_CHUNK_BYTES, self._source_left))
        if data:
            self._entry.write(data)
            self._source_left -= len(data)
            self.bytes = self._output.position

    def _close_source(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def _count(self, rows: int, clients: int) -> None:
        self.rows += rows
        self.clients += clients

    def _commit(self) -> None:
        assert self._zip is not None
        self._zip.close()
        self._output.commit()
        self.bytes = self._output.position
        self._committed = True

    def _discard(self) -> None:
        # Best effort: the export has failed already, and the temporary file must go regardless.
        self._output.stop_writing()
        with contextlib.suppress(Exception):
            self._close_source()
        if self._entry is not None:
            with contextlib.suppress(Exception):
                self._entry.close()
        if self._zip is not None:
            with contextlib.suppress(Exception):
                self._zip.close()
        self._output.discard()


_Operation = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]


class _TextEntry:
    """Text for the open entry, gathered into chunks of about CHUNK_CHARS for the worker."""

    def __init__(self, worker: _ZipWorker) -> None:
        self._worker = worker
        self.buffer = io.StringIO()

    async def write(self, text: str) -> None:
        self.buffer.write(text)
        await self.flush_if_full()

    async def flush_if_full(self) -> None:
        if self.buffer.tell() >= CHUNK_CHARS:
            await self.flush()

    async def flush(self) -> None:
        text = self.buffer.getvalue()
        if text:
            self.buffer.seek(0)
            self.buffer.truncate()
            await self._worker.submit(self._worker._write, text.encode("utf-8"))


class _Reporter:
    """Calls the caller's progress callback, on the event loop, at most every PROGRESS_INTERVAL
    seconds, and whenever ``report`` is called."""

    def __init__(self, worker: _ZipWorker, clients_total: int,
                 callback: Callable[[ExportProgress], None] | None) -> None:
        self._worker = worker
        self._clients_total = clients_total
        self._callback = callback
        self._last = time.monotonic()

    def report(self) -> None:
        if self._callback is None:
            return
        self._last = time.monotonic()
        worker = self._worker
        self._callback(ExportProgress(
            entries_written=worker.entries,
            rows_written=worker.rows,
            bytes_written=worker.bytes,
            clients_done=worker.clients,
            clients_total=self._clients_total,
        ))

    def maybe_report(self) -> None:
        if self._callback is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL:
            self.report()


# Reading the hunt -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    """A client of the hunt with a collection flow, as the export saw it at its start."""

    client_id: str
    flow_id: str
    hostname: str
    fqdn: str
    folder: str
    columns: tuple[str, ...] = ()


def _facts(text: str | None) -> dict[str, Any]:
    try:
        facts = json.loads(text or "{}")
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}


def _text_fact(facts: dict[str, Any], name: str) -> str:
    value = facts.get(name)
    return str(value) if value not in (None, "") else ""


async def _members(reads: ExportReader, hunt_id: str) -> list[_Member]:
    """The hunt's clients that have a collection flow, each with its current flow (its latest
    attempt), taken once so every pass of the export sees the same clients and flows."""
    members: list[_Member] = []
    folders: set[str] = set()
    for row in await reads.members(hunt_id):
        facts = _facts(row["facts"])
        hostname = _text_fact(facts, "Hostname")
        fqdn = _text_fact(facts, "Fqdn") or hostname
        folder_host = safe_component(hostname or fqdn, "unknown", HOSTNAME_BYTES)
        folder = _unique(f"{folder_host}-{safe_component(row['client_id'])}", folders)
        members.append(_Member(row["client_id"], row["flow_id"], hostname, fqdn, folder))
    return members


async def _row_pages(reads: ExportReader, member: _Member, cutoff: int
                     ) -> AsyncIterator[list[bytes]]:
    """The member's stored row batches (packed), a few at a time, up to the export's snapshot."""
    after = -1
    while True:
        page = await reads.row_batches(member.client_id, member.flow_id, after, cutoff,
                                       BATCHES_PER_READ)
        if not page:
            return
        after = page[-1]["seq"]
        yield [bytes(record["data"]) for record in page]
        if len(page) < BATCHES_PER_READ:
            return


# These run on the worker thread: unpacking and formatting rows is the export's CPU work, and
# there it does not hold up the event loop.


def _rows_of(batches: list[bytes]) -> Iterator[dict[str, Any]]:
    for batch in batches:
        for row in unpack_rows(batch):
            yield row if isinstance(row, dict) else {"_value": row}


def _with_added(member: _Member, row: dict[str, Any]) -> dict[str, Any]:
    # The server's own ClientId, Fqdn and FlowId win over same-named columns an agent sent (an
    # agent must not pass for another); the client's own results keep the agent's columns.
    combined: dict[str, Any] = {
        "ClientId": member.client_id, "Fqdn": member.fqdn, "FlowId": member.flow_id,
    }
    for key, value in row.items():
        if key not in combined:
            combined[key] = value
    return combined



def _encode_rows(batches: list[bytes], kind: str, columns: list[str] | tuple[str, ...],
                 added_for: _Member | None, source: str | None = None) -> tuple[bytes, int]:
    """Rows of ``batches`` as JSON lines (formatted as ``velotui hunt results`` writes them) or
    CSV lines in ``columns``, with the added columns when ``added_for``; and how many. With
    ``source``, only the rows of that artifact source, without their ``_Source`` column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for row in _rows_of(batches):
        if source is not None:
            if row.get(SOURCE_COLUMN) != source:
                continue
            row = {k: v for k, v in row.items() if k != SOURCE_COLUMN}
        if added_for is not None:
            row = _with_added(added_for, row)
        if kind == "csv":
            writer.writerow([cell_text(row.get(column)) for column in columns])
        else:
            out.write(json.dumps(to_json_value(row), ensure_ascii=False) + "\n")
        count += 1
    return out.getvalue().encode("utf-8"), count


def _csv_line(values: list[str] | tuple[str, ...]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode("utf-8")


class _ColumnLearner:
    """The first pass for CSV: every column in first-seen order (for All.csv) and each client's
    own columns (for its results.csv). Fed on the worker thread."""

    def __init__(self) -> None:
        self.every: dict[str, None] = dict.fromkeys(ADDED_COLUMNS)
        self.by_source: dict[str, dict[str, None]] = {}  # per artifact source, for its CSV
        self._client: dict[str, None] = {}
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # most clients share one set

    def add(self, batches: list[bytes]) -> None:
        for row in _rows_of(batches):
            for key in row:
                if key not in self._client:
                    self._client[key] = None
                    self.every.setdefault(key, None)
            source = row.get(SOURCE_COLUMN)
            if isinstance(source, str):
                columns = self.by_source.setdefault(source, dict.fromkeys(ADDED_COLUMNS))
                for key in row:
                    if key != SOURCE_COLUMN:
                        columns.setdefault(key, None)

    def end_client(self, member: _Member) -> None:
        columns = tuple(self._client)
        member.columns = self._shared.setdefault(columns, columns)
        self._client = {}

    def header(self) -> tuple[list[str], dict[str, list[str]]]:
        return list(self.every), {k: list(v) for k, v in self.by_source.items()}


async def _learn_columns(worker: _ZipWorker, reads: ExportReader, members: list[_Member],
                         cutoff: int, reporter: _Reporter
                         ) -> tuple[list[str], dict[str, list[str]]]:
    """The All.csv header (added columns first) and each artifact source's; sets each
    member's own columns."""
    learner = _ColumnLearner()
    for member in members:
        async for page in _row_pages(reads, member, cutoff):
            await worker.submit(learner.add, page)
            reporter.maybe_report()
        await worker.submit(learner.end_client, member)
    return await worker.call(learner.header)


def source_entry(label: str, kind: str) -> str:
    """Where an artifact source's rows go: ``results/<Artifact>[/<Source>].<kind>``."""
    artifact, _, source = label.partition("/")
    parts = [safe_component(artifact)] + ([safe_component(source)] if source else [])
    return "results/" + "/".join(parts) + f".{kind}"


async def _write_source(worker: _ZipWorker, reads: ExportReader, members: list[_Member],
                        cutoff: int, kind: str, columns: list[str], label: str,
                        reporter: _Reporter) -> None:
    """One artifact source's rows, from every member, with the added columns."""
    await worker.submit(worker._open_entry, source_entry(label, kind))
    if kind == "csv":
        await worker.submit(worker._write, _csv_line(columns))
    for member in members:
        async for page in _row_pages(reads, member, cutoff):
            await worker.submit(worker._write_encoded, _encode_rows,
                                (page, kind, columns, member, label), False)
            reporter.maybe_report()
    await worker.submit(worker._close_entry)


async def _write_all(worker: _ZipWorker, reads: ExportReader, members: list[_Member], cutoff: int,
                     kind: str, header: list[str], *, count_rows: bool, count_clients: bool,
                     reporter: _Reporter) -> None:
    """results/All.jsonl or results/All.csv: every member's rows with the added columns."""
    await worker.submit(worker._open_entry, f"results/All.{kind}")
    if kind == "csv":
        await worker.submit(worker._write, _csv_line(header))
    for member in members:
        async for page in _row_pages(reads, member, cutoff):
            await worker.submit(worker._write_encoded, _encode_rows,
                                (page, kind, header, member), count_rows)
            reporter.maybe_report()
        if count_clients:
            await worker.count(clients=1)
            reporter.report()
    await worker.submit(worker._close_entry)


# One client's folder ----------------------------------------------------------------------------


async def _write_client_results(worker: _ZipWorker, reads: ExportReader, member: _Member,
                                cutoff: int, kind: str, reporter: _Reporter) -> None:
    await worker.submit(worker._open_entry, f"{member.folder}/results.{kind}")
    if kind == "csv":
        await worker.submit(worker._write, _csv_line(member.columns))
    async for page in _row_pages(reads, member, cutoff):
        await worker.submit(worker._write_encoded, _encode_rows,
                            (page, kind, member.columns, None), False)
        reporter.maybe_report()
    await worker.submit(worker._close_entry)


async def _write_client_log(worker: _ZipWorker, reads: ExportReader, member: _Member) -> int:
    lines = 0
    after = 0
    async with worker.entry(f"{member.folder}/log.jsonl") as out:
        while page := await reads.log_lines(member.client_id, member.flow_id, after):
            for row in page:
                line = {"time": row["time"], "level": row["level"], "message": row["message"]}
                await out.write(json.dumps(line, ensure_ascii=False) + "\n")
                lines += 1
                after = row["seq"]
    return lines


async def _write_client_uploads(worker: _ZipWorker, reads: ExportReader, uploads: UploadStore,
                                member: _Member, reporter: _Reporter) -> list[dict[str, Any]]:
    """Copy each upload of the member's flow into ``uploads/``; returns the index."""
    index: list[dict[str, Any]] = []
    used: set[str] = set()
    for row in await reads.uploads(member.client_id, member.flow_id):
        item: dict[str, Any] = {
            "entry": None,
            "name": row["name"],
            "upload_id": row["upload_id"],
            "size": 0,
            "sha256": row["sha256"],
            "complete": bool(row["complete"]),
            "error": None,
        }
        index.append(item)
        key = row["path"]
        try:
            on_disk = await asyncio.to_thread(uploads.size, key)
        except ValueError:
            item["error"] = "the stored path is outside the uploads folder"
            continue
        if on_disk is None:
            item["error"] = "the stored file is missing"
            continue
        # Only what the database recorded is durable; bytes past it are from an unrecorded chunk.
        size = min(int(row["size"]), on_disk)
        if size < int(row["size"]):
            item["error"] = f"the stored file has {on_disk} of {row['size']} bytes"
        name = _unique(safe_upload_name(row["name"]), used)
        item["entry"] = f"uploads/{name}"
        item["size"] = size
        await worker.submit(worker._open_entry, f"{member.folder}/uploads/{name}")
        await worker.submit(worker._open_source, uploads, key, size)
        for _ in range(-(-size // COPY_CHUNK_BYTES)):
            await worker.submit(worker._copy_chunk)
            reporter.maybe_report()
        await worker.submit(worker._close_source)
        await worker.submit(worker._close_entry)
    return index


async def _client_document(reads: ExportReader, hunt_id: str, member: _Member, *, cutoff: int,
                           log_lines: int, uploads: int) -> dict[str, Any]:
    exported = await reads.exported_rows(member.client_id, member.flow_id, cutoff)
    data = await reads.member_details(hunt_id, member.client_id, member.flow_id)
    facts = _facts(data.get("facts"))
    agent_labels = _json_list(data.get("agent_labels"))
    operator_labels = _json_list(data.get("operator_labels"))
    started, finished = data.get("started"), data.get("finished")
    return {
        "client_id": member.client_id,
        "hostname": member.hostname,
        "fqdn": member.fqdn,
        "os": _text_fact(facts, "OS"),
        "labels": list(dict.fromkeys([*agent_labels, *operator_labels])),
        "agent_labels": agent_labels,
        "operator_labels": operator_labels,
        "first_seen": data.get("first_seen"),
        "last_seen": data.get("last_seen"),
        "hunt": {
            "hunt_id": hunt_id,
            "queue": data.get("queue"),
            "stage": data.get("stage"),
            "attempt": data.get("attempt"),
            "checked": data.get("checked"),
            "updated": data.get("updated"),
            "error": data.get("hunt_error"),
        },
        "flow": {
            "flow_id": member.flow_id,
            "state": data.get("state"),
            "rows": data.get("rows"),
            "bytes": data.get("bytes"),
            "error": data.get("error"),
            "created": data.get("created"),
            "started": started,
            "finished": finished,
            "duration": max(finished - started, 0.0)
            if started is not None and finished is not None else None,
        },
        "export": {"folder": member.folder, "rows": exported,
                   "log_lines": log_lines,
                   "uploads": uploads},
    }


def hunt_sources(hunt: HuntRecord) -> list[str]:
    """The artifact sources a hunt's collection names (none for raw VQL)."""
    artifacts = json.loads(hunt.artifacts) if hunt.artifacts else []
    return [label for artifact in artifacts for label in artifact.get("sources", [])]


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


async def _hunt_document(reads: ExportReader, hunt: HuntRecord, *, exported: float, fmt: str,
                         summary: bool, clients: int) -> dict[str, Any]:
    first_finished, last_finished = await reads.finished_span(hunt.hunt_id)
    return {
        "hunt_id": hunt.hunt_id,
        "description": hunt.description,
        "state": hunt.state,
        "stop_reason": hunt.stop_reason,
        "creator": hunt.creator,
        "artifacts": json.loads(hunt.artifacts) if hunt.artifacts else [],
        "queries": {
            "collection": hunt.query,
            "client_condition": hunt.client_condition,
            "server_condition": hunt.server_condition,
        },
        "rate": hunt.rate,
        "limit": hunt.client_limit,
        "expires": hunt.expires,
        "limits": asdict(hunt.limits),
        "counts": {queue: hunt.counts.get(queue, 0) for queue in QUEUES},
        "checking": hunt.counts.get(CHECKING, 0),
        "timings": {
            "created": hunt.created,
            "started": hunt.started,
            "stopped": hunt.stopped,
            "first_finished": first_finished,
            "last_finished": last_finished,
        },
        "export": {"time": exported, "format": fmt, "summary": summary, "clients": clients},
    }


def _zip_time(when: float) -> tuple[int, int, int, int, int, int]:
    stamp = time.localtime(when)
    if stamp.tm_year < 1980:  # the zip format cannot say earlier
        return (1980, 1, 1, 0, 0, 0)
    return (stamp.tm_year, stamp.tm_mon, stamp.tm_mday, stamp.tm_hour, stamp.tm_min,
            stamp.tm_sec)


# The export -------------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")


async def export_hunt(
    db: Database,
    uploads: UploadStore,
    hunt_id: str,
    destination: Path,
    *,
    fmt: str = "json",
    summary: bool = False,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportResult:
    """Write hunt ``hunt_id`` as one zip at ``destination`` (layout in this module's docstring):
    ``fmt`` is "json", "csv" or "both"; ``summary`` leaves out the per-client folders;
    ``progress`` is called on the event loop after each client, every so often in between, and
    at the end.

    The export reads the rows stored when it starts; rows arriving meanwhile are left out, so
    every entry agrees with the others. Returns what was written. Raises ValueError for an
    unknown ``fmt``, ExportError for an unknown hunt or a destination that cannot be written or
    holds something other than an earlier export (``check_destination``); on any error or
    cancellation ``destination`` is left as it was.
    """
    _check_format(fmt)
    destination = Path(destination)
    await asyncio.to_thread(check_destination, destination)
    output = _ZipOutput(keep=destination, send=False)
    return await _write_zip(db, uploads, hunt_id, output, fmt=fmt, summary=summary,
                            progress=progress)


async def stream_hunt(
    db: Database,
    uploads: UploadStore,
    hunt_id: str,
    *,
    fmt: str = "json",
    summary: bool = False,
    keep: Path | None = None,
    send: bool = True,
) -> AsyncIterator[ExportProgress | ExportChunk | ExportResult]:
    """Make hunt ``hunt_id``'s zip (as ``export_hunt`` does) and give it out while it is made:
    ``ExportChunk``s in order (when ``send``), ``ExportProgress`` now and then (the latest
    only, when the reader is behind), and last the ``ExportResult`` with the zip's SHA-256.
    ``keep`` also writes the zip there, as ``export_hunt`` would; check it first with
    ``export_destination``.

    The reader sets the pace: while PIPE_DEPTH chunks wait for it, the export waits too, so
    memory stays flat however slow it is. Closing the generator early abandons the export and
    leaves ``keep`` as it was. Raises what ``export_hunt`` raises.
    """
    _check_format(fmt)
    if keep is not None:
        await asyncio.to_thread(check_destination, keep)
    output = _ZipOutput(keep=keep, send=send)
    latest: list[ExportProgress] = []

    def report(progress: ExportProgress) -> None:
        latest[:] = [progress]
        output.changed.set()

    job = asyncio.create_task(_write_zip(db, uploads, hunt_id, output, fmt=fmt,
                                         summary=summary, progress=report))
    job.add_done_callback(lambda _job: output.changed.set())
    try:
        while True:
            output.changed.clear()
            if latest:  # few (collapsed to the latest), and what a reader behind wants to see
                yield latest.pop()
            elif output.chunks:
                yield output.chunks.popleft()
                output.taken()
            elif job.done():
                # Every chunk arrived before the job could finish (the thread hands them over
                # before it settles the commit), so none is left behind.
                break
            else:
                await output.changed.wait()
        result = job.result()
    finally:
        if not job.done():
            job.cancel()
            with contextlib.suppress(BaseException):
                await job
    yield result


async def _write_zip(
    db: Database,
    uploads: UploadStore,
    hunt_id: str,
    output: _ZipOutput,
    *,
    fmt: str,
    summary: bool,
    progress: Callable[[ExportProgress], None] | None,
) -> ExportResult:
    """Write the zip into ``output``; what was written. On any error or cancellation the output
    is thrown away (a kept file's temporary file removed)."""
    reads = db.exports
    hunt = await reads.hunt(hunt_id)
    if hunt is None:
        raise ExportError(f"no hunt {hunt_id}")

    exported = time.time()
    # Rows are only ever added, so a rowid bound is a snapshot every pass can share.
    cutoff = await reads.row_cutoff()
    members = await _members(reads, hunt_id)
    document = await _hunt_document(reads, hunt, exported=exported, fmt=fmt,
                                    summary=summary, clients=len(members))
    kinds = {"json": ("jsonl",), "csv": ("csv",), "both": ("jsonl", "csv")}[fmt]

    worker = _ZipWorker(output, _zip_time(exported))
    reporter = _Reporter(worker, len(members), progress)
    try:
        await worker.submit(worker._start)
        await worker.write_json("hunt.json", document)
        header: list[str] = []
        source_headers: dict[str, list[str]] = {}
        if "csv" in kinds:
            header, source_headers = await _learn_columns(worker, reads, members, cutoff,
                                                          reporter)
        for position, kind in enumerate(kinds):
            # Rows are counted once whatever the formats; in a summary a client is done once
            # its rows are in the last of them.
            await _write_all(
                worker, reads, members, cutoff, kind, header,
                count_rows=position == 0,
                count_clients=summary and position == len(kinds) - 1,
                reporter=reporter,
            )
        for label in hunt_sources(hunt):
            for kind in kinds:
                columns = source_headers.get(label, list(ADDED_COLUMNS))
                await _write_source(worker, reads, members, cutoff, kind, columns, label,
                                    reporter)
        if not summary:
            for member in members:
                for kind in kinds:
                    await _write_client_results(worker, reads, member, cutoff, kind, reporter)
                log_lines = await _write_client_log(worker, reads, member)
                index = await _write_client_uploads(worker, reads, uploads, member, reporter)
                await worker.write_json(f"{member.folder}/uploads.json", index)
                await worker.write_json(
                    f"{member.folder}/client.json",
                    await _client_document(reads, hunt_id, member, cutoff=cutoff,
                                           log_lines=log_lines, uploads=len(index)),
                )
                await worker.count(clients=1)
                reporter.report()
        await worker.finish()
    except BaseException:
        await worker.abort()
        raise
    reporter.report()
    return ExportResult(
        path=output.keep,
        entries=worker.entries,
        rows=worker.rows,
        bytes=worker.bytes,
        clients=worker.clients,
        sha256=output.sha256,
    )
