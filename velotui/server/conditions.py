"""Hunt conditions on the server: the hidden server-side condition, and estimates.

The server-side condition runs here over the rows the agent's client-side condition returned,
as ``rows``, with a ``client`` variable holding what the server itself knows of the client (its
ID, the labels the operator gave it, when it was first and last seen), which an agent cannot
forge. It is never sent to an agent. A client matches when the condition returns a row; with no
server-side condition, when the client-side condition returned one.

Judging never runs on the server's event loop: it runs on the condition worker, one thread with
its own event loop, within a time budget per client (``CONDITION_BUDGET``) that the engine
enforces between rows; once its judgement has started, a caller waits no longer than the budget
and ``CONDITION_SLACK`` (and for its turn no longer than ``CONDITION_QUEUE_LIMIT``). A
condition that fails in any way (a VQL error, a name nothing defines, a blown budget, too many
rows) gives a ``Judgement`` that did not match and says why in one line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from velotui.vql import (
    DeadlineExceeded,
    Program,
    Scope,
    UnknownName,
    builtins_registry,
    compile_query,
    run,
)
from velotui.vql.registry import Registry

if TYPE_CHECKING:
    from velotui.server.data import ClientRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CONDITION_ROWS = 1000
"""The most rows of a client-side condition a judgement takes; the foreman reads at most one
more, and a client that returned more is an error, not a match."""

CONDITION_BUDGET = 0.05
"""Seconds the server-side condition may run for one client: the worker thread's CPU time, so
that a busy server (the worker waiting for the GIL or a core) does not blow it."""

CONDITION_SLACK = 2.0
"""How much longer than the budget, in time on the clock, a judgement may take from the moment
the worker started it before its caller gives up (and the judgement stops at its next await):
room for a busy server, whose worker waits for the GIL and a core while the budget (CPU time)
stands still, not for more judging. Only a condition stuck where the engine cannot interrupt it
(or waiting on something) comes this far."""

CONDITION_QUEUE_LIMIT = 30.0
"""Seconds a judgement may wait for the worker to start it (behind a burst of others, or a
condition stuck where the engine cannot interrupt it) before it is an error."""

ESTIMATE_TIME_LIMIT = 10.0
"""Seconds an estimate may take in all; the clients it did not reach count as undetermined."""

ESTIMATE_ERRORS_SHOWN = 3
"""How many distinct error messages an estimate reports."""

# How often (seconds) an estimate lets the worker's other judgements, and a cancel, in. Not much
# more often: each turn of the worker's loop lets go of the GIL and takes it straight back, which
# resets Python's forced switch, and the server's loop then waits far longer for its turn.
_ESTIMATE_SLICE = 0.05

_ROW_SCOPE = "the server-side condition knows rows, client and its own LETs"


# What the server-side condition may call ---------------------------------------------------------

ALLOWED_BUILTINS = frozenset({
    # functions
    "format", "len", "split", "get", "if", "dict", "lowcase", "upcase", "regex_replace",
    "encode", "timestamp", "now", "str", "int", "join", "strip",
    # aggregates
    "count", "sum", "min", "max", "enumerate",
    # plugins ("if" is one too; "scope" is a function too)
    "scope", "range", "foreach", "chain", "flatten", "items", "switch",
    # functions over a query's rows
    "memoize",
    # text, data, paths as text, time, network addresses as text (Velociraptor's breadth)
    "all", "any", "array", "atoi", "base64decode", "base64encode", "base85decode", "basename",
    "cidr_contains", "commandline_split", "crypto_rc4", "dirname", "entropy", "filter", "grok",
    "gunzip", "humanize", "ip", "lazy_dict", "log", "parse_float", "parse_json",
    "parse_json_array", "parse_string_with_regex", "path_join", "path_split", "pathspec",
    "rand", "regex_transform", "relpath", "rot13", "serialize", "set", "slice", "substr",
    "timestamp_format", "to_dict", "typeof", "unhex", "url", "utf16", "utf16_encode", "uuid",
    "version", "xor",
})
"""Built-ins that only compute over the values they are given (and read the clock)."""

REFUSED_BUILTINS = {
    "sleep": "it waits",
    "query": "it runs VQL text that is only known when it runs, which these checks never see",
    "expand": "it reads the server's environment",
    "environ": "it reads the server's environment",
    "getpid": "it reads the server's process",
    "source": "it runs an artifact's sources, and a condition has none",
}
"""Built-ins the server-side condition may not call, and why."""


@functools.cache
def server_registry() -> Registry:
    """What the server-side condition may call (shared: add nothing to it).

    The rule: a built-in is allowed when it only computes over the values it is given (reading
    the clock included); one that waits, or reads or changes the server's files, processes,
    network or environment, is refused (today only ``sleep()``). It is an allow-list: a
    built-in added to the engine later is refused until it is judged and listed here. A
    refused call is an unknown function or plugin, reported by name in the judgement.
    """
    return builtins_registry().only(ALLOWED_BUILTINS)


def client_variable(record: ClientRecord | None, client_id: str) -> dict[str, Any]:
    """The ``client`` variable: the server's own, trusted knowledge of the client."""
    if record is None:
        return {"ClientId": client_id, "Labels": [], "FirstSeen": None, "LastSeen": None}
    return {
        "ClientId": record.client_id,
        "Labels": list(record.operator_labels),
        "FirstSeen": record.first_seen,
        "LastSeen": record.last_seen,
    }


