"""Write a small file so that readers see the old contents or the new, never half of either.

The agent's config and state are rewritten in place; a crash or power cut in the middle of a plain
write would leave a truncated file, and the agent would start with no config or a forgotten hunt
timestamp. The agent cannot use the server's helper (it imports nothing from the server).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: written to a temporary file (created with ``mode``) in the
    same folder, fsynced, renamed over ``path``, and the folder fsynced. ``sync=False`` skips the
    fsyncs for a file whose loss in a power cut costs nothing (the rename still keeps readers from
    seeing half a file). Raises OSError when the folder is not writable."""
    path = Path(path)
    folder = path.parent
    # mkstemp creates the file 0600, so a secret is never readable by others, even briefly.
    descriptor, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            if hasattr(os, "fchmod"):
                os.fchmod(temp_file.fileno(), mode)
            temp_file.write(data)
            temp_file.flush()
            if sync:
                os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
    if sync and os.name == "posix":
        # The rename itself lives in the folder: make it durable too.
        folder_descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)
