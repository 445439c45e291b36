"""The server's own log, ``<datastore>/logs/server.log``: safe to read, bounded, private.

Agents choose much of what the server logs (host names, flow IDs, refusal reasons quote their
frames), so every record is escaped as it is formatted, whatever the call site: control
characters, line breaks and the characters that reorder text on a terminal become visible escapes
(``\\n``, ``\\x1b``, ``\\u202e``), and one record is one line. A traceback keeps its lines, each
indented, so a line that starts at the first column is always the start of a record. The file
rotates at ``MAX_LOG_BYTES`` keeping ``LOG_BACKUPS`` old files, and every one of them is readable by
the server's user only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

LOG_FILE_NAME = "server.log"
# 10 MiB x (1 + 5 files): weeks of a busy server's warnings, and a bound on what a flood of
# hostile connections (each refusal is a line) can take of the disk.
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PRIVATE_FILE_MODE = 0o600
TRACEBACK_INDENT = "    "

# C0 and C1 controls and DEL; the Unicode line and paragraph separators; the marks and
# overrides that change the direction text is shown in; lone surrogates (not UTF-8 at all).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_EXCEPT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED.get(character)
    if named is not None:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_log_text(text: str) -> str:
    """``text`` with every control character, line break and direction mark written as a
    visible escape; text without them comes back unchanged."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_one, text)


def _indented_block(text: str) -> str:
    """A multi-line block (a traceback) escaped line by line, each line indented."""
    escaped = _UNSAFE_EXCEPT_NEWLINE.sub(_escape_one, text)
    return "\n".join(TRACEBACK_INDENT + line for line in escaped.split("\n"))


class EscapingFormatter(logging.Formatter):
    """Formats each record as one escaped line; a traceback follows on indented lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_log_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented_block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented_block(super().formatStack(stack_info))


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A rotating log whose files (the current one and every rotation) are mode 0600, whatever
    the umask, and also when an older file was more open."""

    def _open(self) -> Any:
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                             PRIVATE_FILE_MODE)
        if os.name == "posix":
            os.fchmod(descriptor, PRIVATE_FILE_MODE)
        return open(descriptor, "a", encoding=self.encoding, errors=self.errors)


def server_log_handlers(logs_dir: Path, to_stderr: bool = True) -> list[logging.Handler]:
    """Handlers for ``velotui serve``: standard error (unless not ``to_stderr``) and the
    rotating ``server.log`` in ``logs_dir``, both escaping every record. Raises OSError when the
    file cannot be opened."""
    formatter = EscapingFormatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [
        PrivateRotatingFileHandler(logs_dir / LOG_FILE_NAME, maxBytes=MAX_LOG_BYTES,
                                   backupCount=LOG_BACKUPS, encoding="utf-8"),
    ]
    if to_stderr:
        handlers.insert(0, logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers
