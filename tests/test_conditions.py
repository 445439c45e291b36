"""The hidden server-side condition and the estimate: what it may call, its time budget, the
reasons it gives when it cannot judge a client, the row cap, and that judging and estimating
never hold up the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console_driver import console, ready, until
from tests.console_seed import seed
from tests.fleet import SEED_FACTS, SEED_SERVER_CONDITION, Fleet
from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for_clients,
    write_agent_config,
)
from velotui.screens.new_hunt import NewHuntScreen
from velotui.server import conditions
from velotui.server.clients import ClientRecord
from velotui.server.conditions import (
    ALLOWED_BUILTINS,
    CONDITION_BUDGET,
    MAX_CONDITION_ROWS,
    REFUSED_BUILTINS,
    Judgement,
    ServerCondition,
    estimate,
    server_registry,
)
from velotui.server.datastore import Datastore
from velotui.server.server import Server
from velotui.vql import Scope, builtins_registry
from velotui.widgets.vql_editor import VQLEditor

DEFAULT_CLIENT_CONDITION = (
    "SELECT OS, Architecture, Fqdn, Platform, config.Client_labels AS Labels FROM info()"
)
COLUMNS = "OS, Architecture, Fqdn, Platform, Labels"
ROWS = [{"OS": "linux", "Architecture": "amd64", "Fqdn": "web1.corp.example",
         "Platform": "ubuntu", "Labels": ["PROD"]}]
CLIENT = {"ClientId": "C.0000000000000001", "Labels": ["Finance"], "FirstSeen": 1.0,
          "LastSeen": 2.0}
# Never finishes within any budget: a hundred million rows, none of them kept.
ENDLESS = "SELECT * FROM range(end=100000000) WHERE _value < 0"


class Ticker:
    """Counts turns of the event loop: a task that yields back at every turn, so it ticks
    whenever the loop is free to run anything else."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def client_record(index: int, **facts: Any) -> ClientRecord:
    defaults = {"OS": "linux" if index % 3 else "windows", "Architecture": "amd64",
                "Fqdn": f"{'web' if index % 2 else 'db'}{index}.corp.example",
                "Platform": "ubuntu", "Hostname": f"host{index}"}
    return ClientRecord(client_id=f"C.{index:016x}", public_key=b"", first_seen=1.0,
                        last_seen=2.0, facts={**defaults, **facts},
                        agent_labels=["PROD"] if index % 5 else [], operator_labels=[])


async def judge(condition: str, rows: list[dict[str, Any]] | None = None,
                **options: Any) -> Judgement:
    return await ServerCondition(condition, **options).judge(ROWS if rows is None else rows,
                                                             CLIENT)


# What the condition may call ---------------------------------------------------------------------


def test_every_built_in_is_either_allowed_or_refused() -> None:
    # A built-in added to the engine must be judged here before a condition can call it.
    builtins = builtins_registry()
    names = {c.name for c in builtins.functions()} | {c.name for c in builtins.plugins()}
    assert names == ALLOWED_BUILTINS | set(REFUSED_BUILTINS)
    assert not ALLOWED_BUILTINS & set(REFUSED_BUILTINS)
    restricted = server_registry()
    for name in REFUSED_BUILTINS:
        assert restricted.lookup_function(name) is None
        assert restricted.lookup_plugin(name) is None


async def test_sleep_is_refused_as_an_unknown_function_named_in_the_judgement() -> None:
    # A sleep of an hour would hold the client, and the budget, for an hour if it ran.
    judgement = await judge("SELECT * FROM rows WHERE sleep(time=3600)")
    assert judgement == Judgement(
        False, "unknown function sleep(): the server-side condition may not call it (it waits)")


@pytest.mark.parametrize("name", sorted(REFUSED_BUILTINS))
async def test_every_refused_built_in_is_named_in_the_judgement(name: str) -> None:
    judgement = await judge(f"SELECT * FROM rows WHERE {name}()")
    assert not judgement.matched
    assert judgement.error is not None
    assert judgement.error.startswith(f"unknown function {name}()")


async def test_an_agent_plugin_is_an_unknown_plugin() -> None:
    judgement = await judge("SELECT * FROM pslist()")
    assert judgement == Judgement(
        False, "unknown plugin pslist() (it runs on the server, not the agent)")


# Reasons -----------------------------------------------------------------------------------------


async def test_a_normal_condition_matches_or_not_without_error() -> None:
    matching = "SELECT * FROM rows WHERE Fqdn =~ '^web' AND 'PROD' IN Labels"
    assert await judge(matching) == Judgement(True)
    assert await judge("SELECT * FROM rows WHERE Fqdn =~ '^db'") == Judgement(False)
    # The trusted client variable is there too.
    assert await judge("SELECT * FROM rows WHERE 'Finance' IN client.Labels") == Judgement(True)
    # Without a server-side condition, a client matches when its condition returned a row.
    assert await judge("", ROWS) == Judgement(True)
    assert await judge("", []) == Judgement(False)


async def test_an_unknown_column_is_named_with_the_columns_there_are() -> None:
    judgement = await judge("SELECT * FROM rows WHERE Hostname =~ 'web'")
    assert judgement == Judgement(
        False, f"Hostname is not a column of the client condition's rows: {COLUMNS}")


async def test_a_client_field_written_as_a_column_is_pointed_at_client() -> None:
    judgement = await judge("SELECT * FROM rows WHERE ClientId = 'C.0000000000000001'")
    assert judgement == Judgement(
        False, f"ClientId is not a column of the client condition's rows: {COLUMNS}"
               " (did you mean client.ClientId?)")


async def test_a_column_only_some_rows_have_is_null_in_the_others_not_an_error() -> None:
    rows = [{"Name": "a", "Extra": 1}, {"Name": "b"}]
    assert await judge("SELECT * FROM rows WHERE Extra = 1", rows) == Judgement(True)
    assert await judge("SELECT * FROM rows WHERE Extra = 2", rows) == Judgement(False)


async def test_a_vql_runtime_error_is_the_reason() -> None:
    judgement = await judge("SELECT * FROM rows WHERE regex_replace(source=Fqdn, re='(') ")
    assert not judgement.matched
    assert judgement.error is not None
    assert judgement.error.startswith(
        "the server-side condition failed: regex_replace(): invalid re '('")
    assert "\n" not in judgement.error


async def test_a_misspelt_source_is_named() -> None:
    judgement = await judge("SELECT * FROM row")
    assert judgement == Judgement(False, "FROM row: no such variable or plugin (the server-side"
                                         " condition knows rows, client and its own LETs)")


# The row cap -------------------------------------------------------------------------------------


async def test_more_rows_than_the_cap_is_an_error_and_the_cap_itself_is_judged() -> None:
    at_cap = [dict(ROWS[0], Index=i) for i in range(MAX_CONDITION_ROWS)]
    condition = "SELECT * FROM rows WHERE Index = 999"
    assert await judge(condition, at_cap) == Judgement(True)
    over = [*at_cap, dict(ROWS[0], Index=MAX_CONDITION_ROWS)]
    expected = Judgement(False, "the client condition returned more than 1,000 rows")
    assert await judge(condition, over) == expected
    assert await judge("", over) == expected


# The budget --------------------------------------------------------------------------------------


async def test_a_long_condition_is_cut_at_its_budget_while_the_loop_keeps_turning() -> None:
    async with Ticker() as ticker:
        before = ticker.ticks
        judgement = await judge(ENDLESS)
        turns_while_judging = ticker.ticks - before
    assert judgement == Judgement(
        False, f"the server-side condition ran longer than its budget of"
               f" {CONDITION_BUDGET * 1000:.0f} ms")
    assert turns_while_judging >= 1


async def test_the_budget_can_be_set_per_condition() -> None:
    judgement = await judge(ENDLESS, budget=0.01)
    assert judgement == Judgement(
        False, "the server-side condition ran longer than its budget of 10 ms")


