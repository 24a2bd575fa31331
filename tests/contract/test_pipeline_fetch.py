"""etl's fetch path against a real broker: a slow upstream never stalls the consumer group.

References that carry no match are fetched beside the consumer loop. With a max poll interval
far shorter than the fetches take, the member must keep its partitions (no rebalance loop),
store every match exactly once, never commit past a match it has not stored, and keep loading
the references that carry their data while the fetches crawl.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from counterpick.events.v1 import events_pb2
from services.common.dota_constants import load_constants
from services.common.stores import ensure_kafka_topics
from services.etl import transform
from services.etl.loader import FetchOutcome
from services.etl.pipeline import MatchPipeline
from services.etl.repo import Warehouse
from tests.contract.test_pipeline import Topics, publish, read_all, summary_ref

FETCH_SECONDS = 0.4
MAX_POLL_INTERVAL_MS = 2500


@dataclass
class SlowOpenDota:
    """A MatchFetcher that answers like a paced upstream: one match every FETCH_SECONDS.

    Before answering it records, for the match being fetched, the group's committed offset of
    its partition: the match is not stored yet, so that offset must not be past it."""

    template: dict[str, Any]
    pipeline: MatchPipeline | None = None
    where: dict[int, tuple[int, int]] = field(default_factory=dict)  # match -> partition, offset
    calls: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    in_flight: int = 0

    async def fetch_match(self, match_id: int) -> FetchOutcome:
        self.calls.append(match_id)
        self.in_flight += 1
        try:
            await self._check_commit(match_id)
            await asyncio.sleep(FETCH_SECONDS)
            return FetchOutcome({**self.template, "match_id": match_id})
        finally:
            self.in_flight -= 1

    async def _check_commit(self, match_id: int) -> None:
        pipeline = self.pipeline
        if pipeline is None or pipeline.consumer is None or match_id not in self.where:
            return
        partition, offset = self.where[match_id]
        committed = await pipeline.consumer.committed(TopicPartition(pipeline.topic, partition))
        if committed is not None and committed > offset:
            self.violations.append(f"{match_id}: committed {committed} > offset {offset}")


async def _positions(bootstrap: str, topic: str, expected: int) -> dict[int, tuple[int, int]]:
    """match id -> (partition, offset) of every record of the topic."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    where: dict[int, tuple[int, int]] = {}
    try:
        async with asyncio.timeout(30):
            while len(where) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        ref = events_pb2.MatchRef.FromString(record.value or b"")
                        where[ref.match_id] = (record.partition, record.offset)
    finally:
        await consumer.stop()
    return where


