"""Where each ingest source resumes, persisted in Redis (never only in memory).

Every key the ingest service writes is built here, under `<DEPLOYMENT>:ingest:`
(`counterpick:ingest:` by default):

- `cursor:{source}` (string, no expiry): highest match id read at the head (listings) or the
  next sequence number to ask for (Steam).
- `floor:{source}` (string, no expiry): listing sources; every listed id at or below it is handled.
- `seen:{source}` (zset, score = id): ids published above the floor, so each goes out once;
  trimmed when the floor moves.
- `gaps:{source}` (zset, score = when recorded): unread id ranges `low:high` (exclusive bounds);
  a member goes when its range is read.
- `sweep:{source}` (hash `at`, `top`, `settled`): the current pass over the late window.
- `backfill:{job}` (string, JSON): one backfill job; expires 24 h after it finished.
- `backfills` (zset, score = creation time): ids of known jobs; pruned when listed.
- `backfills:running` (set): ids of running jobs, at most backfill.MAX_RUNNING.

The owner of all of them is the ingest service; nothing else reads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, cast

import redis.asyncio as aioredis

from services.common.config import DEFAULT_DEPLOYMENT
from services.ingest.state import Gap, JobRecord, Sweep

PREFIX = f"{DEFAULT_DEPLOYMENT}:ingest"
FINISHED_JOB_TTL_SECONDS = 24 * 3600


def cursor_key(source: str, prefix: str = PREFIX) -> str:
    """The cursor of `source` (see the module table)."""
    return f"{prefix}:cursor:{source}"


def floor_key(source: str, prefix: str = PREFIX) -> str:
    """The floor of a listing source."""
    return f"{prefix}:floor:{source}"


def seen_key(source: str, prefix: str = PREFIX) -> str:
    """Ids published above the floor."""
    return f"{prefix}:seen:{source}"


def gaps_key(source: str, prefix: str = PREFIX) -> str:
    """Unread id ranges."""
    return f"{prefix}:gaps:{source}"


def sweep_key(source: str, prefix: str = PREFIX) -> str:
    """The current sweep of the late window."""
    return f"{prefix}:sweep:{source}"


def backfill_key(job_id: str, prefix: str = PREFIX) -> str:
    """One backfill job."""
    return f"{prefix}:backfill:{job_id}"


BACKFILLS_KEY = f"{PREFIX}:backfills"
RUNNING_BACKFILLS_KEY = f"{PREFIX}:backfills:running"


class CursorStore:
    """Reads and advances per-source cursors (a sequence number or a match id)."""

    def __init__(self, client: aioredis.Redis, deployment: str = DEFAULT_DEPLOYMENT) -> None:
        self._prefix = f"{deployment}:ingest"
        self._client = client

    async def get(self, source: str) -> int | None:
        """The stored cursor of `source`, or None before its first successful batch."""
        value = await self._client.get(cursor_key(source, self._prefix))
        return None if value is None else int(value)

    async def advance(self, source: str, value: int) -> None:
        """Move the cursor forward; a lower value (an older, slower writer) never wins."""
        # A tiny Lua compare-and-set so two ingest replicas cannot move a cursor backwards.
        await self._client.eval(
            "local current = tonumber(redis.call('GET', KEYS[1]) or '-1') "
            "if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end "
            "return redis.call('GET', KEYS[1])",
            1,
            cursor_key(source, self._prefix),
            str(value),
        )


class WindowStore:
    """The late-window state of listing sources: floor, published ids, gaps and sweep."""

    def __init__(self, client: aioredis.Redis, deployment: str = DEFAULT_DEPLOYMENT) -> None:
        self._prefix = f"{deployment}:ingest"
        self._client = client

    async def floor(self, source: str) -> int | None:
        """The floor, or None before the first poll that set one."""
        value = await self._client.get(floor_key(source, self._prefix))
        return None if value is None else int(value)

    async def raise_floor(self, source: str, value: int) -> None:
        """Move the floor up (never down) and forget the published ids at or below it."""
        await self._client.eval(
            "local current = tonumber(redis.call('GET', KEYS[1]) or '-1') "
            "if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end "
            "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', redis.call('GET', KEYS[1])) "
            "return redis.call('GET', KEYS[1])",
            2,
            floor_key(source, self._prefix),
            seen_key(source, self._prefix),
            str(value),
        )

    async def unseen(self, source: str, match_ids: list[int]) -> list[int]:
        """Those of `match_ids` not published yet (in the given order)."""
        if not match_ids:
            return []
        scores = await self._client.zmscore(
            seen_key(source, self._prefix), [str(i) for i in match_ids]
        )
        pairs = zip(match_ids, scores, strict=True)
        return [match_id for match_id, score in pairs if score is None]

    async def mark_seen(self, source: str, match_ids: list[int]) -> None:
        """Record ids as published (after Kafka acknowledged them)."""
        if match_ids:
            await self._client.zadd(seen_key(source, self._prefix), {str(i): i for i in match_ids})

    async def seen_count(self, source: str) -> int:
        """How many published ids are kept above the floor."""
        return int(await self._client.zcard(seen_key(source, self._prefix)))

    async def gaps(self, source: str) -> list[Gap]:
        """Open gaps, oldest first."""
        raw = await self._client.zrange(gaps_key(source, self._prefix), 0, -1, withscores=True)
        gaps = []
        for entry in raw:
            member, score = cast(tuple[bytes, float], entry)
            low, high = (int(part) for part in _text(member).split(":"))
            gaps.append(Gap(low, high, float(score)))
        return gaps

    async def add_gap(self, source: str, gap: Gap) -> None:
        """Record an unread range (a no-op for an empty one)."""
        if not gap.empty:
            await self._client.zadd(
                gaps_key(source, self._prefix), {_member(gap): gap.since}, nx=True
            )

    async def replace_gap(self, source: str, old: Gap, new: Gap | None) -> None:
        """Shrink a gap after part of it was read (None or an empty range: it is closed)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(gaps_key(source, self._prefix), _member(old))
            if new is not None and not new.empty:
                pipe.zadd(gaps_key(source, self._prefix), {_member(new): new.since})
            await pipe.execute()

    async def sweep(self, source: str) -> Sweep | None:
        """The sweep in progress, if any."""
        raw = await self._client.hgetall(sweep_key(source, self._prefix))
        if not raw:
            return None
        values = {_text(k): _text(v) for k, v in raw.items()}
        settled = values.get("settled")
        return Sweep(float(values["at"]), int(values["top"]), int(settled) if settled else None)

    async def begin_sweep(self, source: str, sweep: Sweep, gap: Gap) -> None:
        """Start a pass: its state and the gap covering the window, together."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(sweep_key(source, self._prefix))
            pipe.hset(
                sweep_key(source, self._prefix),
                mapping={"at": repr(sweep.at), "top": str(sweep.top)},
            )
            if not gap.empty:
                pipe.zadd(gaps_key(source, self._prefix), {_member(gap): gap.since}, nx=True)
            await pipe.execute()

    async def note_settled(self, source: str, match_id: int) -> None:
        """Raise the sweep's settled id (only up)."""
        await self._client.eval(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return nil end "
            "local current = tonumber(redis.call('HGET', KEYS[1], 'settled') or '-1') "
            "if tonumber(ARGV[1]) > current then "
            "redis.call('HSET', KEYS[1], 'settled', ARGV[1]) end "
            "return 1",
            1,
            sweep_key(source, self._prefix),
            str(match_id),
        )

    async def end_sweep(self, source: str) -> None:
        """Forget the finished pass."""
        await self._client.delete(sweep_key(source, self._prefix))


