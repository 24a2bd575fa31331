"""ingest against replayed OpenDota pages, a real broker and a real Redis cursor."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from counterpick.events.v1 import events_pb2
from services.common.external.json_api import JsonApi
from services.common.external.opendota import OpenDotaClient
from services.common.external.rate_limits import TokenBucket
from services.common.stores import ensure_kafka_topics
from services.ingest.publisher import MatchRefPublisher
from services.ingest.repo import CursorStore, WindowStore
from services.ingest.sources import MatchIdPagedSource, SourceHealth
from tests.replay_server import (
    SEQUENCE_PATH,
    Fault,
    ReplayServer,
    recorded_public_matches,
)


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(data_dir) as replay:
        yield replay


async def consume_ids(bootstrap: str, topic: str, minimum: int) -> list[int]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    ids: list[int] = []
    try:
        async with asyncio.timeout(20):
            while len(ids) < minimum:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    ids.extend(
                        events_pb2.MatchRef.FromString(r.value or b"").match_id for r in records
                    )
    finally:
        await consumer.stop()
    return ids


class CrashAfterPublish(WindowStore):
    """Window state whose first record of published ids dies, as a process killed right after
    Kafka acknowledged a page and before its progress reached Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self.crashed = False

    async def mark_seen(self, source: str, match_ids: list[int]) -> None:
        if match_ids and not self.crashed:
            self.crashed = True
            raise ConnectionError("killed before the progress was recorded")
        await super().mark_seen(source, match_ids)


async def test_poll_publishes_summaries_then_resumes_from_the_redis_cursor(
    server: ReplayServer, kafka_bootstrap: str, redis_url: str
) -> None:
    topic = f"ingest-{uuid.uuid4().hex[:8]}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 2})
    publisher = MatchRefPublisher(kafka_bootstrap, topic)
    await publisher.start()
    redis = aioredis.Redis.from_url(redis_url)
    api = JsonApi(server.opendota_url, bucket=TokenBucket(100, 100), attempts=1)
    client = OpenDotaClient(api=api)
    cursors = CursorStore(redis)
    window = CrashAfterPublish(redis)
    name = f"opendota_public_{uuid.uuid4().hex[:6]}"

    def source() -> MatchIdPagedSource:
        return MatchIdPagedSource(
            SourceHealth(name, events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES),
            lambda less_than: client.public_matches(less_than_match_id=less_than),
            publisher,
            cursors,
            window,
            max_pages_per_poll=3,
            carries_summary=True,
        )

    try:
        with pytest.raises(ConnectionError):
            await source().poll()  # published, then "killed" before the cursor moved
        assert await cursors.get(name) is None
        assert await window.floor(name) is None
        restarted = source()
        assert await restarted.poll() is True  # re-publishes: harmless, etl dedups
        cursor = await cursors.get(name)
        assert cursor is not None
        assert restarted.health.matches_published == 100
        # Nothing new upstream: the next poll publishes nothing and the cursor stays.
        assert await source().poll() is False
        assert await cursors.get(name) == cursor
        ids = await consume_ids(kafka_bootstrap, topic, 200)
        assert len(ids) == 200
        assert len(set(ids)) == 100
        assert max(ids) == cursor
        # Offline upstream: the failure is recorded, nothing is published, cursor unchanged.
        server.script("/api/publicMatches", Fault(status=500, body=b""))
        offline = source()
        assert await offline.poll() is False
        assert "HTTP 500" in offline.health.last_error
        assert offline.health.consecutive_failures == 1
        assert await cursors.get(name) == cursor
    finally:
        await publisher.stop()
        await client.close()
        await redis.aclose()


async def test_ingest_to_etl_to_warehouse_end_to_end(
    server: ReplayServer, kafka_bootstrap: str, redis_url: str, tmp_path: Path, data_dir: Path
) -> None:
    """Real pages in -> the same matches in the warehouse (minus those the rule skips)."""
    from services.common.dota_constants import load_constants
    from services.etl import transform
    from services.etl.pipeline import MatchPipeline
    from services.etl.repo import Warehouse
    from tests.contract.test_pipeline import run_until_handled

    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"e2e-{suffix}", f"e2e-dlq-{suffix}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 2, dlq: 1})
    publisher = MatchRefPublisher(kafka_bootstrap, topic)
    await publisher.start()
    redis = aioredis.Redis.from_url(redis_url)
    client = OpenDotaClient(
        api=JsonApi(server.opendota_url, bucket=TokenBucket(100, 100), attempts=1)
    )
    source = MatchIdPagedSource(
        SourceHealth(f"e2e_{suffix}", events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES),
        lambda less_than: client.public_matches(less_than_match_id=less_than),
        publisher,
        CursorStore(redis),
        WindowStore(redis),
        max_pages_per_poll=1,
        carries_summary=True,
    )
    try:
        assert await source.poll() is True
    finally:
        await publisher.stop()
        await client.close()
        await redis.aclose()
    rows = recorded_public_matches(data_dir)
    expected = {
        int(row["match_id"])
        for row in rows
        if transform.skip_reason(transform.from_public_match(row)) is None
    }
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    try:
        pipeline = MatchPipeline(
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            dead_letter_topic=dlq,
            group_id=f"e2e-{suffix}",
            warehouse=warehouse,
            constants=load_constants(),
            fetcher=None,
            session_timeout_ms=2000,
        )
        await run_until_handled(pipeline, len(rows))
        stored = {row[0] for row in warehouse.query_rows("SELECT match_id FROM matches FINAL")}
        assert stored == expected
        assert len(expected) > 50
    finally:
        warehouse.close()


async def test_steam_sequence_source_carries_full_matches_and_advances_by_seq_num(
    data_dir: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    from services.common.external.steam import SteamClient
    from services.ingest.sources import SteamSequenceSource

    topic = f"steam-{uuid.uuid4().hex[:8]}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 1})
    # With steam_key set the replay answers Valve's 403 unless the client sends that key.
    with ReplayServer(data_dir, steam_key="KEY") as steam_server:
        publisher = MatchRefPublisher(kafka_bootstrap, topic)
        await publisher.start()
        redis = aioredis.Redis.from_url(redis_url)
        client = SteamClient(
            api_key="KEY",
            api=JsonApi(
                steam_server.base_url,
                bucket=TokenBucket(100, 100),
                attempts=1,
                secret_params={"key": "KEY"},
            ),
        )
        name = f"steam_{uuid.uuid4().hex[:6]}"
        source = SteamSequenceSource(
            SourceHealth(name, events_pb2.MATCH_SOURCE_STEAM_SEQUENCE),
            client.match_history_by_seq_num,
            publisher,
            CursorStore(redis),
            start_at=240,
        )
        try:
            assert await source.poll() is True  # a full page: more is waiting
            cursor = await CursorStore(redis).get(name)
            request = steam_server.requests_to(SEQUENCE_PATH)[0]
            assert request.query["start_at_match_seq_num"] == ["240"]
            assert request.param("key") == "KEY"
        finally:
            await publisher.stop()
            await client.close()
            await redis.aclose()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    refs: list[events_pb2.MatchRef] = []
    try:
        async with asyncio.timeout(20):
            while len(refs) < 100:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    refs.extend(events_pb2.MatchRef.FromString(r.value or b"") for r in records)
    finally:
        await consumer.stop()
    assert cursor == max(ref.match_seq_num for ref in refs) + 1
    assert all(
        ref.raw_match.format == events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON for ref in refs
    )
    assert json.loads(refs[0].raw_match.json)["match_id"] == refs[0].match_id
