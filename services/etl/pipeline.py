"""Consumes match references from Kafka, turns them into clean matches, loads the warehouse.

At-least-once with an idempotent sink: offsets are committed only after the batch is in the
warehouse and its dead letters are acknowledged by Kafka, so a crash replays at most one batch and
ReplacingMergeTree makes the replay harmless. Enrichment fetches run with bounded concurrency; a
record that cannot become a match goes to the dead-letter topic and never blocks its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from google.protobuf import message as protobuf_message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from counterpick.events.v1 import events_pb2
from services.common.dota_constants import DotaConstants
from services.common.telemetry import extract_kafka_context, inject_kafka_headers
from services.etl import transform
from services.etl.loader import FetchFailed, MatchFetcher, MatchLoader
from services.etl.matches import (
    CleanMatch,
    InsignificantMatch,
    MatchSource,
    RejectReason,
    SkipReason,
    UnusableMatch,
)
from services.etl.repo import Warehouse

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

_DEAD_LETTER_REASONS: dict[RejectReason, events_pb2.DeadLetterReason.ValueType] = {
    RejectReason.MALFORMED_MESSAGE: events_pb2.DEAD_LETTER_REASON_MALFORMED_MESSAGE,
    RejectReason.MISSING_FIELD: events_pb2.DEAD_LETTER_REASON_MISSING_FIELD,
    RejectReason.UNKNOWN_HERO: events_pb2.DEAD_LETTER_REASON_UNKNOWN_HERO,
    RejectReason.INVALID_VALUE: events_pb2.DEAD_LETTER_REASON_INVALID_VALUE,
    RejectReason.FETCH_FAILED: events_pb2.DEAD_LETTER_REASON_FETCH_FAILED,
    RejectReason.NOT_FOUND_UPSTREAM: events_pb2.DEAD_LETTER_REASON_NOT_FOUND_UPSTREAM,
}
_SOURCES = {
    events_pb2.MATCH_SOURCE_STEAM_SEQUENCE: MatchSource.STEAM_SEQUENCE,
    events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES: MatchSource.OPENDOTA_PUBLIC_MATCHES,
    events_pb2.MATCH_SOURCE_OPENDOTA_PARSED_MATCHES: MatchSource.OPENDOTA_PARSED_MATCHES,
    events_pb2.MATCH_SOURCE_BACKFILL: MatchSource.BACKFILL,
    events_pb2.MATCH_SOURCE_IMPORT: MatchSource.IMPORT,
}


def dead_letter_reason(reason: RejectReason) -> events_pb2.DeadLetterReason.ValueType:
    """The dead-letter reason of the events API for a reject reason."""
    return _DEAD_LETTER_REASONS[reason]


@dataclass
class EtlStats:
    """Counters behind EtlService.GetEtlStatus."""

    started_at: float = field(default_factory=time.time)
    matches_loaded: int = 0
    dead_letters: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    last_batch_size: int = 0
    last_batch_at: float | None = None
    last_batch_seconds: float = 0.0
    _recent: deque[tuple[float, int]] = field(default_factory=deque)

    def record_batch(self, loaded: int, seconds: float) -> None:
        """Account one committed batch."""
        now = time.time()
        self.matches_loaded += loaded
        self.last_batch_size = loaded
        self.last_batch_at = now
        self.last_batch_seconds = seconds
        self._recent.append((now, loaded))
        while self._recent and self._recent[0][0] < now - 60:
            self._recent.popleft()

    def matches_per_second(self) -> float:
        """Loaded matches per second over the last minute."""
        now = time.time()
        recent = sum(count for at, count in self._recent if at >= now - 60)
        window = min(60.0, max(1.0, now - self.started_at))
        return recent / window


@dataclass
class _Rejected:
    record: ConsumerRecord[bytes, bytes]
    reason: int
    detail: str
    match_id: int | None = None


@dataclass
class _PreparedBatch:
    """A transformed batch waiting for its turn to be stored and committed."""

    span: trace.Span
    started: float
    record_count: int
    offsets: dict[TopicPartition, int]
    kept: dict[int, CleanMatch] = field(default_factory=dict)
    rejected: list[_Rejected] = field(default_factory=list)


def _next_offsets(records: Sequence[ConsumerRecord[bytes, bytes]]) -> dict[TopicPartition, int]:
    """The offset to commit per partition once these records are stored: last offset + 1."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    return offsets


