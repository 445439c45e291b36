"""Write a small file so that readers see the old contents or the new, never half of either.

Config, state, keys and certificates are rewritten in place; a crash or power cut in the middle
of a plain write would leave a truncated file. Shared by the server's datastore and the agent.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_file_pattern(path: Path) -> str:
    """A glob (relative to ``path``'s folder) matching temporary files a crash left behind."""
    return f".{path.name}.*{TEMP_SUFFIX}"


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: written to a temporary file (created with ``mode``) in the
    same folder, since a rename is atomic only within one file system, fsynced, renamed over
    ``path``, and the folder fsynced. ``sync=False`` skips the fsyncs for a file whose loss in a
    power cut costs nothing (the rename still keeps readers from seeing half a file). Raises
    OSError when the folder is not writable."""
    path = Path(path)
    folder = path.parent
    # mkstemp creates the file 0600, so a secret is never readable by others, even briefly.
    descriptor, temp_name = tempfile.mkstemp(
        dir=folder, prefix=f".{path.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            if hasattr(os, "fchmod"):
                os.fchmod(temp_file.fileno(), mode)
            temp_file.write(data)
            temp_file.flush()
            if sync:
                os.fsync(temp_file.fileno())
        if not hasattr(os, "fchmod"):
            os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    if sync:
        fsync_folder(folder)


def fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename into it) durable."""
    # The rename itself is durable only once the folder's entry is on disk (POSIX only; Windows
    # cannot open a folder for fsync).
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
