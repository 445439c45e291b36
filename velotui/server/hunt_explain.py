"""Why a client stands where it does in a hunt, in plain words and as data.

Read from durable state (the client's row in the hunt, the flows it names, the pending queue in
the recruiter's order) and the hunt and client as the server holds them: never connected since
the hunt started; not checked yet, and why; its condition being checked; what its client-side
condition returned and what the server-side condition made of it; its place in the pending
queue and when the rate lets it through; its collection running, finished or failed.

``explain_client_in_hunt`` returns ``{"hunt_id", "client_id", "status", "summary",
"details"}``: ``status`` one of ``STATUSES``, ``summary`` one to a few lines for a person,
``details`` a JSON map (times as epoch seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from velotui.server.data import ClientRecord, Database, FlowRecord, HuntRecord
from velotui.server.data.explain_reads import HuntPlace
from velotui.vql.values import to_json_value

STATUSES = ("unknown_client", "not_connected", "not_checked", "checking", "not_matched",
            "condition_failed", "pending", "running", "completed", "results", "errors")
CONDITION_ROWS_SHOWN = 20
"""The most condition rows an explanation carries (the check may have returned up to 1,000)."""

# What the foreman writes before the reason a server-side judgement failed.
SERVER_CONDITION_PREFIX = "server condition: "


@dataclass
class Explanation:
    status: str
    lines: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def when(timestamp: float | None) -> str:
    """A time as the command line shows times: local, to the second."""
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def about(seconds: float) -> str:
    """A wait in round words: "40 s", "4 min", "2.5 h"."""
    if seconds < 60:
        return f"{max(round(seconds), 1)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def hunt_started_at(hunt: HuntRecord) -> float | None:
    """When the hunt last started (each start looks at every client again), or None."""
    if hunt.start_timestamp:
        return hunt.start_timestamp / 1_000_000
    return hunt.started


def _hunt_standing(hunt: HuntRecord) -> str:
    """Why a hunt that does not run looks at nobody new, in a few words."""
    reason = f" ({hunt.stop_reason})" if hunt.stop_reason else ""
    if hunt.state == "scheduled":
        return f"the hunt is scheduled to start at {when(hunt.start_at)}" if hunt.start_at \
            else "the hunt is scheduled"
    if hunt.state == "paused" and hunt.started is None:
        return f"the hunt has not been started ({hunt.stop_reason or 'it is paused'})"
    return f"the hunt is {hunt.state}{reason}"


async def explain_client_in_hunt(db: Database, hunt: HuntRecord, client_id: str,
                                 client: ClientRecord | None, online: bool,
                                 now: float | None = None) -> dict[str, Any]:
    """Where ``client_id`` stands in ``hunt`` and why (see the module's docstring). ``client``:
    the server's record of it (None: not known); ``online``: whether it is connected."""
    now = time.time() if now is None else now
    place = await db.explain.hunt_place(hunt.hunt_id, client_id)
    if place is None:
        found = _not_looked_at(hunt, client_id, client, online, now)
    else:
        found = await _looked_at(db, hunt, client_id, place)
    details = {
        "hunt_state": hunt.state,
        "stop_reason": hunt.stop_reason,
        "hunt_started": hunt_started_at(hunt),
        "online": online,
        "last_seen": (now if online else client.last_seen) if client is not None else None,
        **found.details,
    }
    if client is not None and client.revoked is not None:
        details["revoked"] = client.revoked
        found.lines.append(f"its key was revoked at {when(client.revoked)}: it cannot connect")
    return to_json_value({
        "hunt_id": hunt.hunt_id,
        "client_id": client_id,
        "status": found.status,
        "summary": "\n".join(found.lines),
        "details": details,
    })


def _named(client_id: str, client: ClientRecord | None) -> str:
    return f"{client_id} ({client.hostname})" if client is not None and client.hostname \
        else client_id


# A client the hunt has not looked at ------------------------------------------------------------


def _not_looked_at(hunt: HuntRecord, client_id: str, client: ClientRecord | None, online: bool,
                   now: float) -> Explanation:
    if client is None:
        return Explanation("unknown_client", [
            f"{client_id} is not a client this server knows (see: velotui clients)"])
    name = _named(client_id, client)
    started = hunt_started_at(hunt)
    if started is None or hunt.state == "scheduled":
        return Explanation("not_checked", [
            f"{name} is not checked yet: {_hunt_standing(hunt)}; clients are checked once it"
            " runs"], {"reason": hunt.state})
    seen = now if online else client.last_seen
    if seen < started:
        lines = [f"{name} has not connected since the hunt started at {when(started)} (last"
                 f" seen {when(client.last_seen)})"]
        lines.append("it is checked for the hunt when it connects" if hunt.state == "running"
                     else f"{_hunt_standing(hunt)}: it will not be checked until the hunt runs"
                     " again")
        return Explanation("not_connected", lines)
    if hunt.state != "running":
        return Explanation("not_checked", [
            f"{name} is not checked: {_hunt_standing(hunt)} and checks no new client (it was"
            f" last seen {'now' if online else when(client.last_seen)})"],
            {"reason": hunt.state})
    if client.last_hunt_timestamp >= hunt.start_timestamp:
        # The foreman checks a client only for hunts newer than what its agent reports.
        reported = client.last_hunt_timestamp / 1_000_000
        return Explanation("not_checked", [
            f"{name} is not checked: its agent reports it was checked for every hunt up to"
            f" {when(reported)}, past this hunt's start at {when(started)}, yet the server"
            " holds no check of it for this hunt",
            "its polls will not check it; starting the hunt again would"],
            {"reason": "agent_checkpoint_past_start", "agent_checkpoint": reported})
    if online:
        next_check = "it is online: the foreman checks it now, or at its next poll"
    else:
        next_check = (f"it was seen at {when(client.last_seen)}: it is checked at its next"
                      " poll or connection")
    return Explanation("not_checked",
                       [f"{name} is not checked yet: the hunt runs and {next_check}"],
                       {"reason": "next_poll"})


# A client the hunt has looked at ----------------------------------------------------------------


async def _looked_at(db: Database, hunt: HuntRecord, client_id: str, place: HuntPlace
                     ) -> Explanation:
    check = await _condition_outcome(db, hunt, client_id, place)
    details: dict[str, Any] = {"queue": place.queue, "stage": place.stage,
                               "checked": place.checked, "updated": place.updated,
                               **check.details}
    queue = place.queue
    if queue == "checking":
        return Explanation("checking", _checking(place, check), details)
    if queue == "not_matched":
        return Explanation("not_matched", [f"not matched: checked at {when(place.checked)},"
                                           f" {check.words}"], details)
    if queue == "errors" and place.stage != "collection":
        details["error"] = place.error
        details["side"] = "server" if (place.error or "").startswith(SERVER_CONDITION_PREFIX) \
            else "client"
        details["condition_state"] = place.condition.state if place.condition else None
        return Explanation("condition_failed", _condition_failed(hunt, place, check), details)
    checked_line = f"checked at {when(place.checked)}: {check.words}"
    if queue == "pending":
        found = await _pending(db, hunt, client_id, place)
        found.lines.append(checked_line)
        found.details = {**details, **found.details}
        return found
    flow = place.collection
    details.update(_collection_details(flow, place))
    if queue == "running":
        lines = [_running(flow), checked_line]
        if hunt.state == "paused":
            lines.append(f"{_hunt_standing(hunt)}: collections already running finish")
        return Explanation("running", lines, details)
    if queue in ("completed", "results"):
        return Explanation(queue, [_finished(flow), checked_line], details)
    details["error"] = place.error or (flow.error if flow is not None else None)
    lines = [f"errors: the collection{_flow_words(flow)} failed"
             f"{' at ' + when(flow.finished) if flow is not None and flow.finished else ''}:"
             f" {details['error'] or 'no reason recorded'}",
             checked_line,
             f"to run it again: velotui hunt relaunch {hunt.hunt_id}"]
    return Explanation("errors", lines, details)


@dataclass
class _ConditionOutcome:
    """What the client-side condition returned, in words and details."""

    words: str
    details: dict[str, Any]


async def _condition_outcome(db: Database, hunt: HuntRecord, client_id: str, place: HuntPlace
                             ) -> _ConditionOutcome:
    flow = place.condition
    rows = place.condition_rows
    count: int | None = len(rows) if rows is not None else None
    if rows is None and flow is not None and flow.kind == "condition" and (
            flow.state == "finished" or flow.rows):
        # A separate condition check keeps its rows as the flow's results.
        rows = await db.explain.flow_rows(client_id, flow.flow_id, CONDITION_ROWS_SHOWN)
        count = flow.rows
    details: dict[str, Any] = {
        "condition_flow_id": flow.flow_id if flow is not None else None,
        "condition_sent": flow.started if flow is not None else None,
        "condition_answered": (flow.finished if flow is not None and flow.kind == "condition"
                               else None),
        "condition_row_count": count,
        "condition_rows": rows[:CONDITION_ROWS_SHOWN] if rows is not None else None,
        "server_condition": bool(hunt.server_condition.strip()),
    }
    if count is None:
        words = "the client condition has returned nothing yet"
    elif count == 0:
        words = "the client condition returned no rows"
    else:
        words = f"the client condition returned {_plural(count, 'row')}"
    if count and place.queue != "checking":
        if not hunt.server_condition.strip():
            words += " (no server condition)"
        elif place.queue == "not_matched":
            words += " and the server condition returned nothing"
        elif place.queue != "errors" or place.stage == "collection":
            words += " and the server condition matched"
    return _ConditionOutcome(words, details)


def _checking(place: HuntPlace, check: _ConditionOutcome) -> list[str]:
    flow = place.condition
    lines = [f"checking since {when(place.checked)}"]
    answered = place.condition_rows is not None or (
        flow is not None and flow.kind == "condition" and flow.state == "finished")
    if answered:
        lines[0] += f": {check.words}; the server condition is being judged"
    elif flow is None or flow.state == "queued" or flow.started is None:
        lines[0] += ": its condition check waits to be sent (the client is offline)"
    else:
        lines[0] += f": condition sent at {when(flow.started)}, no answer yet"
    return lines


def _condition_failed(hunt: HuntRecord, place: HuntPlace, check: _ConditionOutcome
                      ) -> list[str]:
    error = place.error or "no reason recorded"
    if error.startswith(SERVER_CONDITION_PREFIX):
        first = (f"the condition failed: checked at {when(place.checked)}, {check.words} and"
                 f" the server condition failed: {error.removeprefix(SERVER_CONDITION_PREFIX)}")
    elif place.condition is not None and place.condition.state in ("cancelled", "timeout"):
        # Ended by the server (a stop, a revoked client) or its deadline, not by the agent.
        ended = "was cancelled" if place.condition.state == "cancelled" else "timed out"
        first = f"the condition check {ended} (checked at {when(place.checked)}): {error}"
    else:
        first = (f"the client condition failed on the agent (checked at"
                 f" {when(place.checked)}): {error}")
    return [first, f"to check it again: velotui hunt relaunch {hunt.hunt_id}"]


async def _pending(db: Database, hunt: HuntRecord, client_id: str, place: HuntPlace
                   ) -> Explanation:
    ahead = await db.explain.pending_ahead(hunt.hunt_id, place.checked, client_id)
    behind = f"pending behind {_plural(ahead, 'client')}"
    details: dict[str, Any] = {"position": ahead, "rate": hunt.rate,
                               "client_limit": hunt.client_limit, "recruited": hunt.recruited,
                               "eta_seconds": None}
    room = hunt.client_limit - hunt.recruited if hunt.client_limit else None
    if hunt.state != "running":
        if hunt.stop_reason == "client limit reached":
            line = (f"{behind}, but the hunt stopped at its client limit of {hunt.client_limit}:"
                    " it is recruited only if the limit is raised and the hunt runs again")
        else:
            verb = "resumed" if hunt.state == "paused" else "started again"
            line = f"{behind}, but {_hunt_standing(hunt)}: nobody is recruited until it is {verb}"
        details["waiting_for"] = hunt.state
    elif room is not None and ahead >= room:
        line = (f"{behind}, but the client limit of {hunt.client_limit} leaves room for"
                f" {_plural(max(room, 0), 'more client')}: it is recruited only if the limit"
                " is raised")
        details["waiting_for"] = "client_limit"
    elif hunt.rate > 0:
        eta = ahead / hunt.rate * 60.0
        details["eta_seconds"] = eta
        details["waiting_for"] = "rate"
        line = (f"{behind} at {hunt.rate:g}/min: recruited in about {about(eta)}" if ahead
                else f"first in line at {hunt.rate:g}/min: recruited at the next free place")
    else:
        details["eta_seconds"] = 0.0
        details["waiting_for"] = "recruiter"
        line = f"{behind} (no rate limit): recruited at the next recruiter pass"
    return Explanation("pending", [line], details)


def _flow_words(flow: FlowRecord | None) -> str:
    return f" {flow.flow_id}" if flow is not None else ""


def _collection_details(flow: FlowRecord | None, place: HuntPlace) -> dict[str, Any]:
    if flow is None:
        return {"flow_id": None, "attempt": place.attempt}
    return {"flow_id": flow.flow_id, "attempt": place.attempt, "flow_state": flow.state,
            "created": flow.created, "started": flow.started, "finished": flow.finished,
            "rows": flow.rows, "bytes": flow.bytes, "uploads": flow.uploads,
            "duration": flow.duration}


def _running(flow: FlowRecord | None) -> str:
    if flow is None:
        return "running: its collection is not recorded"
    if flow.state == "queued" or flow.started is None:
        return (f"running since {when(flow.created)}: its collection {flow.flow_id} waits to be"
                " sent (the client is offline)")
    uploads = f", {_plural(flow.uploads, 'upload')}" if flow.uploads else ""
    return (f"running since {when(flow.started)}: collection {flow.flow_id},"
            f" {_plural(flow.rows, 'row')} so far{uploads}")


def _finished(flow: FlowRecord | None) -> str:
    if flow is None:
        return "finished"
    uploads = f" and {_plural(flow.uploads, 'upload')}" if flow.uploads else ""
    rows = _plural(flow.rows, "row") if flow.rows else "no rows"
    return f"finished at {when(flow.finished)} with {rows}{uploads} (collection {flow.flow_id})"