class Stall:
    """stall(): holds the condition worker until released, standing for work the engine cannot
    interrupt (it checks no deadline)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.registry = server_registry().child()
        self.registry.function(self.stall)

    def stall(self, scope: Scope) -> bool:
        self.released.wait(30)
        return True

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def stall() -> Iterator[Stall]:
    held = Stall()
    try:
        yield held
    finally:
        held.release()


STALLING = "SELECT * FROM rows WHERE stall()"


async def test_a_caller_does_not_wait_for_a_condition_that_ignores_its_budget(
        stall: Stall) -> None:
    judgement = await judge(STALLING, registry=stall.registry, budget=0.01)
    assert judgement == Judgement(False, "the server-side condition did not finish within"
                                         f" {(0.01 + conditions.CONDITION_SLACK) * 1000:.0f} ms")


async def test_time_queued_behind_another_judgement_is_not_counted_against_the_budget(
        stall: Stall) -> None:
    # The stalled judgement's caller gives up after its budget and slack; the one queued behind
    # it, allowed less, has by then waited longer than that for its turn.
    stalled = asyncio.create_task(judge(STALLING, registry=stall.registry, budget=0.05))
    queued = asyncio.create_task(judge("SELECT * FROM rows", budget=0.01))
    assert (await stalled).error == ("the server-side condition did not finish within"
                                     f" {(0.05 + conditions.CONDITION_SLACK) * 1000:.0f} ms")
    assert not queued.done()
    stall.release()
    assert await queued == Judgement(True)


async def test_time_the_worker_spends_off_a_core_is_not_counted_against_the_budget() -> None:
    # A busy server: the worker thread waits for the GIL or a core, its clock runs on while its
    # CPU time stands still. Here it is held off for 400 ms, four times the budget, using none.
    # The rows after it are many, so the engine comes back to the event loop afterwards.
    registry = server_registry().child()
    calls = []

    def descheduled(scope: Scope) -> bool:
        if not calls:
            time.sleep(0.4)
        calls.append(1)
        return True

    registry.function(descheduled)
    judgement = await judge("SELECT * FROM range(end=5000) WHERE descheduled()",
                            registry=registry, budget=0.1)
    assert judgement == Judgement(True)
    assert len(calls) == 5000


async def test_a_judgement_that_never_gets_its_turn_is_an_error(
        stall: Stall, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conditions, "CONDITION_QUEUE_LIMIT", 0.1)
    stalled = asyncio.create_task(judge(STALLING, registry=stall.registry))
    await asyncio.sleep(0)  # the stalled judgement is handed to the worker first
    queued = await judge("SELECT * FROM rows")
    assert queued == Judgement(False, "the server-side condition was not judged: the condition"
                                      " worker was busy for 0.1 s")
    stall.release()
    await stalled


# Estimates ---------------------------------------------------------------------------------------


async def test_the_estimate_reports_errors_and_counts_the_clients_they_hit() -> None:
    clients = [client_record(i) for i in range(25)]
    result = await estimate(clients, DEFAULT_CLIENT_CONDITION,
                            "SELECT * FROM rows WHERE Hostname =~ 'web'")
    assert result.describe() == {
        "matched": 0, "total": 25, "undetermined": 0, "errored": 25,
        "errors": [f"Hostname is not a column of the client condition's rows: {COLUMNS}"]}


async def test_the_estimate_counts_matches_without_errors() -> None:
    clients = [client_record(i) for i in range(30)]
    result = await estimate(clients, DEFAULT_CLIENT_CONDITION,
                            "SELECT * FROM rows WHERE Fqdn =~ '^web' AND 'PROD' IN Labels")
    expected = sum(1 for i in range(30) if i % 2 and i % 5)
    assert result.describe() == {"matched": expected, "total": 30, "undetermined": 0,
                                 "errored": 0, "errors": []}


async def test_the_estimate_neither_sleeps_nor_loops_on_the_client_condition() -> None:
    # The client-side condition runs on the server over last known facts: what it calls that
    # only an agent has makes the client undetermined, and its budget holds as well.
    clients = [client_record(i) for i in range(3)]
    slept = await estimate(clients, "SELECT * FROM info() WHERE sleep(time=3600)", "")
    assert slept.describe() == {"matched": 0, "total": 3, "undetermined": 3, "errored": 0,
                                "errors": []}
    looped = await estimate(clients, ENDLESS, "")
    assert looped.undetermined == 3
    assert looped.errors == [f"the client-side condition ran longer than"
                             f" {CONDITION_BUDGET * 1000:.0f} ms over a client's last known facts"]


async def test_the_estimate_stops_at_its_time_limit() -> None:
    clients = [client_record(i) for i in range(5)]
    result = await estimate(clients, DEFAULT_CLIENT_CONDITION, "", time_limit=0)
    assert result.describe() == {
        "matched": 0, "total": 5, "undetermined": 5, "errored": 0,
        "errors": ["the estimate stopped after 0 s; 5 clients were not judged"]}


async def test_the_estimate_of_ten_thousand_clients_lets_the_loop_turn() -> None:
    clients = [client_record(i) for i in range(10_000)]
    async with Ticker() as ticker:
        before = ticker.ticks
        result = await estimate(clients, DEFAULT_CLIENT_CONDITION, SEED_SERVER_CONDITION)
        turns_while_estimating = ticker.ticks - before
    assert result.total == 10_000 and result.errored == 0
    assert turns_while_estimating >= 1


async def test_the_operator_api_estimate_reports_an_unknown_column(server: Server,
                                                                   fleet: Fleet) -> None:
    await fleet.online(*[fleet.start(facts["Hostname"], facts) for facts in SEED_FACTS[:3]])
    api = server.service("tester")
    result = await api.estimate_hunt(
        server_condition="SELECT * FROM rows WHERE Hostnme =~ 'myhostname'")
    assert result["matched"] == 0 and result["total"] == 3 and result["errored"] == 3
    assert len(result["errors"]) == 1
    assert result["errors"][0].startswith("Hostnme is not a column of the client condition's"
                                          " rows: OS, Architecture, Fqdn, Platform, Labels")


async def test_the_estimate_reports_client_condition_errors_but_not_missing_facts() -> None:
    clients = [client_record(i) for i in range(4)]
    for record in clients:
        facts = record.facts
        del facts["Platform"]  # older facts: NULL, as an agent without it would give
        record.set_facts(facts)
    result = await estimate(clients, DEFAULT_CLIENT_CONDITION, "SELECT * FROM rows")
    assert result.describe() == {"matched": 4, "total": 4, "undetermined": 0, "errored": 0,
                                 "errors": []}
    broken = await estimate(clients, "SELECT * FROM info() WHERE Fqdn =~ '('", "")
    assert broken.matched == 0 and broken.errored == 0
    assert broken.errors == ["client-side condition on last known facts: Invalid regular"
                             " expression '('"]


async def test_the_console_estimate_line_shows_the_first_error(tmp_path: Path) -> None:
    app = console(seed(tmp_path / "datastore"))
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewHuntScreen))
        editor = app.screen.query_one("#server_condition", VQLEditor)
        editor.text = "SELECT * FROM rows WHERE Hostnme =~ 'web'"
        estimate_line = app.screen.query_one("#estimate")
        shown = await until(pilot, lambda: "Hostnme" in str(estimate_line.render())
                            and str(estimate_line.render()), 30, "the estimate")
    assert shown.startswith("matches 0 of ")
    assert shown.endswith(f" known clients — Hostnme is not a column of the client condition's"
                          f" rows: {COLUMNS}")


@pytest.mark.slow
def test_the_command_line_estimate_prints_the_errors_below_the_figures(tmp_path: Path) -> None:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(SEED_FACTS[:2]))
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", "2", "--facts",
                          str(facts)).start()
    with running(server, agents):
        wait_for_clients(datastore, 2)
        result = velotui("hunt", "estimate", "--datastore", str(datastore),
                         "--server-condition", "SELECT * FROM rows WHERE sleep(time=60)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "matches 0 of 2 known clients; the server-side condition failed on 2 of them",
        "  unknown function sleep(): the server-side condition may not call it (it waits)",
    ]