# The worker --------------------------------------------------------------------------------------


class _ConditionWorker:
    """One daemon thread running its own event loop, where conditions run: the server's loop
    only awaits a future. Python switches threads every few milliseconds, so judging cannot
    hold the server's loop off for longer than that; a cancelled caller cancels its task."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="velotui-conditions", daemon=True
        )
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


_worker: _ConditionWorker | None = None
_worker_lock = threading.Lock()


def _condition_worker() -> _ConditionWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _ConditionWorker()
        return _worker


# Judging -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Whether a client matched; ``error`` (one line) when the condition could not say."""

    matched: bool
    error: str | None = None


class _Turn:
    """One judgement between its caller's loop and the worker: when the worker started it, and
    its outcome, handed straight to the caller's loop (not through the worker task's own
    completion, which a burst of judgements queued on the worker would hold back)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.judgement: asyncio.Future[Judgement] = self.loop.create_future()
        self.started: float | None = None  # time.monotonic(), written by the worker

    def finish(self, judgement: Judgement) -> None:
        """Called on the worker."""
        with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits
            self.loop.call_soon_threadsafe(self._settle, judgement)

    def _settle(self, judgement: Judgement) -> None:
        if not self.judgement.done():
            self.judgement.set_result(judgement)


class _Problems:
    """What one run of a condition logged as errors, and the unknown names it met."""

    def __init__(self) -> None:
        self.errors: list[str] = []  # the engine logs each message once per run
        self._unknown: dict[tuple[str, str], UnknownName] = {}

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.errors.append(message)

    def note_unknown(self, unknown: UnknownName) -> None:
        self._unknown.setdefault((unknown.kind, unknown.name), unknown)

    @property
    def unknown(self) -> list[UnknownName]:
        """Each unknown name once, in the order first met."""
        return list(self._unknown.values())


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _columns(rows: list[Any]) -> list[str]:
    """Every column of ``rows``, in the order first seen."""
    names: dict[str, None] = {}
    for row in rows:
        if isinstance(row, Mapping):
            names.update(dict.fromkeys(str(key) for key in row))
    return list(names)


def _column_list(columns: list[str], shown: int = 30) -> str:
    if len(columns) <= shown:
        return ", ".join(columns)
    return ", ".join(columns[:shown]) + f", … ({len(columns) - shown} more)"


def _unknown_reason(unknown: UnknownName, columns: list[str], client: Mapping[str, Any]) -> str:
    name = unknown.name
    refused = REFUSED_BUILTINS.get(name)
    because = f": the server-side condition may not call it ({refused})" if refused else ""
    if unknown.kind == "symbol":
        hint = f" (did you mean client.{name}?)" if name in client else ""
        if columns:
            return (f"{name} is not a column of the client condition's rows:"
                    f" {_column_list(columns)}{hint}")
        return f"{name} is not defined ({_ROW_SCOPE}){hint}"
    if unknown.kind == "function":
        return f"unknown function {name}(){because}"
    if unknown.kind == "plugin":
        return f"unknown plugin {name}(){because or ' (it runs on the server, not the agent)'}"
    return f"FROM {name}: no such variable or plugin ({_ROW_SCOPE})"


def _condition_problem(problems: _Problems, rows: list[Any], client: Mapping[str, Any]
                       ) -> str | None:
    """The one-line reason a run of the server-side condition over ``rows`` is an error, or
    None. A symbol that is a column of some rows but not all is NULL where missing, as VQL
    means, and no error."""
    columns = _columns(rows)
    known_columns = set(columns)
    excused: set[str] = set()
    for unknown in problems.unknown:
        if unknown.kind == "symbol" and unknown.name in known_columns:
            excused.add(unknown.message)
            continue
        return _one_line(_unknown_reason(unknown, columns, client))
    for message in problems.errors:
        if message not in excused:
            return _one_line(f"the server-side condition failed: {message}")
    return None


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class ServerCondition:
    """A hunt's server-side condition, compiled once and run for each client checked.
    Raises VQLSyntaxError when the text does not parse."""

    def __init__(self, text: str, registry: Registry | None = None,
                 budget: float = CONDITION_BUDGET) -> None:
        self.text = text.strip()
        self.registry = registry or server_registry()
        self.budget = budget
        self.program: Program | None = (
            compile_query(self.text, self.registry) if self.text else None
        )

    async def judge(self, rows: list[dict[str, Any]], client: dict[str, Any]) -> Judgement:
        """Judge one client from the rows of its client-side condition (at most
        ``MAX_CONDITION_ROWS``; more is an error) and its ``client_variable``. Runs on the
        condition worker and returns within the budget and ``CONDITION_SLACK`` of the moment
        the worker started it (waiting for that at most ``CONDITION_QUEUE_LIMIT``); never
        raises for anything the condition does."""
        settled = self._settled_without_running(rows)
        if settled is not None:
            return settled
        turn = _Turn()
        task = _condition_worker().submit(self._run_turn(turn, rows, client))
        patience = self.budget + CONDITION_SLACK
        queued_until = time.monotonic() + CONDITION_QUEUE_LIMIT
        try:
            while True:
                # Time spent queued behind other judgements is not this condition's.
                started = turn.started
                until = started + patience if started is not None else queued_until
                left = until - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({turn.judgement}, timeout=min(left, patience))
                if turn.judgement.done():
                    return turn.judgement.result()
        finally:
            task.cancel()  # a judgement given up on stops at its next await, or never starts
        if turn.started is None:
            return Judgement(False, "the server-side condition was not judged: the condition"
                                    f" worker was busy for {CONDITION_QUEUE_LIMIT:g} s")
        return Judgement(False, f"the server-side condition did not finish within"
                                f" {_milliseconds(patience)}")

    async def judge_on_worker(self, rows: list[Any], client: dict[str, Any]) -> Judgement:
        """``judge`` for code already running on the condition worker (the estimate)."""
        settled = self._settled_without_running(rows)
        return settled if settled is not None else await self._run(rows, client)

    def _settled_without_running(self, rows: list[Any]) -> Judgement | None:
        if len(rows) > MAX_CONDITION_ROWS:
            return Judgement(
                False, f"the client condition returned more than {MAX_CONDITION_ROWS:,} rows"
            )
        if self.program is None:
            return Judgement(bool(rows))
        return None

    async def _run_turn(self, turn: _Turn, rows: list[Any], client: dict[str, Any]) -> None:
        turn.started = time.monotonic()
        turn.finish(await self._run(rows, client))

    async def _run(self, rows: list[Any], client: dict[str, Any]) -> Judgement:
        assert self.program is not None
        problems = _Problems()
        matched = False
        try:
            results = run(
                self.program, env={"rows": rows, "client": client}, registry=self.registry,
                on_log=problems.log, on_unknown=problems.note_unknown,
                deadline=time.thread_time() + self.budget, clock=time.thread_time,
            )
            # Run to the end, not to the first row: the errors it logs are then the same
            # whatever order the rows came in.
            async with asyncio.timeout(self.budget + CONDITION_SLACK), \
                    contextlib.aclosing(results) as rows_out:
                async for _row in rows_out:
                    matched = True
        except DeadlineExceeded:  # computing past the budget
            return Judgement(False, "the server-side condition ran longer than its budget of"
                                    f" {_milliseconds(self.budget)}")
        except TimeoutError:  # waiting, past what its caller waits
            return Judgement(False, "the server-side condition did not finish within"
                                    f" {_milliseconds(self.budget + CONDITION_SLACK)}")
        except Exception as error:  # the engine logs what a query does wrong; this is ours
            log.exception("server condition failed on %s", client.get("ClientId"))
            return Judgement(False, _one_line(
                f"the server-side condition failed: {error.__class__.__name__}: {error}"))
        problem = _condition_problem(problems, rows, client)
        if problem is not None:
            return Judgement(False, problem)
        return Judgement(matched)


# Estimates ---------------------------------------------------------------------------------------


@functools.cache
def estimate_registry() -> Registry:
    """The client-side condition run on the server against a client's last known facts (shared:
    add nothing to it): what the server-side condition may call, and ``info()`` giving those
    facts; anything else an agent would have is missing."""
    registry = server_registry().child()

    async def info(scope: Scope) -> AsyncIterator[dict[str, Any]]:
        """The client's last known info() row."""
        facts = scope.services.get("facts")
        if facts:
            yield dict(facts)

    registry.plugin(info, name="info")
    return registry


