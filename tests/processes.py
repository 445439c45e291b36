"""Real processes for end-to-end tests: `velotui serve` and `velotui-agent`, started and stopped
by the test itself (nothing depends on a process started by hand)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
VELOTUI = str(BIN / "velotui")
VELOTUI_AGENT = str(BIN / "velotui-agent")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``condition`` until it returns something true; its value. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what or condition}")
        time.sleep(interval)


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it has not exited within 30 s."""
    if process is None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerProcess:
    """`velotui serve` on a fixed port, so it can be killed and restarted at the same address."""

    def __init__(self, datastore: Path, port: int | None = None, args: Sequence[str] = ()
                 ) -> None:
        self.datastore = datastore
        self.port = port or free_port()
        self.args = list(args)  # more options of `velotui serve`, at every start
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = datastore.parent / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def start(self, failpoints: str = "") -> ServerProcess:
        """Start `velotui serve`; ``failpoints`` arms VELOTUI_FAILPOINTS in it."""
        address_file = self.datastore / "server.json"
        with contextlib.suppress(FileNotFoundError):
            address_file.unlink()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        env = {key: value for key, value in os.environ.items() if key != "VELOTUI_FAILPOINTS"}
        if failpoints:
            env["VELOTUI_FAILPOINTS"] = failpoints
        self.process = subprocess.Popen(
            [VELOTUI, "serve", "--datastore", str(self.datastore), "--listen",
             f"127.0.0.1:{self.port}", *self.args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
        wait_for(lambda: self._listening(address_file), what="the server to listen")
        return self

    def died_at(self, failpoint: str, timeout: float = 90) -> None:
        """Wait until the server stopped dead at ``failpoint`` (armed with ``exit``)."""
        assert self.process is not None
        self.process.wait(timeout=timeout)
        assert self.process.returncode == 137, self.log_path.read_text()[-3000:]
        assert f"velotui failpoint {failpoint}: exit" in self.log_path.read_text()
        self.process = None

    def _listening(self, address_file: Path) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"velotui serve exited: {self.log_path.read_text()[-2000:]}")
        return address_file.exists() and json.loads(address_file.read_text())["url"] == self.url

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


class AgentProcess:
    """`velotui-agent` (optionally `--simulate N`) with its own state folder."""

    def __init__(self, config: Path, state: Path, *extra: str) -> None:
        self.config = config
        self.state = state
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = state.parent / f"{state.name}.log"

    def start(self) -> AgentProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            [VELOTUI_AGENT, "--config", str(self.config), "--state", str(self.state),
             *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


def velotui(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VELOTUI, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_agent_config(datastore: Path, url: str, path: Path, *labels: str) -> Path:
    """``velotui agent-config``; each of ``labels`` is a label, or an option (``--...``)."""
    label_args = [arg for label in labels
                  for arg in ((label,) if label.startswith("--") else ("--label", label))]
    result = velotui("agent-config", "--datastore", str(datastore), "--server-url", url,
                     "-o", str(path), *label_args)
    assert result.returncode == 0, result.stderr
    return path


def clients(datastore: Path) -> list[dict[str, Any]]:
    result = velotui("clients", "--datastore", str(datastore), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def wait_for_clients(datastore: Path, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    def online() -> list[dict[str, Any]] | None:
        known = [c for c in clients(datastore) if c["online"]]
        return known if len(known) >= count else None

    return wait_for(online, timeout=timeout, interval=0.2, what=f"{count} clients online")


@contextlib.contextmanager
def running(*processes: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for process in reversed(processes):
            process.stop()
