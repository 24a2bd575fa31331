"""Applies draft timeouts on the server's own clock: one sweeper task per replica.

Each pass asks the store which drafts' deadlines have passed (`DraftStore.due`) and applies their
timeouts through `Drafts.timeout`, which commits with compare-and-set. Every replica may find the
same due draft; the rules compute the same change on each, so exactly one commit lands and the
others' fail harmlessly (they re-load, find nothing due, and move on). A Redis outage only pauses
the sweeping; the next pass after it catches up every missed step at its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.common.errors import DependencyUnavailable
from services.draft.drafts import utcnow

log = logging.getLogger(__name__)


class Sweeper:
    """Polls the deadline set every `interval` seconds and applies what is due."""

    def __init__(
        self,
        due: Callable[[datetime], Awaitable[list[str]]],
        timeout: Callable[[str], Awaitable[bool]],
        *,
        interval: float,
        now: Callable[[], datetime] = utcnow,
        concurrency: int = 16,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._due = due
        self._timeout = timeout
        self._interval = interval
        self._now = now
        # Due drafts are handled this many at a time: one slow draft must not hold the others'
        # clocks up, and a burst must not flood Redis.
        self._concurrency = asyncio.Semaphore(concurrency)
        self._max_backoff = max_backoff_seconds
        # Drafts whose timeout failed: (failures so far, monotonic time of the next try).
        self._failing: dict[str, tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    def start(self) -> None:
        """Run in the background until `stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="draft-sweeper")

    async def stop(self) -> None:
        """Cancel the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """One pass: the number of drafts whose timeouts this replica committed.

        Drafts are handled concurrently (bounded); one whose timeout fails is retried after a
        backoff that grows with its failures, so it cannot starve the drafts behind it.
        """
        clock = time.monotonic()
        listed = await self._due(self._now())
        for forgotten in self._failing.keys() - set(listed):
            del self._failing[forgotten]  # no longer due (applied elsewhere, or expired)
        due = [d for d in listed if self._failing.get(d, (0, 0.0))[1] <= clock]
        results = await asyncio.gather(*(self._one(draft_id) for draft_id in due))
        unavailable = [r for r in results if isinstance(r, DependencyUnavailable)]
        applied = sum(1 for r in results if r is True)
        self.applied += applied
        if unavailable and len(unavailable) == len(results):
            raise unavailable[0]  # Redis is down: the pass as a whole failed
        return applied

    async def _one(self, draft_id: str) -> bool | DependencyUnavailable:
        async with self._concurrency:
            try:
                applied = await self._timeout(draft_id)
            except DependencyUnavailable as error:
                return error
            except Exception:
                # One bad draft must not stop the clock of every other draft.
                failures = self._failing.get(draft_id, (0, 0.0))[0] + 1
                delay = min(self._interval * 2**failures, self._max_backoff)
                delay *= 0.5 + random.random()  # noqa: S311 - jitter
                self._failing[draft_id] = (failures, time.monotonic() + delay)
                log.exception("draft %s: timeout failed (%d times)", draft_id, failures)
                return False
            self._failing.pop(draft_id, None)
            return applied

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except DependencyUnavailable as error:
                log.warning("draft sweeper paused: %s", error.message)
            except Exception:
                # A bug in the pass itself: keep the clocks of every draft running.
                log.exception("draft sweeper pass failed")
            await asyncio.sleep(self._interval)
