"""Where a program keeps its data for the current user when no folder is given.

Shared by the server's datastore and the agent's state so both follow the same platform rules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_folder(app_folder_name: str) -> Path:
    """``$XDG_DATA_HOME/<name>`` or ``~/.local/share/<name>`` on Linux and other Unixes,
    ``~/Library/Application Support/<name>`` on macOS, ``%LOCALAPPDATA%\\<name>`` on Windows."""
    if sys.platform == "win32":
        local_app_data = os.environ.get("LOCALAPPDATA", "").strip()
        base = Path(local_app_data) if local_app_data else Path.home() / "AppData" / "Local"
        return base / app_folder_name
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / app_folder_name
    xdg_data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says a relative path is invalid and must be ignored.
    if xdg_data_home and Path(xdg_data_home).is_absolute():
        return Path(xdg_data_home) / app_folder_name
    return Path.home() / ".local" / "share" / app_folder_name