# Admit a job only while fewer than ARGV[1] run: the check and the insert are one step.
_ADMIT = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
"""


class JobStore:
    """Backfill jobs in Redis: admitted under a cap, saved per chunk, expiring when done."""

    def __init__(self, client: aioredis.Redis, deployment: str = DEFAULT_DEPLOYMENT) -> None:
        self._prefix = f"{deployment}:ingest"
        self._client = client

    async def admit(self, job: JobRecord, max_running: int) -> bool:
        """Store a new running job unless `max_running` already run; False when refused."""
        admitted = await self._client.eval(
            _ADMIT,
            3,
            f"{self._prefix}:backfills:running",
            backfill_key(job.job_id, self._prefix),
            f"{self._prefix}:backfills",
            str(max_running),
            job.job_id,
            json.dumps(asdict(job)),
            repr(job.created_at),
        )
        return bool(admitted)

    async def save(self, job: JobRecord) -> None:
        """Persist progress; a finished job leaves the running set and expires in 24 h."""
        job.updated_at = time.time()
        payload = json.dumps(asdict(job))
        async with self._client.pipeline(transaction=True) as pipe:
            if job.state == "running":
                pipe.set(backfill_key(job.job_id, self._prefix), payload)
            else:
                pipe.set(
                    backfill_key(job.job_id, self._prefix), payload, ex=FINISHED_JOB_TTL_SECONDS
                )
                pipe.srem(f"{self._prefix}:backfills:running", job.job_id)
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        """One job, or None when unknown or expired."""
        raw = await self._client.get(backfill_key(job_id, self._prefix))
        return None if raw is None else JobRecord(**cast(dict[str, Any], json.loads(raw)))

    async def running(self) -> list[JobRecord]:
        """The jobs to resume (running ones whose record still exists)."""
        ids = sorted(
            _text(member)
            for member in await self._client.smembers(f"{self._prefix}:backfills:running")
        )
        jobs = []
        for job_id in ids:
            job = await self.get(job_id)
            if job is None:
                await self._client.srem(f"{self._prefix}:backfills:running", job_id)
            else:
                jobs.append(job)
        return jobs

    async def listing(self, limit: int = 100) -> list[JobRecord]:
        """Known jobs, newest first; the index forgets jobs whose record expired."""
        members = cast(
            list[bytes], await self._client.zrevrange(f"{self._prefix}:backfills", 0, limit - 1)
        )
        ids = [_text(m) for m in members]
        jobs = []
        for job_id in ids:
            job = await self.get(job_id)
            if job is None:
                await self._client.zrem(f"{self._prefix}:backfills", job_id)
            else:
                jobs.append(job)
        return jobs


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _member(gap: Gap) -> str:
    return f"{gap.low}:{gap.high}"
