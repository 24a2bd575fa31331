"""Backfill jobs: publish references for historical match ids (etl enriches them by fetching).

A job's target, progress and state live in Redis (repo.JobStore), saved after every chunk Kafka
acknowledged, so a restarted ingest resumes each running job where it stopped (re-publishing at
most one chunk, which etl's idempotent sink absorbs). At most `MAX_RUNNING` jobs run at once
across every ingest sharing the Redis; finished jobs are kept 24 hours for GetIngestStatus.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from counterpick.events.v1 import events_pb2
from services.ingest.sources import Publisher, now_timestamp
from services.ingest.state import JobRecord

log = logging.getLogger(__name__)
MAX_RUNNING = 4
# Attempts of one chunk before the job is marked failed (Kafka down for minutes, say).
CHUNK_ATTEMPTS = 6


class JobStorage(Protocol):
    """Where jobs are kept (repo.JobStore)."""

    async def admit(self, job: JobRecord, max_running: int) -> bool: ...

    async def save(self, job: JobRecord) -> None: ...

    async def running(self) -> list[JobRecord]: ...

    async def listing(self, limit: int = 100) -> list[JobRecord]: ...


class TooManyJobs(Exception):
    """MAX_RUNNING jobs are running already."""


class BackfillJobs:
    """Admits, runs and resumes backfill jobs."""

    def __init__(
        self,
        publisher: Publisher,
        store: JobStorage,
        *,
        chunk: int = 1000,
        retry_seconds: float = 1.0,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self._chunk = chunk
        self._retry_seconds = retry_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(
        self,
        *,
        match_ids: Sequence[int] | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> JobRecord:
        """Admit and start a job for a list of ids or an inclusive range; TooManyJobs when
        MAX_RUNNING already run."""
        now = time.time()
        if match_ids is not None:
            listed = sorted(set(match_ids))
            ids: list[int] | None = listed
            total = len(listed)
        else:
            assert first is not None
            assert last is not None
            ids, total = None, last - first + 1
        job = JobRecord(uuid.uuid4().hex, ids, first, last, total, 0, "running", now, now)
        if not await self._store.admit(job, MAX_RUNNING):
            raise TooManyJobs(f"{MAX_RUNNING} backfill jobs are running")
        self._start(job)
        return job

    async def resume(self) -> int:
        """Start every job a previous process left running; returns how many."""
        jobs = [job for job in await self._store.running() if job.job_id not in self._tasks]
        for job in jobs:
            log.info("resuming backfill %s at %d/%d", job.job_id, job.published, job.total)
            self._start(job)
        return len(jobs)

    async def listing(self) -> list[JobRecord]:
        """Known jobs, newest first."""
        return await self._store.listing()

    async def wait(self, job_id: str) -> None:
        """Until the job's task in this process ends (tests and shutdown)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task})

    async def stop(self) -> None:
        """Stop the jobs of this process; they stay `running` in Redis and resume next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _start(self, job: JobRecord) -> None:
        task = asyncio.create_task(self._run(job), name=f"backfill-{job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def _run(self, job: JobRecord) -> None:
        attempt = 0
        while job.published < job.total:
            ids = job.ids_from(job.published, self._chunk)
            refs = [
                events_pb2.MatchRef(
                    match_id=match_id,
                    source=events_pb2.MATCH_SOURCE_BACKFILL,
                    discovered_at=now_timestamp(),
                )
                for match_id in ids
            ]
            try:
                await self._publisher.publish(refs)
                job.published += len(ids)
                await self._store.save(job)
                attempt = 0
            except Exception as error:  # retried, then recorded in the job
                attempt += 1
                log.warning("backfill %s: chunk failed (%d): %r", job.job_id, attempt, error)
                if attempt >= CHUNK_ATTEMPTS:
                    job.state, job.error = "failed", f"{type(error).__name__}: {error}"[:500]
                    await self._save_final(job)
                    return
                await asyncio.sleep(self._retry_seconds * 2 ** (attempt - 1))
        job.state = "succeeded"
        await self._save_final(job)

    async def _save_final(self, job: JobRecord) -> None:
        for delay in (0.0, 1.0, 5.0):
            await asyncio.sleep(delay)
            try:
                await self._store.save(job)
                return
            except Exception as error:  # stays running; resumed later
                log.warning("backfill %s: cannot record its end: %r", job.job_id, error)
