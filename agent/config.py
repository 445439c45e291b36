"""The agent's config file: where the server is (one URL, or several frontends to fail over
between), which CA to trust, how to enrol, which labels, and how much unacknowledged data the
agent may keep on disk.

The server writes it (``velotui agent-config`` calls ``AgentConfig(...).save(path)``); the agent
reads it with ``AgentConfig.load(path)``. It is JSON, holds the enrolment secret, and so is
written with mode 0600.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.json_file import read_json_file
from agent.outbox import DEFAULT_MAX_BYTES as DEFAULT_OUTBOX_MAX_BYTES
from velotui.durable_files import write_file_atomically
from velotui.wire.protocol import AGENT_PATH

CONFIG_FILE_MODE = 0o600
MIN_BACKOFF_CAP = 0.5  # the backoff's base delay: a smaller cap would make it meaningless
# An outbox smaller than one full message would refuse flows at their first big batch.
MIN_OUTBOX_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class AgentConfig:
    """What an agent needs to reach and trust its server.

    ``server_urls`` lists every server (frontend) the agent may use; ``server_url`` is the first
    of them, kept so that an agent older than the list still finds a server. Either may be given
    alone: the other is filled in. Raises ValueError on construction when a field is missing its
    meaning (see ``check``).
    """

    server_url: str
    ca_pem: str
    enrolment_secret: str
    labels: list[str] = field(default_factory=list)
    poll_interval: float = 60.0
    max_backoff: float = 60.0
    # Bytes of messages not yet acknowledged by the server that the agent keeps on disk.
    outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES
    # True: the execve() plugin refuses to run programs on this host (as Velociraptor's setting).
    prevent_execve: bool = False
    # Several frontends on one database: the agent picks one at random and fails over.
    server_urls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The server's datastore holds the CA as bytes; the file holds text.
        if isinstance(self.ca_pem, bytes | bytearray):
            self.ca_pem = bytes(self.ca_pem).decode("ascii", errors="replace")
        if isinstance(self.labels, tuple):
            self.labels = list(self.labels)
        if isinstance(self.server_urls, tuple):
            self.server_urls = list(self.server_urls)
        if isinstance(self.server_urls, list) and isinstance(self.server_url, str):
            if not self.server_urls and self.server_url:
                self.server_urls = [self.server_url]
            elif self.server_urls and not self.server_url and isinstance(self.server_urls[0], str):
                self.server_url = self.server_urls[0]
            self.server_urls = list(dict.fromkeys(self.server_urls))
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first field that is wrong, and how."""
        if not isinstance(self.server_urls, list) or not self.server_urls:
            raise ValueError("server_urls must be a list of wss:// URLs")
        for url in self.server_urls:
            _check_server_url("server_urls", url)
        _check_server_url("server_url", self.server_url)
        if agent_endpoint(self.server_url) not in self.connect_urls:
            # Older agents read only server_url: it must be one of the servers listed.
            raise ValueError(f"server_url {self.server_url!r} is not one of server_urls")
        if not isinstance(self.ca_pem, str) or "-----BEGIN CERTIFICATE-----" not in self.ca_pem:
            raise ValueError("ca_pem must hold the server's CA certificate in PEM form")
        if not isinstance(self.enrolment_secret, str):
            raise ValueError("enrolment_secret must be a string")
        if not isinstance(self.labels, list) or not all(
            isinstance(label, str) for label in self.labels
        ):
            raise ValueError("labels must be a list of strings")
        for name in ("poll_interval", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")
        if self.max_backoff < MIN_BACKOFF_CAP:
            raise ValueError(f"max_backoff must be at least {MIN_BACKOFF_CAP} seconds")
        if not isinstance(self.prevent_execve, bool):
            raise ValueError("prevent_execve must be true or false")
        value = self.outbox_max_bytes
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("outbox_max_bytes must be a whole number of bytes")
        if value < MIN_OUTBOX_MAX_BYTES:
            raise ValueError(
                f"outbox_max_bytes must be at least {MIN_OUTBOX_MAX_BYTES} bytes, not {value}"
            )

    @property
    def connect_url(self) -> str:
        """The URL to connect to: ``server_url``, with the agent endpoint's path if it has none."""
        return agent_endpoint(self.server_url)

    @property
    def connect_urls(self) -> list[str]:
        """Every server's URL to connect to (``server_urls``, each with the agent endpoint's
        path if it has none), in the config's order, without repeats."""
        return list(dict.fromkeys(agent_endpoint(url) for url in self.server_urls))

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """The config in the JSON file at ``path``.

        Unknown keys are ignored, so a newer server's config still loads. Raises ValueError naming
        the file and the problem when it cannot be read, is not a JSON object, lacks a field or
        has a wrong one.
        """
        data: Any = read_json_file(path, "agent config")
        if not isinstance(data, dict):
            raise ValueError(f"agent config {path}: expected a JSON object")
        missing = [name for name in _REQUIRED_FIELDS if name not in data]
        if "server_url" not in data and "server_urls" not in data:
            missing.insert(0, "server_url")
        if missing:
            raise ValueError(f"agent config {path}: missing {', '.join(missing)}")
        known = {name: data[name] for name in _FIELD_NAMES if name in data}
        known.setdefault("server_url", "")  # filled in from server_urls
        try:
            return cls(**known)
        except ValueError as error:
            raise ValueError(f"agent config {path}: {error}") from None

    def save(self, path: str | Path) -> None:
        """Write this config to ``path`` as JSON, atomically and with mode 0600 (it holds the
        enrolment secret). Raises ValueError for a bad field, OSError when it cannot be written."""
        self.check()
        text = json.dumps(asdict(self), indent=2) + "\n"
        write_file_atomically(Path(path), text.encode("utf-8"), CONFIG_FILE_MODE)


def agent_endpoint(url: str) -> str:
    """``url`` with the agent endpoint's path when it has none."""
    parts = urlsplit(url.strip())
    if parts.path in ("", "/"):
        parts = parts._replace(path=AGENT_PATH)
    return urlunsplit(parts)


def _check_server_url(name: str, url: Any) -> None:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{name} must be a wss:// URL")
    parts = urlsplit(url.strip())
    if parts.scheme != "wss":
        # The pinned CA is the agent's only trust: plain ws:// would throw it away.
        raise ValueError(f"{name} must start with wss://, not {url!r}")
    try:
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{name} has a bad port: {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"{name} names no host: {url!r}")


_REQUIRED_FIELDS = ("ca_pem", "enrolment_secret")
_FIELD_NAMES = (
    "server_url",
    "server_urls",
    "ca_pem",
    "enrolment_secret",
    "labels",
    "poll_interval",
    "max_backoff",
    "outbox_max_bytes",
    "prevent_execve",
)
