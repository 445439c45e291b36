"""The agent's state folder: its key (identity), the newest hunt it has been checked for, and its
outbox (``outbox.sqlite``, see ``agent.outbox``: unacknowledged messages and unfinished flows).

Losing ``state.json`` is harmless (the agent is checked for old hunts again and the server, which
remembers who it checked, does not run them twice); losing ``agent.key`` makes a new client. So a
damaged ``state.json`` is reset with a warning, while a damaged key is an error (see identity).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.identity import AgentIdentity
from velotui.data_folders import user_data_folder
from velotui.durable_files import write_file_atomically

APP_FOLDER_NAME = "velotui-agent"
STATE_FILE_NAME = "state.json"
OUTBOX_FILE_NAME = "outbox.sqlite"

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """The per-user data folder used when ``--state`` is not given: ``$XDG_DATA_HOME/velotui-agent``
    or ``~/.local/share/velotui-agent`` on Linux and other Unixes, ``~/Library/Application
    Support/velotui-agent`` on macOS, ``%LOCALAPPDATA%\\velotui-agent`` on Windows."""
    return user_data_folder(APP_FOLDER_NAME)


class AgentState:
    """One agent's state folder: ``identity`` and ``last_hunt_timestamp``."""

    def __init__(self, folder: Path, identity: AgentIdentity, last_hunt_timestamp: int) -> None:
        self.folder = folder
        self.identity = identity
        self._last_hunt_timestamp = last_hunt_timestamp

    @classmethod
    def open(cls, folder: str | Path) -> AgentState:
        """The state kept in ``folder``, which is created (mode 0700) with a new key if needed.

        Blocking. Raises ValueError for an unreadable key, OSError when the folder cannot be
        created or written.
        """
        folder = Path(folder).expanduser().absolute()
        identity = AgentIdentity.load_or_create(folder)
        return cls(folder, identity, _read_last_hunt_timestamp(folder / STATE_FILE_NAME))

    @property
    def state_file(self) -> Path:
        return self.folder / STATE_FILE_NAME

    @property
    def outbox_file(self) -> Path:
        return self.folder / OUTBOX_FILE_NAME

    @property
    def last_hunt_timestamp(self) -> int:
        """The newest hunt start this agent has been checked for (0: none yet)."""
        return self._last_hunt_timestamp

    def record_hunt_checkpoint(self, timestamp: int) -> bool:
        """Remember ``timestamp`` when it is newer than the one kept; True when it was written.

        Blocking (it writes a file): call it in a thread from async code. Raises OSError when the
        file cannot be written; the timestamp in memory then stays the old one.
        """
        if timestamp <= self._last_hunt_timestamp:
            return False  # an old checkpoint must never move the agent back
        text = json.dumps({"last_hunt_timestamp": timestamp}) + "\n"
        # Not synced: a checkpoint lost in a power cut only makes the server look again, and it
        # records every check itself; syncing thousands of simulated agents' files would stall
        # the fleet for seconds at every hunt start.
        write_file_atomically(self.state_file, text.encode("utf-8"), 0o600, sync=False)
        self._last_hunt_timestamp = timestamp
        return True


def _read_last_hunt_timestamp(path: Path) -> int:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s is unreadable (%s); starting from no hunt checkpoint", path, error)
        return 0
    value = data.get("last_hunt_timestamp") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        log.warning("%s holds no valid last_hunt_timestamp; starting from none", path)
        return 0
    return value
