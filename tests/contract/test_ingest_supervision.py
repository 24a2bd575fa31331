"""ingest's listing source against the replayed 2026-07 feed, a real broker and a real Redis:
late finishers, gaps, supervised pollers that survive every kind of error, durable backfills."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from counterpick.events.v1 import events_pb2
from counterpick.ingest.v1 import ingest_service_pb2 as pb
from counterpick.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from services.common import health as grpc_health
from services.common.external.json_api import JsonApi
from services.common.external.opendota import OpenDotaClient
from services.common.external.rate_limits import TokenBucket
from services.common.stores import ensure_kafka_topics
from services.ingest.backfill import MAX_RUNNING, BackfillJobs, TooManyJobs
from services.ingest.config import IngestSettings
from services.ingest.publisher import MatchRefPublisher
from services.ingest.repo import CursorStore, JobStore, WindowStore, seen_key
from services.ingest.server import build_server, source_health_name
from services.ingest.sources import MatchIdPagedSource, SourceHealth, supervise
from services.ingest.state import JobRecord
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.feed_replayer import FaultPlan, FeedReplayer, load_public_matches, match_end

Stores = tuple[aioredis.Redis, MatchRefPublisher]
# Longer than any game of the data set (7,577 s), as the real default (3 h) is.
LATE_WINDOW = 8000.0

# Keys the ingest servers of these tests verify with: GetIngestStatus needs an admin or service.
_KEYS = SigningKeys.create(Path(tempfile.mkdtemp(prefix="counterpick-keys-")))
_ADMIN = _KEYS.metadata("admin")


async def topic_ids(bootstrap: str, topic: str, expected: set[int]) -> list[int]:
    """Every match id on the topic, once `expected` all arrived and a second passed quietly."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    ids: list[int] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and expected <= set(ids):
                break
            for records in batch.values():
                ids.extend(events_pb2.MatchRef.FromString(r.value or b"").match_id for r in records)
    finally:
        await consumer.stop()
    return ids


@dataclass
class Rig:
    """One listing source wired to real stores, polled by the test."""

    source: MatchIdPagedSource
    window: WindowStore
    redis: aioredis.Redis
    topic: str
    publisher: MatchRefPublisher


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"ingest-sup-{uuid.uuid4().hex[:8]}"
    await ensure_kafka_topics(kafka_bootstrap, {name: 2})
    return name


@pytest.fixture
async def stores(redis_url: str, kafka_bootstrap: str, topic: str) -> AsyncIterator[Stores]:
    redis = aioredis.Redis.from_url(redis_url)
    publisher = MatchRefPublisher(kafka_bootstrap, topic)
    await publisher.start()
    yield redis, publisher
    await publisher.stop()
    await redis.aclose()


def make_source(
    replayer: FeedReplayer,
    redis: aioredis.Redis,
    publisher: Any,
    *,
    pages: int,
    name: str = "opendota_public",
) -> tuple[MatchIdPagedSource, OpenDotaClient]:
    # attempts=1: every fault reaches the source, none is retried away inside the client.
    client = OpenDotaClient(
        api=JsonApi(
            replayer.opendota_url, bucket=TokenBucket(1000, 1000), attempts=1, timeout_seconds=1
        )
    )
    source = MatchIdPagedSource(
        SourceHealth(name, events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES),
        lambda less_than: client.public_matches(less_than_match_id=less_than),
        publisher,
        CursorStore(redis),
        WindowStore(redis),
        max_pages_per_poll=pages,
        carries_summary=True,
        late_window_seconds=LATE_WINDOW,
    )
    return source, client


async def poll_until_caught_up(source: MatchIdPagedSource, *, limit: int = 200) -> None:
    for _ in range(limit):
        more = await source.poll()
        if not more and source.health.open_gaps == 0:
            return
    pytest.fail(f"not caught up after {limit} polls: {source.health}")


def late_finishers(rows: Sequence[dict[str, Any]]) -> set[int]:
    """Ids listed after a higher id had been listed: below any cursor at the highest id read."""
    late, newest_listed = set(), 0
    for row in sorted(rows, key=lambda r: (match_end(r), r["match_id"])):
        if row["match_id"] < newest_listed:
            late.add(row["match_id"])
        newest_listed = max(newest_listed, row["match_id"])
    return late


