"""Receiving a hunt's zip on the operator's machine, from the events of ``export_hunt`` (in
process or over the operator API): the command line and the console share it.

The bytes go to a temporary file beside the destination, are hashed as they arrive, and the file
is renamed into place only once the server's closing ``done`` event says the same size and
SHA-256; otherwise the temporary file is removed and the destination left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from velotui.durable_files import fsync_folder

PART_SUFFIX = ".part"


class ExportReceiveError(Exception):
    """The zip cannot be received or written here; the message is one line for the operator."""


@dataclass(frozen=True)
class ReceiveProgress:
    """How far an export has got, as the operator sees it."""

    clients_done: int
    clients_total: int
    rows: int  # rows in the zip so far (the server's count)
    bytes_received: int


@dataclass(frozen=True)
class ReceivedExport:
    """A zip received, checked and in place."""

    path: Path
    sha256: str
    bytes: int
    entries: int
    rows: int
    clients: int
    kept: str | None  # where the server also kept a copy, if it did


def local_destination(path: Path | str) -> Path:
    """``path`` made absolute (``~`` expanded), once it is checked that the zip may be written
    there: its folder exists, and it is new or an existing zip (replaced). Raises
    ExportReceiveError otherwise: never a folder, a database or any other file."""
    destination = Path(path).expanduser().absolute()
    if destination.is_dir():
        raise ExportReceiveError(f"{destination} is a folder: give the zip file's path")
    if not destination.parent.is_dir():
        raise ExportReceiveError(f"cannot write {destination}: there is no folder"
                                 f" {destination.parent}")
    if destination.exists() and not (destination.is_file() and zipfile.is_zipfile(destination)):
        raise ExportReceiveError(f"{destination} exists and is not a zip: give another name")
    return destination


class _PartFile:
    """The temporary file the zip is written to, hashed as it goes. Blocking methods."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        descriptor, name = tempfile.mkstemp(dir=destination.parent,
                                            prefix=f".{destination.name}.", suffix=PART_SUFFIX)
        self.path = Path(name)
        self._file: IO[bytes] | None = os.fdopen(descriptor, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def append(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def put_in_place(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self.path, self.destination)
        with contextlib.suppress(OSError):  # the zip is in place; the folder's sync is a bonus
            fsync_folder(self.destination.parent)

    def remove(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self.path.unlink()


async def receive_export(
    events: AsyncIterator[dict[str, Any]],
    destination: Path | str,
    progress: Callable[[ReceiveProgress], None] | None = None,
) -> ReceivedExport:
    """Write the zip that ``events`` (``export_hunt``'s) carry to ``destination`` on this
    machine; ``progress`` is called as progress events and chunks arrive. Returns what was
    received once it is in place.

    Raises ExportReceiveError when the destination cannot take it (``local_destination``), when
    a chunk is out of order, or when what arrived is not what the server says it sent (size or
    SHA-256); the server's own refusals (ServiceError) go through. In every failure, and on
    cancellation, the events are closed (the server stops) and ``destination`` is left as it
    was, with no temporary file beside it.
    """
    target = await asyncio.to_thread(local_destination, destination)
    try:
        part = await asyncio.to_thread(_PartFile, target)
    except OSError as error:
        raise ExportReceiveError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        try:
            done = await _receive(events, part, progress)
            await asyncio.to_thread(part.put_in_place)
        except OSError as error:
            raise ExportReceiveError(f"cannot write {target}: {error.strerror or error}"
                                     ) from None
    except BaseException:
        await asyncio.shield(asyncio.to_thread(part.remove))
        raise
    return ReceivedExport(path=target, sha256=done["sha256"], bytes=part.size,
                          entries=done["entries"], rows=done["rows"], clients=done["clients"],
                          kept=done.get("kept"))


async def _receive(events: AsyncIterator[dict[str, Any]], part: _PartFile,
                   progress: Callable[[ReceiveProgress], None] | None) -> dict[str, Any]:
    """Write the chunks to ``part``; the server's ``done`` event once what arrived matches it."""
    done: dict[str, Any] | None = None
    clients_done = clients_total = rows = 0
    async with contextlib.aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            kind = event.get("event")
            if kind == "chunk":
                if event.get("offset") != part.size:
                    raise ExportReceiveError(
                        f"the zip arrived out of order at byte {part.size}; nothing written"
                    )
                await asyncio.to_thread(part.append, event["data"])
            elif kind == "progress":
                clients_done = event["clients_done"]
                clients_total = event["clients_total"]
                rows = event["rows_written"]
            elif kind == "done":
                done = event
                continue
            else:
                continue
            if progress is not None:
                progress(ReceiveProgress(clients_done, clients_total, rows, part.size))
    if done is None:
        raise ExportReceiveError("the server ended the export without finishing it;"
                                 " nothing written")
    if done.get("bytes") != part.size:
        raise ExportReceiveError(f"the zip arrived incomplete ({part.size} of"
                                 f" {done.get('bytes')} bytes); nothing written")
    received = part.hash.hexdigest()
    if done.get("sha256") != received:
        raise ExportReceiveError(f"the zip received does not match the server's SHA-256"
                                 f" (sent {done.get('sha256')}, received {received});"
                                 f" nothing written")
    return done
