"""Smoke test of the real console in a real terminal: tmux.

The Pilot tests drive the app inside Textual's test harness; this script runs the ``velotui``
console script as an operator would, in a detached tmux session of a fixed size, with a demo fleet
of three agents on a datastore in a temporary folder. It types a new hunt with ``tmux send-keys``
in bursts (text, Tabs and other keys in one send-keys, as a slow SSH link delivers them) and
checks each field got its own text, edits the query in ``$EDITOR`` (``ctrl+e``: a script standing
in for the editor, the console suspended meanwhile), reads the screen with ``tmux capture-pane``
until the hunt's row shows the three results, resizes the terminal to 80x24 and back, triages
the results at 80x24 (a filter typed in one burst with the ``/`` that opens it, a stack of a
column drilled into, a query run on the server), quits with ``q`` (answering the question a
running hunt asks), and checks that the console exited with status 0 and took its demo fleet
with it. It then starts the console twice more on the same
datastore and ends it with SIGTERM, then SIGHUP (a terminal gone away): status 0 each time,
nothing left running, the embedded server stopped.

    python tests/tmux_smoke.py [--velotui PATH]

Exits 0 on success; 1 with the reason and the last captured screen on failure; 2 when tmux or the
console script cannot be found. It uses a tmux server of its own (``tmux -L velotui-smoke-PID``),
so it never touches the user's tmux, and cleans up its session, processes and folder whatever
happens. tests/test_tmux_smoke.py runs it under pytest (skipped where tmux is missing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psutil

from velotui.server.datastore import SERVER_ADDRESS_NAME

T = TypeVar("T")

SIZE = (100, 30)
SMALL = (80, 24)  # what the console must stay usable at (issue 5, section 6)
FLEET = 3
STEP_TIMEOUT = 90.0  # per step: the demo fleet enrols and collects in a few seconds, CI is slower
POLL = 0.2
DESCRIPTION = "tmux smoke"
QUERY = "SELECT Hostname, OS FROM info()"
LIMIT = "7"  # the client limit, typed in a burst
EDITED = "-- seen in $EDITOR"  # what the stand-in editor adds to the query
# The operator's editor, for ctrl+e: it adds a line to the file it is given (and would show a
# full-screen program's output on the terminal the console handed over).
EDITOR_SCRIPT = """\
#!{python}
import pathlib, sys
path = pathlib.Path(sys.argv[1])
path.write_text(path.read_text() + {edited!r} + "\\n")
"""
SESSION = "console"

# Not for the console: NO_COLOR would drop its colours; COLORTERM would lift it above the 256
# colours it must be readable in; COLUMNS and LINES would fix its size whatever the terminal's
# (Textual believes them first), and they are in the environment of anything pytest starts,
# since importing readline exports them.
UNSET = ("NO_COLOR", "COLORTERM", "COLUMNS", "LINES")

TMUX_CONF = """\
set-option -g remain-on-exit on
set-option -g status off
set-option -g default-terminal xterm-256color
"""

_SCROLLBAR = re.compile("[\u2581-\u2588]+\\s*$")  # a vertical scrollbar's thumb, at a line's end
_BOX = re.compile("[\u2500-\u257f]")  # box drawing: the hunt panel's border beside the table


class SmokeFailure(Exception):
    """The console did not do what an operator would see it do."""


class Tmux:
    """A private tmux server with one session: the console."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env
        self.socket_path: Path | None = None

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args], stdin=subprocess.DEVNULL,
            capture_output=True, env=self.env, timeout=30,
        )
        if check and result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip()
            raise SmokeFailure(f"tmux {' '.join(args[:1])} failed: {error}")
        return result.stdout.decode("utf-8", errors="replace")

    def start(self, config: Path, size: tuple[int, int], command: list[str],
              status_file: Path) -> None:
        """Run ``command`` in the pane under a shell that writes its exit status to
        ``status_file``. tmux 3.3 sometimes leaves a dead pane's process unreaped (a zombie, its
        ``pane_dead_status`` empty for good), so how the console ended is not asked of tmux."""
        self.run("kill-server", check=False)  # a stale server of a crashed run with this pid
        status_file.unlink(missing_ok=True)
        wrapper = ["exec", "sh", "-c", '"$@"; echo "$?" > "$0"', str(status_file), *command]
        self.run("-f", str(config), "new-session", "-d", "-s", SESSION, "-x", str(size[0]),
                 "-y", str(size[1]), shlex.join(wrapper))
        self.socket_path = Path(self.show("#{socket_path}"))

    def show(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", SESSION, fmt).strip()

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", SESSION)

    def keys(self, *names: str) -> None:
        """Keys by tmux's names: Tab, F7, BSpace, Space, C-s, q."""
        self.run("send-keys", "-t", SESSION, *names)

    def text(self, text: str) -> None:
        self.run("send-keys", "-t", SESSION, "-l", text)

    def resize(self, size: tuple[int, int]) -> None:
        self.run("resize-window", "-t", SESSION, "-x", str(size[0]), "-y", str(size[1]))

    def kill(self) -> None:
        self.run("kill-server", check=False)
        if self.socket_path is not None:  # tmux leaves its socket behind
            self.socket_path.unlink(missing_ok=True)


# Reading the screen --------------------------------------------------------------------------


def field_text(screen: str, label: str) -> str | None:
    """The first line inside the input or editor under ``label`` (label, top border, text)."""
    lines = screen.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(label) and index + 2 < len(lines):
            inside = re.search("\u258a(.*?)\u258e", lines[index + 2])  # the tall border
            return inside.group(1).strip() if inside else None
    return None


def status_under(screen: str, label: str) -> str | None:
    """The status line under the editor below ``label`` (after the editor's bottom border); the
    scrollbar may follow it at the right edge."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(label)), None)
    if start is None:
        return None
    for index in range(start + 1, len(lines) - 1):
        if "\u2581\u2581\u2581" in lines[index]:  # the tall border's bottom
            return lines[index + 1].strip()
    return None


def status_above(screen: str, label: str) -> str | None:
    """The status line of the editor above ``label``: the last text before that label (the
    form's scrollbar, drawn at the right edge of any line, is not text)."""
    lines = [_SCROLLBAR.sub("", line).strip() for line in screen.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith(label)), None)
    if start is None:
        return None
    return next((line for line in reversed(lines[:start]) if line), None)


def hunt_rows(screen: str) -> dict[str, dict[str, str]]:
    """The hunts table as shown: each row's cells by column title, keyed by description.
    Cells are cut at the header's title positions (DataTable left-aligns both)."""
    lines = [_BOX.split(line, maxsplit=1)[0] for line in screen.splitlines()]
    header_at = next((i for i, line in enumerate(lines)
                      if re.match(r"\s*ID\s+State\b", line)), None)
    if header_at is None:
        return {}
    titles = [(m.start(), m.group()) for m in re.finditer(r"\S+", lines[header_at])]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[header_at + 1:]:
        if not line.strip():
            continue
        cells = {}
        for index, (start, title) in enumerate(titles):
            end = titles[index + 1][0] if index + 1 < len(titles) else len(line)
            cells[title] = line[start:end].strip()
        if cells.get("Description"):
            rows[cells["Description"]] = cells
    return rows


def table_after(screen: str, header: str) -> list[list[str]]:
    """The rows of the table whose header line holds ``header`` (a regular expression), up to
    the first blank line: each row's cells from the header's column on (what a modal covers
    is cut off), split where two spaces or more separate them."""
    lines = screen.splitlines()
    found = next(((i, m) for i, line in enumerate(lines) if (m := re.search(header, line))),
                 None)
    if found is None:
        return []
    start, match = found
    column = match.start() + len(match.group()) - len(match.group().lstrip())
    rows = []
    for line in lines[start + 1:]:
        cells = re.split("[\u2588\u258c\u258a\u258e]", line[column:])[0].strip()
        if not cells:
            break
        rows.append(re.split(r"\s{2,}", cells))
    return rows


def panel_counts(screen: str) -> dict[str, str]:
    """The hunt panel's large counts: a line of names over a line of numbers."""
    inside = [line.split("\u2502")[1] if line.count("\u2502") >= 2 else ""
              for line in screen.splitlines()]
    counts: dict[str, str] = {}
    for names, values in itertools.pairwise(inside):
        words, numbers = names.split(), values.split()
        if words and len(words) == len(numbers) and all(n.isdigit() for n in numbers) \
                and all(w.isalpha() for w in words):
            counts.update(zip(words, numbers, strict=True))
    return counts


def fits(screen: str, width: int) -> bool:
    """The hunt panel's box closes exactly at the right edge: the layout was redrawn for
    ``width`` (tmux only cuts old lines when a window shrinks, which leaves no corner there)."""
    lines = [line.rstrip() for line in screen.splitlines()]
    return any(len(line) == width and line.endswith("\u256e") for line in lines) and any(
        len(line) == width and line.endswith("\u256f") for line in lines)


# The run -------------------------------------------------------------------------------------


class Smoke:
    def __init__(self, velotui: Path, folder: Path) -> None:
        self.velotui = velotui
        self.folder = folder
        self.datastore = folder / "datastore"
        unset = {*UNSET, "TMUX", "TMUX_PANE"}  # and no link to a tmux this may run inside
        env = {name: value for name, value in os.environ.items() if name not in unset}
        self.tmux = Tmux(f"velotui-smoke-{os.getpid()}", env)
        self.screen = ""
        self.started = time.monotonic()
        self.server_pid: int | None = None
        self.wrapper_pid: int | None = None  # the shell in the pane that records the status
        self.status_file = folder / "console-status"

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {message}", flush=True)

    def fail(self, message: str) -> NoReturn:
        try:
            size = self.tmux.show("#{pane_width}x#{pane_height}")
        except SmokeFailure:
            size = "unknown"
        raise SmokeFailure(f"{message} (tmux pane {size})")

    def wait(self, what: str, check: Callable[[str], T | None],
             timeout: float | None = None) -> T:
        """Poll the screen until ``check`` returns something true; that value."""
        timeout = STEP_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            self.screen = self.tmux.capture()
            value = check(self.screen)
            if value:
                return value
            if self.tmux.show("#{pane_dead}") == "1":
                status = self.status_file.read_text().strip() if self.status_file.exists() \
                    else "unknown"
                self.fail(f"the console exited (status {status}) while waiting for {what}")
            if time.monotonic() > deadline:
                self.fail(f"gave up after {timeout:.0f} s waiting for {what}")
            time.sleep(POLL)

    def until(self, what: str, check: Callable[[], T | None],
              timeout: float | None = None) -> T:
        """Poll ``check`` (not the screen) until it returns something true."""
        timeout = STEP_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not (value := check()):
            if time.monotonic() > deadline:
                self.fail(f"gave up after {timeout:.0f} s waiting for {what}")
            time.sleep(POLL)
        return value

    def processes(self) -> list[psutil.Process]:
        """This run's processes: those naming its datastore, but for the tmux server (whose
        command line holds the console's)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if process.pid in (os.getpid(), self.server_pid, self.wrapper_pid):
                continue
            cmdline = process.info["cmdline"] or []
            if any(str(self.datastore) in part for part in cmdline):
                found.append(process)
        return found

    # Steps ---------------------------------------------------------------------------------

    def start_console(self) -> None:
        config = self.folder / "tmux.conf"
        config.write_text(TMUX_CONF)
        editor = self.folder / "editor"
        editor.write_text(EDITOR_SCRIPT.format(python=sys.executable, edited=EDITED))
        editor.chmod(0o755)
        self.tmux.start(config, SIZE, [
            "env", *(arg for name in UNSET for arg in ("-u", name)), "TERM=xterm-256color",
            f"EDITOR={editor}",
            str(self.velotui), "--demo", str(FLEET), "--datastore", str(self.datastore),
            "--listen", "127.0.0.1:0",
        ], self.status_file)
        self.server_pid = int(self.tmux.show("#{pid}"))
        self.wrapper_pid = int(self.tmux.show("#{pane_pid}"))

    def console_pid(self) -> int:
        """The console: the one child of the pane's shell."""
        def child() -> int | None:
            try:
                children = psutil.Process(self.wrapper_pid).children()
            except psutil.Error:
                return None
            return children[0].pid if len(children) == 1 else None

        return self.until("the console's process in the pane", child)

    def run(self) -> None:
        self.start_console()
        self.say(f"console started in tmux {SIZE[0]}x{SIZE[1]} (socket {self.tmux.socket})")
        self.check_environment(self.console_pid())

        online = f"{FLEET} of {FLEET} clients online"
        self.wait(f"'{online}' in the header", lambda s: online in s)
        fleet = [p for p in self.processes() if "--simulate" in (p.info["cmdline"] or [])]
        if not fleet:
            self.fail("no demo fleet process (velotui-agent --simulate) for this datastore")
        self.say(f"{online}; demo fleet is pid {fleet[0].pid}")

        self.create_hunt()
        self.say("hunt created; waiting for its results")

        def finished(screen: str) -> dict[str, str] | None:
            row = hunt_rows(screen).get(DESCRIPTION)
            return row if row and row.get("Res") == str(FLEET) else None

        row = self.wait(f"the hunt's row to show Res {FLEET}", finished)
        if row.get("Err") not in (None, "0"):
            self.fail(f"the hunt's row shows errors: {row}")
        self.wait(f"the hunt panel to show {FLEET} results",
                  lambda s: panel_counts(s).get("Results") == str(FLEET)
                  and row["ID"] in s)
        self.say(f"hunt {row['ID']} shows {FLEET} results in the table and the panel")

        self.resize_and_back(row["ID"])
        self.triage()
        self.quit()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self.restart_and_end_with(signum)

    def check_environment(self, pid: int) -> None:
        try:
            environ = psutil.Process(pid).environ()
        except psutil.Error:  # not readable on every platform: the env wrapper still holds
            return
        wrong = {name: environ[name] for name in UNSET if name in environ}
        if wrong or environ.get("TERM") != "xterm-256color":
            self.fail(f"the console's environment: TERM={environ.get('TERM')!r}, {wrong}")

    def create_hunt(self) -> None:
        """The form filled in by bursts: every key of one burst arrives in one read, and each
        must land where the keys before it left the focus (a Tab in a burst once was lost)."""
        self.tmux.keys("n")
        self.wait("the new hunt form",
                  lambda s: field_text(s, "Collection query") is not None and "Create" in s)
        # Description, Tab, query, in one send-keys.
        self.tmux.keys(DESCRIPTION, "Tab", QUERY)
        self.wait("the description and the query typed in one burst, each in its field",
                  lambda s: field_text(s, "Description") == DESCRIPTION
                  and field_text(s, "Collection query") == QUERY
                  and (status_under(s, "Collection query") or "").startswith(
                      "\u2713 valid VQL"))
        # ctrl+e: the query in $EDITOR, the console suspended, then back with what it saved.
        self.tmux.keys("C-e")
        self.wait("the query back from $EDITOR, the form redrawn",
                  lambda s: EDITED in s and field_text(s, "Collection query") == QUERY
                  and "Create" in s)
        # On past both conditions (the server-side one empty: every client) and the rate to the
        # client limit, typed over; then on past the other limits to "Start now", ticked.
        self.tmux.keys(*["Tab"] * 4, LIMIT, *["Tab"] * 5, "Space")
        # (The limit typed on the way is checked on the hunt created: the form has scrolled
        # to "Start now", and on a short pane the limit's field may be out of view.)
        self.wait("'Start now' ticked by the same burst",
                  lambda s: re.search(r"X\S?\s+Start now", s))
        self.tmux.keys("C-s")
        self.wait("the home screen with the new hunt", lambda s: DESCRIPTION in hunt_rows(s))
        hunt_id = hunt_rows(self.screen)[DESCRIPTION]["ID"]
        shown = self.hunt(hunt_id)
        wanted = {"description": DESCRIPTION, "query": f"{QUERY}\n{EDITED}", "limit": int(LIMIT),
                  "server_condition": "", "state": "running"}
        got = {key: shown.get(key) for key in wanted}
        if got != wanted:
            self.fail(f"the hunt created by bursts of keys is {got}, not {wanted}")

    def hunt(self, hunt_id: str) -> dict[str, Any]:
        """The hunt as the command line shows it (from the console's own server)."""
        result = subprocess.run(
            [str(self.velotui), "hunt", "show", hunt_id, "--json", "--datastore",
             str(self.datastore)], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            self.fail(f"velotui hunt show {hunt_id}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def resize_and_back(self, hunt_id: str) -> None:
        for width, height in (SMALL, SIZE):
            self.tmux.resize((width, height))

            def redrawn(screen: str, width: int = width, height: int = height) -> bool:
                row = hunt_rows(screen).get(DESCRIPTION)
                return (self.tmux.show("#{pane_width}x#{pane_height}") == f"{width}x{height}"
                        and len(screen.splitlines()) == height and fits(screen, width)
                        and row is not None and row["ID"] == hunt_id and "q Quit" in screen)

            self.wait(f"the console redrawn at {width}x{height}", redrawn)
            self.say(f"resized to {width}x{height}: the hunts table and panel are redrawn")
        self.wait(f"Res {FLEET} back in the table at {SIZE[0]}x{SIZE[1]}",
                  lambda s: hunt_rows(s).get(DESCRIPTION, {}).get("Res") == str(FLEET))

    def triage(self) -> None:
        """At 80x24: the hunt's results filtered by typing, stacked by a column and drilled
        into, then a query over them on the server (issue 11's triage, by keys)."""
        self.tmux.resize(SMALL)
        self.wait("the home screen at 80x24", lambda s: DESCRIPTION in hunt_rows(s)
                  and self.tmux.show("#{pane_width}") == str(SMALL[0]))
        self.tmux.keys("Enter")
        self.wait("the hunt's tabs", lambda s: "3 Results" in s and "5 Query" in s)
        self.tmux.keys("3")
        header = r"\s*ClientId\s+Fqdn\s+Hostname\s+OS\s+FlowId"
        rows = self.wait(f"the results tab with {FLEET} rows", lambda s: (
            f"rows 1-{FLEET} of {FLEET}" in s and len(table_after(s, header)) == FLEET
            and table_after(s, header)))
        hostname = rows[0][2]

        # A filter typed in one burst with the key that opens it.
        self.tmux.text(f"/{hostname}")
        self.wait(f"the results filtered to {hostname!r}", lambda s: "rows 1-1 of 1" in s
                  and [row[2] for row in table_after(s, header)] == [hostname])
        self.tmux.keys("Escape")
        self.wait("the filter cleared", lambda s: f"rows 1-{FLEET} of {FLEET}" in s)
        self.say(f"results at 80x24: / filtered them to {hostname}, esc cleared it")

        # Stack by OS (the fourth column), then enter on the most frequent value.
        self.tmux.keys("Right", "Right", "Right", "t")
        stack = self.wait("the stack of OS", lambda s: "Stack of OS" in s and table_after(
            s, r"\bValue\s+Rows\s+Clients"))
        value, count = stack[0][0], stack[0][1]
        if sum(int(row[1]) for row in stack) != FLEET:
            self.fail(f"the stack of OS does not count {FLEET} rows: {stack}")
        self.tmux.keys("Enter")
        self.wait(f"the results drilled into OS {value!r}", lambda s: (
            f"rows 1-{count} of {count}" in s
            and {row[3] for row in table_after(s, header)} == {value}))
        self.tmux.keys("Escape")
        self.wait("the drill-down cleared", lambda s: f"rows 1-{FLEET} of {FLEET}" in s)
        self.say(f"stack of OS: {value} on {count} of {FLEET}; enter drilled into it")

        # A query over the hunt's results, run on the server.
        self.tmux.keys("5")
        self.wait("the query tab", lambda s: "ctrl+r runs the query" in s)
        self.tmux.keys("i", "F7", "BSpace")
        self.tmux.text("SELECT OS, count() AS N FROM hunt_results() GROUP BY OS")
        self.tmux.keys("C-r")
        counted = self.wait("the query's answer", lambda s: table_after(s, r"\s*OS\s+N\s*$"))
        if sum(int(row[1]) for row in counted) != FLEET \
                or {row[0] for row in counted} != {row[3] for row in rows}:
            self.fail(f"the query counted {counted}, the results hold {rows}")
        self.say(f"query on the server: {counted}")

        for _ in range(4):  # the editor, then the screen
            if DESCRIPTION in hunt_rows(self.tmux.capture()):
                break
            self.tmux.keys("Escape")
            time.sleep(POLL)  # an esc too many on the home screen does nothing
        self.wait("the home screen again", lambda s: DESCRIPTION in hunt_rows(s))
        self.tmux.resize(SIZE)
        self.wait("the home screen at full size", lambda s: DESCRIPTION in hunt_rows(s)
                  and fits(s, SIZE[0]))

    def quit(self) -> None:
        # The hunt still runs on the embedded server: q asks first.
        self.tmux.keys("q")
        self.wait("the question before quitting", lambda s: "Quit velotui?" in s
                  and "1 hunt is running" in s)
        self.tmux.keys("y")
        self.until("the console to exit after q", lambda: self.tmux.show("#{pane_dead}") == "1")
        self.screen = self.tmux.capture()
        status = self.dead_status()
        if status != "0":
            self.fail(f"the console exited with status {status!r} after q")
        if "Traceback" in self.screen:
            self.fail("the console printed a traceback on its way out")
        self.say("q: the console exited with status 0")
        deadline = time.monotonic() + 30  # the console stops its fleet before it exits
        while left := self.processes():
            if time.monotonic() > deadline:
                self.fail("still running after the console exited: " + describe(left))
            time.sleep(POLL)
        self.say("no process of this run is left (console, demo fleet)")

    def dead_status(self) -> str:
        """The console's exit status, as the pane's shell wrote it once the console ended
        (128 + N: ended by signal N)."""
        def written() -> str | None:
            try:
                text = self.status_file.read_text()
            except FileNotFoundError:
                return None
            return text.strip() if text.endswith("\n") else None

        return self.until("the console's exit status", written)

    def restart_and_end_with(self, signum: signal.Signals) -> None:
        """The console again on the same datastore, ended by ``signum`` (SIGTERM from a service
        manager, SIGHUP from a terminal that went away): status 0, nothing left running, the
        embedded server stopped (its address taken back from the datastore)."""
        self.tmux.kill()
        self.start_console()
        online = f"{FLEET} of {FLEET} clients online"
        self.wait(f"'{online}' in the header again", lambda s: online in s)
        os.kill(self.console_pid(), signum)
        self.until(f"the console to exit after {signum.name}",
                   lambda: self.tmux.show("#{pane_dead}") == "1")
        status = self.dead_status()
        if status != "0":
            self.fail(f"the console exited with status {status!r} after {signum.name}")
        deadline = time.monotonic() + 30
        while left := self.processes():
            if time.monotonic() > deadline:
                self.fail(f"still running after {signum.name}: " + describe(left))
            time.sleep(POLL)
        if (self.datastore / SERVER_ADDRESS_NAME).exists():
            self.fail(f"the embedded server did not stop after {signum.name}: its address is"
                      " still in the datastore")
        self.say(f"{signum.name}: the console exited with status 0; nothing of it is left")

    def clean_up(self) -> None:
        self.tmux.kill()
        leftovers = self.processes()
        for process in leftovers:
            try:
                process.terminate()
            except psutil.Error:
                pass
        _gone, alive = psutil.wait_procs(leftovers, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)


def describe(processes: list[psutil.Process]) -> str:
    return "; ".join(f"pid {p.pid}: {' '.join(p.info['cmdline'] or [])}" for p in processes)


def fleet_log_tail(datastore: Path, lines: int = 15) -> str:
    log = datastore / "demo" / "fleet.log"
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def frame(screen: str) -> str:
    lines = screen.splitlines() or [""]
    width = max(len(line) for line in lines)
    edge = "+" + "-" * width + "+"
    return "\n".join([edge, *(f"|{line.ljust(width)}|" for line in lines), edge])


def _terminated(signum: int, _frame: Any) -> NoReturn:
    raise SmokeFailure(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(sys.executable).parent / "velotui"
    parser.add_argument("--velotui", type=Path,
                        default=default if default.exists() else shutil.which("velotui"),
                        help="the console script (default: the one beside this Python)")
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        print("tmux smoke: tmux is not installed", file=sys.stderr)
        return 2
    if args.velotui is None or not Path(args.velotui).exists():
        print("tmux smoke: the velotui console script was not found (--velotui)", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _terminated)  # a killed run still cleans up after itself
    folder = Path(tempfile.mkdtemp(prefix="velotui-smoke-"))
    smoke = Smoke(Path(args.velotui).resolve(), folder)
    try:
        smoke.run()
    except (SmokeFailure, subprocess.TimeoutExpired, KeyboardInterrupt) as error:
        print(f"tmux smoke: FAILED: {error or type(error).__name__}", file=sys.stderr)
        if left := describe(smoke.processes()):
            print(f"processes of this run still there: {left}", file=sys.stderr)
        print(f"last captured screen:\n{frame(smoke.screen)}", file=sys.stderr)
        if tail := fleet_log_tail(smoke.datastore):
            print(f"end of the demo fleet's log:\n{tail}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
        smoke.clean_up()
        shutil.rmtree(folder, ignore_errors=True)
    smoke.say("tmux smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