class MatchPipeline:
    """The consumer loop of the etl service."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        dead_letter_topic: str,
        group_id: str,
        warehouse: Warehouse,
        constants: DotaConstants,
        fetcher: MatchFetcher | None,
        fetch_concurrency: int = 8,
        batch_size: int = 5000,
        session_timeout_ms: int = 10_000,
        stats: EtlStats | None = None,
    ) -> None:
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.group_id = group_id
        self._bootstrap = bootstrap_servers
        self.loader = MatchLoader(warehouse, constants, fetcher)
        self._constants = constants
        self._fetch_slots = asyncio.Semaphore(fetch_concurrency)
        self._batch_size = batch_size
        self._session_timeout_ms = session_timeout_ms
        self.stats = stats or EtlStats()
        self.consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Join the consumer group and open the dead-letter producer."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
        await self._producer.start()
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 4),
            max_poll_records=self._batch_size,
            # Messages with a full Steam match are ~5 KB: the 1 MB default per partition would
            # mean a broker round trip every ~200 records.
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        """Leave the group (uncommitted work is replayed by the next member)."""
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set.

        Two stages overlap: while one batch is being written to the warehouse (in a thread, which
        chdb and the HTTP client release the GIL in), the next one is fetched and transformed.
        Only one load is in flight and loads commit in order, so a commit never covers a record
        whose batch is not stored yet.
        """
        assert self.consumer is not None
        loading: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=500, max_records=self._batch_size)
                records = [record for partition in batches.values() for record in partition]
                if not records:
                    if loading is not None:
                        # Idle: finish the pending load now so its offsets are committed promptly.
                        await loading
                        loading = None
                    continue
                prepared = await self._prepare(records)
                if loading is not None:
                    await loading
                loading = asyncio.create_task(self._load(prepared), name="etl-load")
        finally:
            if loading is not None:
                await loading

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Load one batch and commit it; dead letters are acknowledged before the commit."""
        await self._load(await self._prepare(records))

    async def _prepare(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> _PreparedBatch:
        """Transform a batch and apply the keep rule: everything short of touching storage."""
        links = [
            trace.Link(span_context)
            for record in records[:32]
            if (
                span_context := trace.get_current_span(
                    extract_kafka_context(record.headers)
                ).get_span_context()
            ).is_valid
        ]
        batch = _PreparedBatch(
            span=tracer.start_span("etl.batch", links=links),
            started=time.perf_counter(),
            record_count=len(records),
            offsets=_next_offsets(records),
        )
        with trace.use_span(batch.span, end_on_exit=False):
            matches, batch.rejected = await self._transform_all(records)
        for match in matches:
            reason = self.loader.skip_reason(match)
            if reason is None:
                batch.kept[match.match_id] = match
            else:
                self.stats.skipped[reason.value] += 1
        return batch

    async def _load(self, batch: _PreparedBatch) -> None:
        """Store a prepared batch, dead-letter its rejects, then commit exactly its offsets."""
        assert self.consumer is not None
        span = batch.span
        try:
            with trace.use_span(span, end_on_exit=False):
                if batch.kept:
                    await self.loader.store(list(batch.kept.values()))
                await self._dead_letter(batch.rejected)
                try:
                    await self.consumer.commit(batch.offsets)
                except (CommitFailedError, IllegalStateError) as error:
                    # The partitions moved to another member during a rebalance; it replays the
                    # batch from the last commit and the idempotent sink absorbs the repeat.
                    log.warning("offset commit lost to a rebalance: %s", error)
            span.set_attribute("counterpick.etl.records", batch.record_count)
            span.set_attribute("counterpick.etl.loaded", len(batch.kept))
            span.set_attribute("counterpick.etl.dead_letters", len(batch.rejected))
        except BaseException as error:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
            raise
        finally:
            span.end()
        self.stats.record_batch(len(batch.kept), time.perf_counter() - batch.started)

    async def _transform_all(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[CleanMatch], list[_Rejected]]:
        matches: list[CleanMatch] = []
        rejected: list[_Rejected] = []
        to_fetch: list[tuple[ConsumerRecord[bytes, bytes], events_pb2.MatchRef]] = []
        for record in records:
            try:
                ref = events_pb2.MatchRef.FromString(record.value or b"")
            except protobuf_message.DecodeError as error:
                rejected.append(
                    _Rejected(
                        record,
                        events_pb2.DEAD_LETTER_REASON_MALFORMED_MESSAGE,
                        f"not a counterpick.events.v1.MatchRef: {error}",
                    )
                )
                continue
            if ref.match_id == 0:
                rejected.append(
                    _Rejected(
                        record,
                        events_pb2.DEAD_LETTER_REASON_MISSING_FIELD,
                        "match_id is missing or 0",
                    )
                )
                continue
            try:
                match = self._from_message(ref)
            except UnusableMatch as unusable:
                rejected.append(
                    _Rejected(
                        record, dead_letter_reason(unusable.reason), unusable.detail, ref.match_id
                    )
                )
                continue
            except InsignificantMatch as insignificant:
                self.stats.skipped[insignificant.reason.value] += 1
                continue
            if match is None:
                to_fetch.append((record, ref))
            else:
                matches.append(match)
        if to_fetch:
            fetched = await asyncio.gather(*(self._fetch(record, ref) for record, ref in to_fetch))
            for result in fetched:
                if isinstance(result, CleanMatch):
                    matches.append(result)
                elif isinstance(result, _Rejected):
                    rejected.append(result)
                else:
                    self.stats.skipped[result.value] += 1
        return matches, rejected

    def _from_message(self, ref: events_pb2.MatchRef) -> CleanMatch | None:
        """The match the message carries, or None when it has to be fetched."""
        source = _SOURCES.get(ref.source, MatchSource.BACKFILL)
        if ref.HasField("raw_match") and ref.raw_match.json:
            try:
                raw = orjson.loads(ref.raw_match.json)
            except ValueError as error:
                raise UnusableMatch(
                    RejectReason.MALFORMED_MESSAGE, f"raw_match.json: {error}"
                ) from None
            if not isinstance(raw, dict):
                raise UnusableMatch(
                    RejectReason.MALFORMED_MESSAGE, "raw_match.json is not an object"
                )
            if ref.raw_match.format == events_pb2.RAW_MATCH_FORMAT_OPENDOTA_MATCH_JSON:
                return transform.from_opendota_match(raw)
            return transform.from_steam_match(raw, source)
        summary = ref.summary
        if ref.HasField("summary") and summary.radiant_hero_ids and summary.HasField("radiant_win"):
            has = summary.HasField
            return transform.from_draft(
                ref.match_id,
                summary.radiant_win,
                list(summary.radiant_hero_ids),
                list(summary.dire_hero_ids),
                source=source,
                constants=self._constants,
                start_time=summary.start_time.seconds if has("start_time") else None,
                match_seq_num=ref.match_seq_num if ref.HasField("match_seq_num") else None,
                duration_seconds=summary.duration_seconds if has("duration_seconds") else None,
                game_mode=summary.game_mode if has("game_mode") else None,
                lobby_type=summary.lobby_type if has("lobby_type") else None,
                avg_rank_tier=summary.avg_rank_tier if has("avg_rank_tier") else None,
            )
        return None

    async def _fetch(
        self, record: ConsumerRecord[bytes, bytes], ref: events_pb2.MatchRef
    ) -> CleanMatch | _Rejected | SkipReason:
        if self.loader.fetcher is None:
            return _Rejected(
                record,
                events_pb2.DEAD_LETTER_REASON_FETCH_FAILED,
                "message carries no match and no fetcher is configured",
                ref.match_id,
            )
        try:
            # One attempt here: the HTTP client already retried what was worth retrying, and a
            # record is never held back from its partition waiting for upstream.
            async with self._fetch_slots:
                return await self.loader.fetch(ref.match_id)
        except (FetchFailed, UnusableMatch) as failed:
            return _Rejected(record, dead_letter_reason(failed.reason), failed.detail, ref.match_id)
        except InsignificantMatch as insignificant:
            return insignificant.reason

    async def _dead_letter(self, rejected: Sequence[_Rejected]) -> None:
        assert self._producer is not None
        if not rejected:
            return
        now = Timestamp()
        now.GetCurrentTime()
        sends = []
        for item in rejected:
            record = item.record
            letter = events_pb2.DeadLetter(
                original_topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key or b"",
                value=record.value or b"",
                reason=item.reason,  # type: ignore[arg-type]
                detail=item.detail,
                failed_at=now,
                attempts=1,
                service="etl",
            )
            letter.original_timestamp.FromMilliseconds(record.timestamp)
            if item.match_id is not None:
                letter.match_id = item.match_id
            headers = inject_kafka_headers(list(record.headers or ()))
            sends.append(
                await self._producer.send(
                    self.dead_letter_topic,
                    letter.SerializeToString(),
                    key=record.key,
                    headers=headers,
                )
            )
            log.warning(
                "dead-lettered record",
                extra={
                    "fields": {
                        "partition": record.partition,
                        "offset": record.offset,
                        "reason": events_pb2.DeadLetterReason.Name(item.reason),  # type: ignore[arg-type]
                        "detail": item.detail,
                    }
                },
            )
        await asyncio.gather(*sends)
        self.stats.dead_letters += len(rejected)

    async def lag(self) -> list[tuple[int, int, int]]:
        """(partition, committed offset, end offset) for every assigned partition."""
        assert self.consumer is not None
        partitions = sorted(self.consumer.assignment(), key=lambda tp: tp.partition)
        if not partitions:
            return []
        ends = await self.consumer.end_offsets(partitions)
        rows = []
        for tp in partitions:
            committed = await self.consumer.committed(tp) or 0
            rows.append((tp.partition, committed, ends[tp]))
        return rows
