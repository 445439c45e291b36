"""execve(): real programs run on this machine, cancelled, timed out and refused by config."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.config import AgentConfig
from agent.plugins import client_registry
from agent.plugins.execution import execve
from tests.test_client_plugins import make_scope, rows_of
from velotui.vql import collect
from velotui.vql.scope import DeadlineExceeded, QueryContext, Scope


def _stdout(rows: list[dict[str, Any]]) -> str:
    return "".join(row["Stdout"] for row in rows)


async def test_execve_runs_a_program_without_a_shell_and_ends_with_its_return_code() -> None:
    scope, logs = make_scope()
    rows = await rows_of(execve, scope, argv=["/bin/echo", "hello $HOME; world"])
    assert rows == [
        {"Stdout": "hello $HOME; world\n", "Stderr": "", "ReturnCode": 0, "Complete": False},
        {"Stdout": "", "Stderr": "", "ReturnCode": 0, "Complete": True},
    ]
    assert logs.errors() == []


async def test_execve_reports_a_failing_program_and_its_standard_error() -> None:
    scope, logs = make_scope()
    rows = await rows_of(execve, scope, argv=["sh", "-c", "echo oops >&2; exit 3"])
    assert [row["Stderr"] for row in rows if row["Stderr"]] == ["oops\n"]
    assert rows[-1] == {"Stdout": "", "Stderr": "", "ReturnCode": 3, "Complete": True}
    assert logs.errors() == []


async def test_execve_splits_standard_output_at_sep_into_rows() -> None:
    scope, _ = make_scope()
    rows = await rows_of(execve, scope, argv=["printf", "one\ntwo\nthree"], sep="\n")
    assert [row["Stdout"] for row in rows if not row["Complete"]] == ["one", "two", "three"]


async def test_execve_without_sep_gives_output_in_rows_of_at_most_length_bytes() -> None:
    scope, _ = make_scope()
    rows = await rows_of(execve, scope, argv=["sh", "-c", "head -c 2500 /dev/zero | tr '\\0' x"],
                         length=1000)
    chunks = [row["Stdout"] for row in rows if row["Stdout"]]
    assert "".join(chunks) == "x" * 2500
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 500]


async def test_execve_env_and_cwd_reach_the_program(tmp_path: Path) -> None:
    scope, _ = make_scope()
    rows = await rows_of(execve, scope, argv=["sh", "-c", 'echo "$MARK"; pwd'],
                         env={"MARK": "marked"}, cwd=str(tmp_path), sep="\n")
    assert [row["Stdout"] for row in rows if row["Stdout"]] == ["marked", str(tmp_path)]


async def test_execve_through_a_query_selects_stdout() -> None:
    rows = await collect("SELECT Stdout FROM execve(argv=['/bin/echo', 'a b'], sep='\\n') "
                         "WHERE Stdout", registry=client_registry())
    assert rows == [{"Stdout": "a b"}]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"argv": []}, "execve(): argv must be a non-empty list of strings, not []"),
        ({"argv": ["/no/such/program"]}, "execve(): cannot run /no/such/program: "
                                         "No such file or directory"),
        ({"argv": ["/bin/echo"], "length": 0}, "execve(): length must be at least 1, not 0"),
        ({"argv": ["/bin/echo"], "env": "X=1"},
         "execve(): env must be a dict of names to values, not 'X=1'"),
        ({"argv": ["/bin/echo"], "secret": "s"},
         "execve(): secret is not supported by this agent (no secrets service)"),
    ],
)
async def test_execve_bad_input_is_a_one_line_error_and_no_rows(args: dict[str, Any],
                                                                 error: str) -> None:
    scope, logs = make_scope()
    assert await rows_of(execve, scope, **args) == []
    assert logs.errors() == [error]


async def _started_shell(agen: Any) -> tuple[psutil.Process, psutil.Process]:
    """The shell (it printed its pid) and the sleep it started."""
    first = await agen.__anext__()
    shell = psutil.Process(int(first["Stdout"]))
    [sleeper] = [child for child in shell.children() if child.name() == "sleep"] or [None]
    while sleeper is None:  # the shell printed before it forked the sleep
        await asyncio.sleep(0.01)
        sleeper = next((c for c in shell.children() if c.name() == "sleep"), None)
    return shell, sleeper


def _gone(process: psutil.Process) -> bool:
    """Whether ``process`` ends (reaped, or a zombie): a SIGKILL lands a moment after kill()
    returns, so this waits for the kernel, up to a guard of 30 s (a process that was not
    killed sleeps for 1,000 s and fails it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


async def test_cancelling_the_query_kills_the_program_and_what_it_started() -> None:
    scope, _ = make_scope()
    agen = execve(scope, argv=["sh", "-c", "echo $$; sleep 1000; echo never"], sep="\n")
    shell, sleeper = await _started_shell(agen)
    task = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0)
    task.cancel()
    # A guard, not a timing: without the kill the program's exit would be awaited for ever.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    await agen.aclose()
    assert _gone(shell) and _gone(sleeper)