def _pipeline(
    bootstrap: str,
    topics: Topics,
    warehouse: Warehouse,
    group: str,
    fetcher: SlowOpenDota,
    *,
    fetch_backlog: int = 256,
) -> MatchPipeline:
    pipeline = MatchPipeline(
        bootstrap_servers=bootstrap,
        topic=topics.raw,
        dead_letter_topic=topics.dlq,
        group_id=group,
        warehouse=warehouse,
        constants=load_constants(),
        fetcher=fetcher,
        fetch_concurrency=1,
        fetch_backlog=fetch_backlog,
        fetch_flush_seconds=0.5,
        batch_size=100,
        session_timeout_ms=2000,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    fetcher.pipeline = pipeline
    return pipeline


async def _committed_total(pipeline: MatchPipeline, partitions: int) -> int:
    assert pipeline.consumer is not None
    total = 0
    for partition in range(partitions):
        total += await pipeline.consumer.committed(TopicPartition(pipeline.topic, partition)) or 0
    return total


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    names = Topics()
    await ensure_kafka_topics(kafka_bootstrap, {names.raw: 4, names.dlq: 1})
    return names


@pytest.fixture
def template(data_dir: Path) -> dict[str, Any]:
    match: dict[str, Any] = json.loads(
        (data_dir / "api-samples/odota-web/matches_2472899185.json").read_text()
    )
    return match


def _mixed_refs(fetched: int, carried: int) -> list[events_pb2.MatchRef]:
    """`fetched` id-only backfill references, alternating with the first of `carried` references
    that carry their draft: one poll returns several fetches' worth of waiting."""
    refs = [summary_ref(70_000 + i) for i in range(carried)]
    for i in range(fetched):
        refs.insert(
            2 * i, events_pb2.MatchRef(match_id=90_000 + i, source=events_pb2.MATCH_SOURCE_BACKFILL)
        )
    return refs


async def test_slow_fetches_outlast_the_poll_interval_without_a_rebalance(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, template: dict[str, Any]
) -> None:
    fetched, carried = 16, 300
    refs = _mixed_refs(fetched, carried)
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    fetcher = SlowOpenDota(template)
    fetcher.where = await _positions(kafka_bootstrap, topics.raw, len(refs))
    # The fetches alone take 16 x 0.4 s = 6.4 s: well over the 2.5 s max poll interval.
    assert fetched * FETCH_SECONDS * 1000 > 2 * MAX_POLL_INTERVAL_MS
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    pipeline = _pipeline(kafka_bootstrap, topics, warehouse, "etl-slow", fetcher)
    await pipeline.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(pipeline.run(stop))
    carried_loaded_while_fetching = False
    try:
        async with asyncio.timeout(90):
            while await _committed_total(pipeline, 4) < len(refs):
                assert not runner.done(), runner
                stored = warehouse.match_count()
                if stored >= carried and len(fetcher.calls) < fetched:
                    carried_loaded_while_fetching = True
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await runner
        await pipeline.stop()
    try:
        expected = [r.match_id for r in refs]
        assert warehouse.checksum() == (len(expected), sum(expected))
        assert sorted(fetcher.calls) == list(range(90_000, 90_000 + fetched))  # each once
        assert pipeline.stats.assignments == 1, "the member lost its partitions"
        assert pipeline.stats.matches_loaded == len(refs)
        assert pipeline.stats.dead_letters == 0
        assert fetcher.violations == []
        assert carried_loaded_while_fetching, "records with their data waited for the fetches"
        assert pipeline.fetch_backlog == 0
    finally:
        warehouse.close()


async def test_a_full_fetch_backlog_pauses_and_resumes_without_losing_the_group(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, template: dict[str, Any]
) -> None:
    fetched = 12
    refs = [
        events_pb2.MatchRef(match_id=95_000 + i, source=events_pb2.MATCH_SOURCE_BACKFILL)
        for i in range(fetched)
    ]
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    fetcher = SlowOpenDota(template)
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    pipeline = _pipeline(
        kafka_bootstrap, topics, warehouse, "etl-backlog", fetcher, fetch_backlog=2
    )
    await pipeline.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(pipeline.run(stop))
    saw_paused = False
    try:
        async with asyncio.timeout(90):
            while await _committed_total(pipeline, 4) < len(refs):
                assert not runner.done(), runner
                assert pipeline.consumer is not None
                saw_paused = saw_paused or bool(pipeline.consumer.paused())
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await runner
        await pipeline.stop()
    try:
        assert saw_paused, "the backlog bound never paused the partitions"
        assert warehouse.checksum() == (fetched, sum(r.match_id for r in refs))
        assert sorted(fetcher.calls) == [r.match_id for r in refs]
        assert pipeline.stats.assignments == 1
    finally:
        warehouse.close()


async def test_a_rebalance_mid_fetch_loses_nothing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, template: dict[str, Any]
) -> None:
    fetched, carried = 16, 200
    refs = _mixed_refs(fetched, carried)
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    where = await _positions(kafka_bootstrap, topics.raw, len(refs))
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    first_fetcher, second_fetcher = (
        SlowOpenDota(template, where=where),
        SlowOpenDota(template, where=where),
    )
    first = _pipeline(kafka_bootstrap, topics, warehouse, "etl-moving", first_fetcher)
    second = _pipeline(kafka_bootstrap, topics, warehouse, "etl-moving", second_fetcher)
    stop = asyncio.Event()
    await first.start()
    runners = [asyncio.create_task(first.run(stop))]
    try:
        async with asyncio.timeout(120):
            # A second member joins while the first is in the middle of its fetches.
            while first_fetcher.in_flight == 0 or len(first_fetcher.calls) < 3:
                assert not runners[0].done(), runners[0]
                await asyncio.sleep(0.05)
            assert len(first_fetcher.calls) < fetched
            await second.start()
            runners.append(asyncio.create_task(second.run(stop)))
            started = time.monotonic()
            while True:
                for runner in runners:
                    assert not runner.done(), runner
                if await _committed_total(first, 4) >= len(refs):
                    break
                await asyncio.sleep(0.2)
            assert time.monotonic() - started < 110
    finally:
        stop.set()
        await asyncio.gather(*runners)
        await first.stop()
        await second.stop()
    try:
        assert first.stats.assignments >= 2, "the second member never took partitions"
        assert second.stats.assignments >= 1
        expected = [r.match_id for r in refs]
        assert warehouse.checksum() == (len(expected), sum(expected))
        # Every id-only reference was fetched by someone; a moved one may be fetched twice.
        assert set(first_fetcher.calls) | set(second_fetcher.calls) == {
            r.match_id for r in refs if r.source == events_pb2.MATCH_SOURCE_BACKFILL
        }
        assert first_fetcher.violations == second_fetcher.violations == []
        assert first.stats.dead_letters == second.stats.dead_letters == 0
    finally:
        warehouse.close()
    assert await read_all(kafka_bootstrap, topics.dlq, 0) == []


async def test_backfill_references_of_stored_matches_are_skipped_without_a_fetch(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, template: dict[str, Any]
) -> None:
    stored_id, new_id, parsed_id = 97_001, 97_002, 97_003
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    for match_id in (stored_id, parsed_id):
        warehouse.insert_matches(
            [transform.from_opendota_match({**template, "match_id": match_id})]
        )
    refs = [
        events_pb2.MatchRef(match_id=stored_id, source=events_pb2.MATCH_SOURCE_BACKFILL),
        events_pb2.MatchRef(match_id=new_id, source=events_pb2.MATCH_SOURCE_BACKFILL),
        # Not a backfill: a parsed-match listing may bring more than what is stored, so fetch.
        events_pb2.MatchRef(
            match_id=parsed_id, source=events_pb2.MATCH_SOURCE_OPENDOTA_PARSED_MATCHES
        ),
    ]
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    fetcher = SlowOpenDota(template)
    pipeline = _pipeline(kafka_bootstrap, topics, warehouse, "etl-backfill", fetcher)
    await pipeline.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(pipeline.run(stop))
    try:
        async with asyncio.timeout(60):
            while await _committed_total(pipeline, 4) < len(refs):
                assert not runner.done(), runner
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await runner
        await pipeline.stop()
    try:
        assert sorted(fetcher.calls) == [new_id, parsed_id]
        assert pipeline.stats.skipped == {"already_loaded": 1}
        assert pipeline.stats.matches_loaded == 2
        assert warehouse.existing_match_ids([stored_id, new_id, parsed_id]) == {
            stored_id,
            new_id,
            parsed_id,
        }
    finally:
        warehouse.close()
