"""The console in a real terminal: tests/tmux_smoke.py run as its own process, as an operator
would run `velotui` in tmux (skipped where tmux is missing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name("tmux_smoke.py")
# The script gives up by itself long before this (90 s per step); this only guards a hang.
TIMEOUT = 20 * 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None,
                       reason="tmux is not installed: the console's tmux smoke test needs it"),
]


def test_the_console_runs_a_hunt_in_tmux_resizes_and_quits_cleanly() -> None:
    # Its own process: a tmux server and the console of its own, and no terminal or standard
    # input needed from pytest (CI has neither).
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM: the script still kills its tmux session and processes
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"the tmux smoke script hung for {TIMEOUT} s:\n{output}")
    assert process.returncode == 0, f"the tmux smoke script failed:\n{output}"