async def test_late_finishers_are_published_once_as_the_clock_jumps_through_the_replay(
    data_dir: Path,
    stores: tuple[aioredis.Redis, MatchRefPublisher],
    kafka_bootstrap: str,
    topic: str,
) -> None:
    redis, publisher = stores
    rows = load_public_matches(data_dir, every=60)
    late = late_finishers(rows)
    assert len(late) > 100, "the data set must hold games that end below listed ids"
    with FeedReplayer(rows) as replayer:
        source, client = make_source(replayer, redis, publisher, pages=40)
        try:
            floors = []
            while not replayer.all_finished:
                replayer.jump(600)  # ten minutes of play between polls
                await poll_until_caught_up(source)
                floors.append(source.health.floor)
                assert source.health.lag_matches == 0
            listed = replayer.listed_ids()
        finally:
            await client.close()
    published = await topic_ids(kafka_bootstrap, topic, set(listed))
    assert set(published) == set(listed)
    assert late & set(listed) <= set(published)
    counts = Counter(published)
    assert max(counts.values()) == 1, "an id was published twice"
    # The window moved: the floor rose past the first hours, and ids below it were forgotten.
    assert floors[0] == 0
    assert floors[-1] is not None
    assert floors[-1] > min(listed)
    kept = await redis.zcard(seen_key("opendota_public"))
    assert 0 < kept < len(listed)


async def test_a_failed_page_and_an_exhausted_budget_leave_gaps_that_later_polls_read(
    data_dir: Path,
    stores: tuple[aioredis.Redis, MatchRefPublisher],
    kafka_bootstrap: str,
    topic: str,
) -> None:
    redis, publisher = stores
    rows = load_public_matches(data_dir, every=20)
    with FeedReplayer(rows) as replayer:
        source, client = make_source(replayer, redis, publisher, pages=3)
        try:
            assert await source.poll() is False  # nothing has ended yet: floor 0
            assert source.health.floor == 0
            replayer.jump_to(replayer.data_start + 5400)  # about 12 pages ended at once
            listed = replayer.listed_ids()
            assert len(listed) > 1000
            assert await source.poll() is True
            assert source.health.open_gaps == 1
            assert source.health.oldest_gap_at is not None
            assert source.health.lag_matches is None
            published_first = source.health.matches_published
            assert published_first == 300
            # The upstream now fails every request: nothing moves, the gap stays.
            replayer.faults = FaultPlan(server_error_rate=1.0)
            gaps = await source._window.gaps("opendota_public")
            assert await source.poll() is False
            assert "HTTP 502" in source.health.last_error
            assert source.health.consecutive_failures == 1
            assert await source._window.gaps("opendota_public") == gaps
            # Back up: later polls read the gap (budget shared with the head), nothing skipped.
            replayer.faults = FaultPlan()
            await poll_until_caught_up(source)
            assert source.health.consecutive_failures == 0
            assert source.health.lag_matches == 0
        finally:
            await client.close()
    published = await topic_ids(kafka_bootstrap, topic, set(listed))
    assert set(listed) <= set(published)
    assert len(published) == len(set(published))


class SwitchablePublisher:
    """Publishes through `current`; the test swaps a closed real producer for a live one."""

    def __init__(self, current: MatchRefPublisher) -> None:
        self.current = current

    async def publish(self, refs: Sequence[events_pb2.MatchRef]) -> None:
        await self.current.publish(refs)


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while True:
            outcome = condition()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(0.02)


async def test_the_supervisor_survives_redis_kafka_and_bad_row_errors_and_reports_them(
    data_dir: Path,
    stores: tuple[aioredis.Redis, MatchRefPublisher],
    kafka_bootstrap: str,
    topic: str,
) -> None:
    redis, live = stores
    rows = load_public_matches(data_dir, every=400)[:100]
    # Two rows the summary cannot hold: a hero list that is not ids, a negative duration.
    bad_heroes = {**rows[10], "radiant_team": ["x", 2, 3, 4, 5]}
    negative = {**rows[20], "duration": -30}
    rows[10], rows[20] = bad_heroes, negative
    closed = MatchRefPublisher(kafka_bootstrap, topic)
    await closed.start()
    await closed.stop()
    publisher = SwitchablePublisher(closed)
    # A real Redis error: the published-ids key holds a string (WRONGTYPE for ZMSCORE).
    await redis.set(seen_key("opendota_public"), "not a sorted set")
    reports: list[bool] = []
    with FeedReplayer(rows) as replayer:
        replayer.jump_to(replayer.last_end)
        bad_ids = {bad_heroes["match_id"], negative["match_id"]}
        expected = set(replayer.listed_ids()) - bad_ids
        assert len(expected) == len(rows) - 3  # OpenDota does not list the newest id
        source, client = make_source(replayer, redis, publisher, pages=5)
        health = source.health
        stop = asyncio.Event()
        task = asyncio.create_task(
            supervise(
                source,
                stop,
                idle_seconds=0.05,
                max_backoff_seconds=0.2,
                report=lambda h: reports.append(h.consecutive_failures < 3),
            )
        )
        try:
            await wait_for(lambda: health.errors_by_kind.get("ResponseError", 0) >= 3)
            assert not reports[-1], "three failed polls in a row: reported down"
            assert "WRONGTYPE" in health.last_error
            await redis.delete(seen_key("opendota_public"))
            await wait_for(lambda: health.errors_total > health.errors_by_kind["ResponseError"])
            kafka_kinds = set(health.errors_by_kind) - {"ResponseError"}
            assert kafka_kinds, health.errors_by_kind
            publisher.current = live
            await wait_for(lambda: health.matches_published == len(expected))
            await wait_for(lambda: health.consecutive_failures == 0 and reports[-1])
            assert not task.done()
        finally:
            stop.set()
            await task
            await client.close()
    assert health.bad_rows == 2
    assert health.restarts >= 4
    assert health.errors_total >= 4
    assert sum(health.errors_by_kind.values()) == health.errors_total
    published = await topic_ids(kafka_bootstrap, topic, expected)
    assert set(published) == expected