@dataclass
class Estimate:
    matched: int
    total: int
    undetermined: int  # clients whose condition needs more than their last known facts
    errored: int = 0  # clients whose server-side condition gave an error
    errors: list[str] = field(default_factory=list)  # distinct messages, the first few

    def describe(self) -> dict[str, Any]:
        return {"matched": self.matched, "total": self.total, "undetermined": self.undetermined,
                "errored": self.errored, "errors": list(self.errors)}


async def estimate(clients: list[ClientRecord], client_condition: str, server_condition: str,
                   *, budget: float = CONDITION_BUDGET,
                   time_limit: float = ESTIMATE_TIME_LIMIT) -> Estimate:
    """How many ``clients`` would match, judged by their last known facts, each condition
    within ``budget`` per client and the whole within ``time_limit``. Runs on the condition
    worker; cancelling the caller stops it. Raises VQLSyntaxError when a condition does not
    parse."""
    client_program = compile_query(client_condition, estimate_registry())
    condition = ServerCondition(server_condition, budget=budget)
    future = _condition_worker().submit(
        _estimate_on_worker(list(clients), client_program, condition, time_limit)
    )
    return await asyncio.wrap_future(future)


async def _estimate_on_worker(clients: list[ClientRecord], client_program: Program,
                              condition: ServerCondition, time_limit: float) -> Estimate:
    tally = Estimate(matched=0, total=len(clients), undetermined=0)
    errors: dict[str, None] = {}
    started = slice_started = time.monotonic()
    for index, record in enumerate(clients):
        now = time.monotonic()
        if now - started >= time_limit:
            left = len(clients) - index
            tally.undetermined += left
            errors[f"the estimate stopped after {time_limit:g} s; {left:,} clients were not"
                   " judged"] = None
            break
        if now - slice_started > _ESTIMATE_SLICE:
            await asyncio.sleep(0)  # the foreman's judgements, and a cancel, get in here
            slice_started = time.monotonic()
        rows, notice = await _rows_from_facts(record, client_program, condition.budget)
        if notice is not None:
            errors[notice] = None
        if rows is None:
            tally.undetermined += 1
            continue
        judgement = await condition.judge_on_worker(
            rows, client_variable(record, record.client_id)
        )
        if judgement.error is not None:
            tally.errored += 1
            errors[judgement.error] = None
        elif judgement.matched:
            tally.matched += 1
    tally.errors = list(errors)[:ESTIMATE_ERRORS_SHOWN]
    return tally


