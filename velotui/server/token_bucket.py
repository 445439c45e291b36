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
