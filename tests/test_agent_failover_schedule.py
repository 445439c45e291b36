"""Where and when an agent with several server URLs connects next, without a server: the order it
tries the URLs in, the backoff schedule between attempts (with an injected random source, so each
delay is known exactly), the config's ``server_urls`` and the commands that write or override it."""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.reconnect import (
    BACKOFF_RESET_AFTER,
    ConnectionOutcome,
    ReconnectSchedule,
    ServerRotation,
)
from tests.processes import VELOTUI_AGENT, velotui
from velotui.server.tls import create_certificate_authority
from velotui.wire.protocol import CloseCode

A, B, C, D = (f"wss://frontend-{name}:8443/agent" for name in "abcd")


class ScriptedRandom(random.Random):
    """A random source whose every draw is known: ``shuffle`` puts the list in ``order`` and
    ``uniform(low, high)`` returns ``low + share * (high - low)``."""

    def __init__(self, order: list[str] | None = None, share: float = 1.0) -> None:
        super().__init__(0)
        self.order = order
        self.share = share

    def shuffle(self, items: list) -> None:  # type: ignore[override]
        if self.order is not None:
            assert sorted(items) == sorted(self.order)
            items[:] = self.order

    def uniform(self, low: float, high: float) -> float:
        return low + self.share * (high - low)


def lost(after: float = 1.0) -> ConnectionOutcome:
    """A connection that was up for ``after`` seconds, then lost."""
    return ConnectionOutcome(authenticated=True, session_seconds=after,
                             problem="the connection was lost")


FAILED = ConnectionOutcome(problem="cannot connect: connection refused")


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return create_certificate_authority()[0].decode("ascii")


# The order of the URLs -------------------------------------------------------------------------


def test_the_agent_starts_at_the_shuffled_first_url_then_goes_round_that_order() -> None:
    rotation = ServerRotation([A, B, C, D], ScriptedRandom(order=[C, A, D, B]))
    assert rotation.current == C
    assert [rotation.advance() for _ in range(7)] == [A, D, B, C, A, D, B]


def test_the_first_url_is_random_and_the_next_is_random_among_the_others() -> None:
    rng = random.Random(14)
    firsts: Counter[str] = Counter()
    seconds: Counter[tuple[str, str]] = Counter()
    for _ in range(4000):
        rotation = ServerRotation([A, B, C], rng)
        first = rotation.current
        following = [rotation.advance() for _ in range(3)]
        firsts[first] += 1
        seconds[first, following[0]] += 1
        assert sorted([first, *following[:2]]) == [A, B, C]  # each URL once a round
        assert following[2] == first  # then round again, in the same order
    # A fleet spreads over the frontends: each starts about a third of the agents.
    assert all(1100 < firsts[url] < 1570 for url in (A, B, C)), firsts
    # After the first, either other one is as likely, never the same again.
    assert all(first != second for first, second in seconds)
    assert all(500 < count < 840 for count in seconds.values()), seconds


def test_one_url_is_tried_again_and_again_and_repeats_are_dropped() -> None:
    rotation = ServerRotation([A, A], random.Random(1))
    assert rotation.order == (A,)
    assert [rotation.advance() for _ in range(3)] == [A, A, A]
    with pytest.raises(ValueError, match="at least one server URL"):
        ServerRotation([], random.Random(1))


# The backoff schedule --------------------------------------------------------------------------


def test_failures_double_the_longest_wait_up_to_the_cap_while_moving_round_the_urls() -> None:
    schedule = ReconnectSchedule([A, B, C], 5.0, ScriptedRandom(order=[B, C, A]))
    assert schedule.url == B
    attempts = [schedule.after(FAILED) for _ in range(7)]
    assert [attempt.url for attempt in attempts] == [C, A, B, C, A, B, C]
    assert [attempt.delay for attempt in attempts] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert schedule.url == C


def test_the_wait_is_jittered_down_to_nothing() -> None:
    schedule = ReconnectSchedule([A, B], 60.0, ScriptedRandom(order=[A, B], share=0.0))
    assert [schedule.after(FAILED).delay for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]
    schedule = ReconnectSchedule([A, B], 60.0, ScriptedRandom(order=[A, B], share=0.25))
    assert [schedule.after(FAILED).delay for _ in range(4)] == [0.125, 0.25, 0.5, 1.0]


