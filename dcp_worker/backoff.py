"""The one retry delay of the worker: exponential, jittered, capped.

Every loop that retries (start-up, the start report, a container wait, result delivery) asks a
`Backoff` for its next delay instead of doubling a local float of its own. The jitter spreads
the retries of many workers after one outage of the API, so they do not come back in step.
The sleep and the random source are passed in, so tests run it without waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[object]]


class Backoff:
    """Delays `first_s`, then twice that each time, never above `cap_s`, each jittered by
    +-`jitter` (a fraction). `reset()` after a success starts again from `first_s`."""

    def __init__(
        self,
        first_s: float,
        cap_s: float,
        *,
        jitter: float = 0.2,
        factor: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError("a backoff needs 0 < first_s <= cap_s")
        if not 0 <= jitter < 1 or factor < 1:
            raise ValueError("a backoff needs 0 <= jitter < 1 and factor >= 1")
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter = jitter
        self.factor = factor
        self._sleep = sleep
        self._uniform = uniform
        self._base = first_s
        self.failures = 0  # delays handed out since the last reset

    def reset(self) -> None:
        self._base = self.first_s
        self.failures = 0

    def next_delay(self) -> float:
        """The delay to wait now; the one after it doubles (up to the cap)."""
        j = self.jitter
        delay = min(self.cap_s, self._base * self._uniform(1 - j, 1 + j)) if j else self._base
        self._base = min(self.cap_s, self._base * self.factor)
        self.failures += 1
        return delay

    async def wait(self, at_least_s: float = 0.0) -> float:
        """Sleep the next delay, or `at_least_s` if that is longer (a 429's retry_after);
        returns the seconds slept."""
        delay = max(at_least_s, self.next_delay())
        await self._sleep(delay)
        return delay
