"""The timeout sweeper: due drafts handled concurrently, a failing draft backed off without
starving the others, and no exception ends the sweeping."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from services.common.errors import DependencyUnavailable
from services.draft.sweeper import Sweeper


async def test_slow_timeouts_run_concurrently() -> None:
    async def due(now: datetime) -> list[str]:
        return [f"d{n}" for n in range(8)]

    async def timeout(draft_id: str) -> bool:
        await asyncio.sleep(0.2)
        return True

    sweeper = Sweeper(due, timeout, interval=0.05, concurrency=8)
    started = time.monotonic()
    assert await sweeper.sweep() == 8
    assert time.monotonic() - started < 0.6  # one at a time took 1.6 s


async def test_a_failing_draft_is_backed_off_and_never_stops_the_sweeper() -> None:
    tried: list[str] = []
    due_calls = 0

    async def due(now: datetime) -> list[str]:
        nonlocal due_calls
        due_calls += 1
        if due_calls == 2:
            raise KeyError("a bug in one pass")
        return ["bad", "good"]

    async def timeout(draft_id: str) -> bool:
        tried.append(draft_id)
        if draft_id == "bad":
            raise ValueError("corrupt draft")
        return True

    sweeper = Sweeper(due, timeout, interval=0.01, max_backoff_seconds=10)
    sweeper.start()
    try:
        await asyncio.sleep(0.3)
        assert sweeper._task is not None
        assert not sweeper._task.done()
    finally:
        await sweeper.stop()
    assert due_calls > 5
    # "good" is swept every pass; "bad" only at its backed-off retries.
    assert tried.count("good") == due_calls - 1
    assert 1 <= tried.count("bad") < tried.count("good") // 2


async def test_redis_down_pauses_the_pass() -> None:
    async def due(now: datetime) -> list[str]:
        return ["a"]

    async def timeout(draft_id: str) -> bool:
        raise DependencyUnavailable("redis")

    sweeper = Sweeper(due, timeout, interval=0.01)
    try:
        await sweeper.sweep()
    except DependencyUnavailable:
        pass
    else:
        raise AssertionError("a pass that only met an outage says so")