async def test_a_deadline_passing_while_the_program_is_silent_kills_it() -> None:
    passed = False

    def clock() -> float:
        return float("inf") if passed else time.monotonic()

    context = QueryContext(client_registry(), deadline=time.monotonic() + 3600, clock=clock)
    scope = Scope({}, context=context)
    agen = execve(scope, argv=["sh", "-c", "echo $$; sleep 1000"], sep="\n")
    shell, sleeper = await _started_shell(agen)
    passed = True
    with pytest.raises(DeadlineExceeded):
        await agen.__anext__()
    assert _gone(shell) and _gone(sleeper)


async def test_a_limit_stops_the_program() -> None:
    rows = await collect("SELECT Stdout FROM execve(argv=['sh', '-c', 'echo $$; sleep 1000'], "
                         "sep='\\n') LIMIT 1", registry=client_registry())
    try:
        shell = psutil.Process(int(rows[0]["Stdout"]))
    except psutil.NoSuchProcess:
        return  # killed and reaped
    assert _gone(shell)


async def test_prevent_execve_in_the_agent_config_refuses_to_run(tmp_path: Path) -> None:
    config = AgentConfig(server_url="wss://127.0.0.1:1/", enrolment_secret="s",
                         ca_pem="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    path = tmp_path / "agent.json"
    config.save(path)
    data = json.loads(path.read_text())
    data["prevent_execve"] = True
    path.write_text(json.dumps(data))
    loaded = AgentConfig.load(path)
    marker = tmp_path / "ran"
    scope, logs = make_scope(client_registry(prevent_execve=loaded.prevent_execve))
    assert await rows_of(execve, scope, argv=["touch", str(marker)]) == []
    assert logs.errors() == ["execve(): refused: this agent's config sets prevent_execve"]
    assert not marker.exists()


def test_prevent_execve_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prevent_execve must be true or false"):
        AgentConfig(server_url="wss://127.0.0.1:1/", enrolment_secret="s",
                    ca_pem="-----BEGIN CERTIFICATE-----\n", prevent_execve="yes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_real_agent_with_prevent_execve_refuses_and_reports_its_client_id(tmp_path: Path
                                                                            ) -> None:
    """The config file written by the server, with prevent_execve set, read by a real agent."""
    from tests.processes import (
        AgentProcess,
        ServerProcess,
        running,
        velotui,
        wait_for_clients,
        write_agent_config,
    )
    from velotui.server.datastore import Datastore

    datastore = tmp_path / "datastore"
    server = ServerProcess(datastore)
    Datastore.open(datastore)
    server.start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json",
                                "--prevent-execve")
    assert json.loads(config.read_text())["prevent_execve"] is True
    marker = tmp_path / "ran"
    agent = AgentProcess(config, tmp_path / "agent-state").start()
    with running(server, agent):
        [client] = wait_for_clients(datastore, 1)
        query = (f"SELECT * FROM execve(argv=['touch', '{marker}'])\n"
                 "SELECT client_info().ClientId AS Id FROM scope()")
        result = velotui("collect", "--datastore", str(datastore), client["client_id"], query)
    assert "execve(): refused: this agent's config sets prevent_execve" in result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"Id": client["client_id"]}]
    assert not marker.exists()