async def test_a_source_that_keeps_failing_is_down_in_status_and_grpc_health(
    redis_url: str, kafka_bootstrap: str
) -> None:
    settings = IngestSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "opendota_base_url": f"http://127.0.0.1:{free_port()}/api",
            "opendota_timeout_seconds": 1,
            "ingest_idle_seconds": 0.05,
            "ingest_max_backoff_seconds": 0.2,
        }
    )
    server = build_server(settings, key_source=_KEYS.source)
    port = await server.start()
    entry = source_health_name("opendota_public")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.IngestServiceStub(channel)
            status = None
            async with asyncio.timeout(60):
                while status is None or status.state != pb.SOURCE_STATE_DOWN:
                    status = (
                        await stub.GetIngestStatus(pb.GetIngestStatusRequest(), metadata=_ADMIN)
                    ).sources[0]
                    await asyncio.sleep(0.1)
            assert status.last_error
            assert not status.HasField("lag_matches")
            await wait_for(lambda: _is(grpc_health.check_health(channel, entry), "NOT_SERVING"), 10)
            # The service as a whole still answers: one source down is not the process down.
            assert await grpc_health.check_health(channel) == "SERVING"
    finally:
        await server.stop(0)


async def _is(status: Awaitable[str], expected: str) -> bool:
    return await status == expected


async def test_a_restarted_ingest_resumes_a_backfill_from_its_progress(
    redis_url: str, kafka_bootstrap: str, topic: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    # What a process killed mid-job left behind: a running job, 1,000 of 2,500 ids published.
    job = JobRecord("killed-job", None, 1, 2500, 2500, 1000, "running", 1.0, 1.0)
    try:
        assert await JobStore(redis).admit(job, MAX_RUNNING)
        await JobStore(redis).save(job)
    finally:
        await redis.aclose()
    settings = IngestSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "kafka_topic_match_ids": topic,
            "opendota_base_url": f"http://127.0.0.1:{free_port()}/api",
        }
    )
    server = build_server(settings, key_source=_KEYS.source)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.IngestServiceStub(channel)
            listed = None
            async with asyncio.timeout(60):
                while listed is None or listed.state != pb.BACKFILL_STATE_SUCCEEDED:
                    response = await stub.GetIngestStatus(
                        pb.GetIngestStatusRequest(), metadata=_ADMIN
                    )
                    listed = next(j for j in response.jobs if j.job_id == "killed-job")
                    await asyncio.sleep(0.1)
            assert listed.published == listed.total == 2500
    finally:
        await server.stop(0)
    published = await topic_ids(kafka_bootstrap, topic, set(range(1001, 2501)))
    assert set(published) == set(range(1001, 2501)), "resumed at its progress, not from 1"
    redis = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await redis.ttl("counterpick:ingest:backfill:killed-job")
        assert 0 < ttl <= 24 * 3600, "a finished job expires"
    finally:
        await redis.aclose()


class HeldPublisher:
    """Kafka acknowledgements held back until the test releases them (jobs stay running)."""

    def __init__(self, inner: MatchRefPublisher) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def publish(self, refs: Sequence[events_pb2.MatchRef]) -> None:
        await self.release.wait()
        await self.inner.publish(refs)


async def test_at_most_four_backfills_run_and_a_fifth_is_refused_until_one_ends(
    stores: Stores, kafka_bootstrap: str, topic: str
) -> None:
    redis, live = stores
    held = HeldPublisher(live)
    jobs = BackfillJobs(held, JobStore(redis))
    started = [await jobs.submit(match_ids=[10 * n + k for k in range(1, 4)]) for n in range(4)]
    with pytest.raises(TooManyJobs):
        await jobs.submit(match_ids=[99])
    held.release.set()
    for job in started:
        await asyncio.wait_for(jobs.wait(job.job_id), 30)
    listing = await jobs.listing()
    assert {j.job_id for j in listing} == {j.job_id for j in started}
    assert {j.state for j in listing} == {"succeeded"}
    fifth = await jobs.submit(match_ids=[99])
    await asyncio.wait_for(jobs.wait(fifth.job_id), 30)
    await jobs.stop()
    published = await topic_ids(kafka_bootstrap, topic, {99})
    assert len(published) == 13