def test_a_connection_that_lasted_starts_the_backoff_afresh_a_short_one_does_not() -> None:
    schedule = ReconnectSchedule([A, B], 60.0, ScriptedRandom(order=[A, B]))
    assert [schedule.after(FAILED).delay for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    # Up for a moment only (a server that accepts then drops): the backoff keeps growing.
    assert schedule.after(lost(after=BACKOFF_RESET_AFTER - 1)).delay == 8.0
    # Up long enough to count: the next failure waits as the first one did.
    after_lasting = schedule.after(lost(after=BACKOFF_RESET_AFTER + 1))
    assert after_lasting.delay == 0.5
    assert [schedule.after(FAILED).delay for _ in range(2)] == [1.0, 2.0]


def test_a_lost_connection_moves_to_another_url_too() -> None:
    schedule = ReconnectSchedule([A, B, C], 60.0, ScriptedRandom(order=[A, B, C]))
    assert schedule.after(lost(after=3600)).url == B
    assert schedule.after(lost(after=3600)).url == C
    assert schedule.after(lost(after=3600)).url == A


def test_a_refusal_waits_about_the_longest_wait_without_growing_the_backoff() -> None:
    schedule = ReconnectSchedule([A, B], 10.0, ScriptedRandom(order=[A, B]))
    refused = ConnectionOutcome(close_code=CloseCode.AUTH_FAILED)
    busy = ConnectionOutcome(close_code=CloseCode.TRY_AGAIN_LATER, retry_hint=4.0)
    assert [schedule.after(refused).delay, schedule.after(busy).delay] == [10.0, 6.0]
    assert schedule.after(FAILED).delay == 0.5  # still the first failure's wait


def test_a_seeded_schedule_is_reproducible_and_stays_within_its_bounds() -> None:
    def run(seed: int) -> list[tuple[str, float]]:
        schedule = ReconnectSchedule([A, B, C], 8.0, random.Random(seed))
        return [(schedule.url, 0.0)] + [
            (attempt.url, attempt.delay) for attempt in (schedule.after(FAILED) for _ in range(20))
        ]

    assert run(3) == run(3)
    for attempt, (_url, delay) in enumerate(run(3)[1:]):
        assert 0.0 <= delay <= min(8.0, 0.5 * 2**attempt)


# The config and the commands that write it -----------------------------------------------------


def test_several_urls_round_trip_and_the_first_is_kept_for_older_agents(
    tmp_path: Path, ca_pem: str
) -> None:
    config = AgentConfig(server_url="", server_urls=[A, "wss://frontend-b:8443", A],
                         ca_pem=ca_pem, enrolment_secret="s")
    assert config.server_urls == [A, "wss://frontend-b:8443"]
    assert config.server_url == A
    assert config.connect_urls == [A, B]
    path = tmp_path / "agent.json"
    config.save(path)
    saved = json.loads(path.read_text())
    assert (saved["server_url"], saved["server_urls"]) == (A, [A, "wss://frontend-b:8443"])
    assert AgentConfig.load(path) == config

    # A config of an older server names one URL: it is the only one.
    path.write_text(json.dumps({"server_url": B, "ca_pem": ca_pem, "enrolment_secret": "s"}))
    assert AgentConfig.load(path).connect_urls == [B]
    # The list alone is enough.
    path.write_text(json.dumps({"server_urls": [C, D], "ca_pem": ca_pem, "enrolment_secret": "s"}))
    assert (AgentConfig.load(path).server_url, AgentConfig.load(path).connect_urls) == (C, [C, D])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"server_urls": [A, "ws://frontend-b:8443"]}, "server_urls must start with wss://"),
        ({"server_urls": [A, "wss://:8443"]}, "server_urls names no host"),
        ({"server_urls": "wss://frontend-a:8443"}, "server_urls must be a list"),
        ({"server_urls": [A], "server_url": C}, "is not one of server_urls"),
        ({"server_urls": []}, "server_urls must be a list"),
        ({}, "missing server_url"),
    ],
)
def test_a_bad_url_list_is_named(tmp_path: Path, ca_pem: str, fields: dict, message: str) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"ca_pem": ca_pem, "enrolment_secret": "s", **fields}))
    with pytest.raises(ValueError, match=message):
        AgentConfig.load(path)


def test_agent_config_writes_every_server_given(tmp_path: Path) -> None:
    datastore, output = tmp_path / "datastore", tmp_path / "agent.json"
    result = velotui("agent-config", "--datastore", str(datastore),
                     "--server-url", "wss://127.0.0.1:8443", "--server", "wss://localhost:9443/",
                     "--server", "wss://127.0.0.1:8443", "-o", str(output))
    assert result.returncode == 0, result.stderr
    config = AgentConfig.load(output)
    assert config.server_urls == ["wss://127.0.0.1:8443/agent", "wss://localhost:9443/agent"]
    assert config.server_url == "wss://127.0.0.1:8443/agent"

    refused = velotui("agent-config", "--datastore", str(datastore), "--server-url",
                      "wss://127.0.0.1:8443", "--server", "https://localhost:9443", "-o",
                      str(tmp_path / "other.json"))
    assert refused.returncode == 2
    assert "'https://localhost:9443'" in refused.stderr
    assert not (tmp_path / "other.json").exists()


def test_a_bad_server_on_the_agent_command_line_exits_with_a_message(
    tmp_path: Path, ca_pem: str
) -> None:
    config = tmp_path / "agent.json"
    AgentConfig(A, ca_pem, "s").save(config)
    result = subprocess.run(
        [VELOTUI_AGENT, "--config", str(config), "--state", str(tmp_path / "state"),
         "--server", A, "--server", "ws://frontend-b:8443"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "must start with wss://" in result.stderr