async def _rows_from_facts(record: ClientRecord, program: Program, budget: float
                           ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The client-side condition's rows over the client's last known facts (at most one more
    than ``MAX_CONDITION_ROWS``, as the foreman reads them), or None when they cannot tell;
    and what the operator should hear about it, if anything."""
    problems = _Problems()
    labels = list(record.agent_labels)
    rows: list[dict[str, Any]] = []
    try:
        results = run(
            program, registry=estimate_registry(),
            env={"config": {"Client_labels": labels, "Labels": labels}},
            services={"facts": record.facts}, on_log=problems.log,
            on_unknown=problems.note_unknown, deadline=time.thread_time() + budget,
            clock=time.thread_time,
        )
        async with asyncio.timeout(budget + CONDITION_SLACK), \
                contextlib.aclosing(results) as rows_out:
            async for row in rows_out:
                rows.append(row)
                if len(rows) > MAX_CONDITION_ROWS:
                    break
    except (DeadlineExceeded, TimeoutError):
        return None, ("the client-side condition ran longer than"
                      f" {_milliseconds(budget)} over a client's last known facts")
    if any(unknown.kind != "symbol" for unknown in problems.unknown):
        return None, None  # it calls what only an agent has
    # Last known facts may lack a column an agent's info() has today: a missing symbol is NULL
    # here, as on an agent, and says nothing about the condition.
    missing = {unknown.message for unknown in problems.unknown}
    errors = [message for message in problems.errors if message not in missing]
    if errors:
        return rows, _one_line(f"client-side condition on last known facts: {errors[0]}")
    return rows, None
