"""Where and when an agent connects next: the server URLs it goes round (failover between
frontends) and the backoff between attempts.

An agent with several server URLs starts at a random one, so a fleet spreads over the frontends,
and after every connection that failed or was lost moves to the next one: random among the
others, then round a random order of the list. Between attempts it waits an exponential backoff
with full jitter, capped by the config's ``max_backoff`` and started afresh after a connection
that lasted. Nothing here sleeps or reads a clock: the session measures how long a connection
lasted and does the waiting, so the schedule can be tested with a seeded random source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from velotui.wire.protocol import CloseCode

BACKOFF_BASE = 0.5
# A session that lasted this long was a real one: the next failure starts the backoff afresh.
BACKOFF_RESET_AFTER = 30.0

# Close codes after which trying again soon cannot help: wait the longest delay instead. Every
# frontend shares one database, so moving to another one does not change these answers.
GIVE_IT_TIME = frozenset({CloseCode.AUTH_FAILED, CloseCode.UNSUPPORTED_VERSION,
                          CloseCode.REPLACED, CloseCode.TRY_AGAIN_LATER, CloseCode.INTERNAL})


@dataclass
class ConnectionOutcome:
    """How one connection attempt ended, which decides the wait before the next."""

    authenticated: bool = False
    session_seconds: float = 0.0
    close_code: int | None = None
    problem: str = ""
    retry_hint: float | None = None  # when a server busy for now asked to come back
    url: str = ""  # the server URL this attempt went to


@dataclass(frozen=True)
class NextAttempt:
    """The server URL to connect to next, and the seconds to wait before."""

    url: str
    delay: float


def backoff_delay(
    attempt: int,
    *,
    base: float = BACKOFF_BASE,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first retry).

    Exponential backoff with full jitter: uniform between 0 and min(cap, base * 2**attempt), so
    a fleet that lost its server at one moment does not return at one moment.
    """
    ceiling = min(cap, base * 2 ** min(max(attempt, 0), 62))
    return (rng or random).uniform(0.0, ceiling)


def reconnect_delay(outcome: ConnectionOutcome, attempt: int, max_backoff: float,
                    rng: random.Random) -> float:
    """Seconds to wait after ``outcome`` before connecting again."""
    if outcome.retry_hint is not None:
        # Busy for now, and it said when to come back: about then, jittered so that a fleet
        # refused at once is spread out, never past the longest wait.
        return min(outcome.retry_hint * rng.uniform(0.5, 1.5), max_backoff)
    if outcome.close_code in GIVE_IT_TIME:
        # Hammering a server that refused us helps no one: wait about the longest delay,
        # jittered so that a fleet refused at once does not return at once.
        return max_backoff * rng.uniform(0.5, 1.0)
    return backoff_delay(attempt, cap=max_backoff, rng=rng)


class ServerRotation:
    """The server URLs in the order an agent tries them: a random one first, then the others
    round a random order of the list, over and over.

    Raises ValueError when given no URL.
    """

    def __init__(self, urls: Sequence[str], rng: random.Random) -> None:
        order = list(dict.fromkeys(urls))
        if not order:
            raise ValueError("an agent needs at least one server URL")
        rng.shuffle(order)
        self.order: tuple[str, ...] = tuple(order)
        self._index = 0

    @property
    def current(self) -> str:
        """The URL to connect to now."""
        return self.order[self._index]

    def advance(self) -> str:
        """Move to the next URL (the same one when there is only one) and return it."""
        self._index = (self._index + 1) % len(self.order)
        return self.current


class ReconnectSchedule:
    """Each connection attempt's server URL and the wait before it.

    ``url`` is where the first attempt goes; after each attempt, ``after(outcome)`` says where
    the next one goes and how long to wait first.
    """

    def __init__(self, urls: Sequence[str], max_backoff: float, rng: random.Random) -> None:
        self.rotation = ServerRotation(urls, rng)
        self.max_backoff = max_backoff
        self._rng = rng
        self.failures = 0  # the backoff's exponent: attempts since the last lasting connection

    @property
    def url(self) -> str:
        """The URL of the attempt to make now."""
        return self.rotation.current

    def after(self, outcome: ConnectionOutcome) -> NextAttempt:
        """Where and when to connect after ``outcome`` (a failed or lost connection, either way
        the agent moves on to the next URL)."""
        if outcome.session_seconds > BACKOFF_RESET_AFTER:
            self.failures = 0
        delay = reconnect_delay(outcome, self.failures, self.max_backoff, self._rng)
        if outcome.retry_hint is None and outcome.close_code not in GIVE_IT_TIME:
            self.failures += 1
        return NextAttempt(self.rotation.advance(), delay)
