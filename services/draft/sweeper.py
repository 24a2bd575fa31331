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
    ) -> None:
        self._due = due
        self._timeout = timeout
        self._interval = interval
        self._now = now
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
        """One pass: the number of drafts whose timeouts this replica committed."""
        applied = 0
        for draft_id in await self._due(self._now()):
            try:
                if await self._timeout(draft_id):
                    applied += 1
            except DependencyUnavailable:
                raise
            except Exception:
                # One bad draft must not stop the clock of every other draft.
                log.exception("draft %s: timeout failed", draft_id)
        self.applied += applied
        return applied

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except DependencyUnavailable as error:
                log.warning("draft sweeper paused: %s", error.message)
            await asyncio.sleep(self._interval)
