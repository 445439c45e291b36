"""Read a JSON file an operator wrote, with an error that names the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in the file at ``path``. Raises ValueError starting ``"<what> <path>: "``
    when the file cannot be read, is not UTF-8 or is not JSON (with the line and column)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{what} {path}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{what} {path}: not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno})"
        ) from None
