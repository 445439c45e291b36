"""Copying to the operator's clipboard: through the terminal (OSC 52), so it works over SSH and
inside tmux, where the machine running the console has no clipboard of its own to offer."""

from __future__ import annotations

import json
from typing import Any

from textual.app import App


def as_json(value: Any) -> str:
    """``value`` as one line of JSON; what JSON cannot hold (bytes, times) as its text."""
    return json.dumps(value, default=str, ensure_ascii=False)


def copy_json(app: App[Any], value: Any, what: str = "row") -> None:
    """Put ``value`` as JSON on the terminal's clipboard (Textual writes the OSC 52 sequence)
    and tell the operator what was copied: ``copied <what> (N characters)``."""
    text = as_json(value)
    app.copy_to_clipboard(text)
    app.notify(f"copied {what} ({len(text):,} characters)")
