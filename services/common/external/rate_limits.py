"""Pacing requests to an upstream: a token bucket, and the waits an upstream asks for."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from datetime import UTC

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """`rate` requests per second on average, bursts of up to `burst`; `acquire` waits.

    Waiters are served in arrival order (the lock is held while one sleeps), so a burst of
    concurrent callers is spread out instead of stampeding when a token appears. In any window
    of T seconds at most `burst + rate * T` tokens are handed out.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                # Sleep exactly until the token has accrued and take it then; re-measuring after
                # the sleep invites float rounding to leave 0.9999... tokens and spin.
                wait = (1 - self._tokens) / self.rate
                await self._sleep(wait)
                self._tokens = 1.0
                self._updated = now + wait
            self._tokens -= 1


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), or None.

    `now` is the moment the date form is measured from: best the response's own Date header,
    so a skewed local clock does not stretch or shrink the wait.
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; an unzoned one is treated the same
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)
