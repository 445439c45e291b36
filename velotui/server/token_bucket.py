"""A token bucket on the monotonic clock: how the server paces what must not come all at once
(a hunt's recruitment, new clients enrolling)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``rate`` events a second on average and ``burst`` at once. Starts full; an idle
    spell never saves up more than ``burst``."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._refilled: float | None = None

    @property
    def state(self) -> tuple[float, float | None]:
        """(tokens, when they were last refilled): what to store to carry the bucket on
        elsewhere (``restore``)."""
        return self._tokens, self._refilled

    def restore(self, tokens: float | None, refilled: float | None) -> None:
        """Carry on from a stored ``state`` (None: full, as a new bucket)."""
        if tokens is None or refilled is None:
            self._tokens, self._refilled = self.burst, None
        else:
            self._tokens, self._refilled = min(float(tokens), self.burst), float(refilled)

    def take(self, wanted: int = 1, now: float | None = None) -> int:
        """How many of ``wanted`` events may happen at ``now`` (default: the clock's now);
        those are spent."""
        now = self._clock() if now is None else now
        if self._refilled is not None:
            elapsed = max(now - self._refilled, 0.0)  # a clock never runs back, but a caller may
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._refilled = now
        allowed = max(min(wanted, int(self._tokens)), 0)
        self._tokens -= allowed
        return allowed


def recruitment_bucket(rate_per_minute: float) -> TokenBucket | None:
    """A hunt's rate as a bucket: ``rate_per_minute`` clients a minute, with at most one
    second's worth saved up (60 a minute lets about one client through each second, and an idle
    spell never turns into a burst). None for a rate of 0: no limit."""
    if rate_per_minute <= 0:
        return None
    per_second = rate_per_minute / 60.0
    return TokenBucket(per_second, max(1.0, per_second))
