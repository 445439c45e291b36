"""The operator's own editor (``$EDITOR``, else ``vi``) on a piece of text, the console
suspended meanwhile: for a query longer than a form's field is comfortable for."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from textual.app import App, SuspendNotSupported

FALLBACK_EDITOR = "vi"


class EditorFailed(Exception):
    """The editor could not be run, or ended with an error; the message says which."""


def editor_command() -> list[str]:
    """``$EDITOR`` split as a shell would (it may carry options: ``code --wait``)."""
    return shlex.split(os.environ.get("EDITOR", "").strip() or FALLBACK_EDITOR)


def edit_text(app: App[object], text: str, suffix: str = ".txt") -> str:
    """``text`` as the operator left it in their editor, in a temporary file. Raises
    EditorFailed (the text is then theirs to keep as it was)."""
    command = editor_command()
    with tempfile.TemporaryDirectory(prefix="velotui-edit-") as folder:
        path = Path(folder) / f"edit{suffix}"
        path.write_text(text if text.endswith("\n") or not text else text + "\n")
        try:
            status = _run_suspended(app, [*command, str(path)])
        except OSError as error:
            raise EditorFailed(f"cannot run {command[0]}: {error.strerror or error}") from None
        if status != 0:
            raise EditorFailed(f"{command[0]} ended with status {status}: the text is unchanged")
        edited = path.read_text(errors="replace")
    # Editors end a file with a newline; the field never held one there.
    return edited[:-1] if edited.endswith("\n") and not text.endswith("\n") else edited


def _run_suspended(app: App[object], command: list[str]) -> int:
    try:
        with app.suspend():
            return subprocess.run(command, check=False).returncode
    except SuspendNotSupported:
        if not app.is_headless:
            raise OSError("this terminal cannot hand the screen over") from None
    # Headless (tests, no terminal to hand over): the editor runs as it is.
    return subprocess.run(command, check=False, stdin=subprocess.DEVNULL).returncode
