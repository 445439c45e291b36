"""A trace of every message an agent receives, one JSON line each: what the server sent this
endpoint, for a responder checking what ran there (and for tests that prove what never did)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from velotui.wire.protocol import Message


class FrameTrace:
    """Appends to ``path``; one trace may be shared by the agents of a simulated fleet."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - long-lived

    def record(self, client_id: str, message: Message) -> None:
        fields = {field.name: getattr(message, field.name)
                  for field in dataclasses.fields(message)}  # type: ignore[arg-type]
        line = {"time": time.time(), "client_id": client_id, "type": message.TYPE, **fields}
        self._file.write(json.dumps(line, default=_bytes_as_hex, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()


def _bytes_as_hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")
