"""Consumes match references from Kafka, turns them into clean matches, loads the warehouse.

At-least-once with an idempotent sink: offsets are committed only up to the first record whose
match is not in the warehouse (and whose dead letter, if any, Kafka has not acknowledged), so a
crash or a rebalance replays from there and ReplacingMergeTree makes the replay harmless.
References without a match are fetched beside the consumer loop, never in it: a slow upstream
holds back the commit point of its partitions, not the polling that keeps the group membership.
A record that cannot become a match goes to the dead-letter topic and never blocks its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
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
    # Partition assignments received (1 after the first join; each rebalance adds one).
    assignments: int = 0
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


class _PartitionProgress:
    """The offsets of one assigned partition that were read but whose outcome is not stored yet.

    Each open unit (a batch's first record in the partition, or one record waiting for its
    fetch) holds its offset. The commit point is the lowest held offset, or one past the highest
    offset read when nothing is held: a commit never passes a record whose match is not stored,
    while records behind a slow fetch are stored and committed up to it.
    """

    __slots__ = ("committed", "held", "read_to")

    def __init__(self) -> None:
        self.held: Counter[int] = Counter()
        self.read_to = -1
        self.committed = -1

    def read(self, first: int, last: int) -> None:
        """Records `first`..`last` arrived; `first` stays held until the batch is stored."""
        self.held[first] += 1
        self.read_to = max(self.read_to, last + 1)

    def hold(self, offset: int) -> None:
        """Keep the commit point at or below `offset` until `release(offset)`."""
        self.held[offset] += 1

    def release(self, offset: int) -> None:
        """The unit holding `offset` is stored (or dead-lettered, or skipped)."""
        left = self.held[offset] - 1
        if left > 0:
            self.held[offset] = left
        else:
            del self.held[offset]

    def commit_point(self) -> int | None:
        """The offset to commit now, or None when it would not move the committed one."""
        point = min(self.held) if self.held else self.read_to
        return point if point > self.committed else None


@dataclass(slots=True)
class _FetchJob:
    """A reference that carries no match, waiting for (or in) its upstream fetch."""

    record: ConsumerRecord[bytes, bytes]
    match_id: int
    progress: _PartitionProgress
    outcome: CleanMatch | _Rejected | SkipReason | None = None
    finished_at: float = 0.0


@dataclass
class _PreparedBatch:
    """A transformed batch waiting for its turn to be stored and committed."""

    span: trace.Span
    started: float
    record_count: int
    releases: list[tuple[_PartitionProgress, int]] = field(default_factory=list)
    fetched: int = 0
    kept: dict[int, CleanMatch] = field(default_factory=dict)
    rejected: list[_Rejected] = field(default_factory=list)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands the group's partition moves to the pipeline."""

    def __init__(self, pipeline: MatchPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._pipeline._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._pipeline._assigned(assigned)


def _offset_ranges(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> dict[TopicPartition, tuple[int, int]]:
    """The first and last offset of the records of each partition."""
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        known = ranges.get(partition)
        offset = record.offset
        if known is None:
            ranges[partition] = (offset, offset)
        elif offset < known[0] or offset > known[1]:
            ranges[partition] = (min(known[0], offset), max(known[1], offset))
    return ranges


class MatchPipeline:
    """The consumer loop of the etl service.

    Records that carry their match are transformed and stored in large batches. Records that
    need an upstream fetch go to a queue served by `fetch_concurrency` workers at whatever pace
    upstream allows (OpenDota without a key: one request per second, 3,000 a day); the loop keeps
    polling meanwhile, because the group drops a member that does not poll within
    `max_poll_interval_ms`. When `fetch_backlog` references wait for a fetch, the assigned
    partitions are paused (polling goes on, fetching no records) until half of them are done.
    Offsets are committed per partition up to the first record not stored yet
    (`_PartitionProgress`), so a crash or a rebalance replays from there and the idempotent
    sink absorbs what is stored twice.
    """

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
        fetch_backlog: int = 256,
        fetch_flush_seconds: float = 2.0,
        batch_size: int = 5000,
        session_timeout_ms: int = 10_000,
        max_poll_interval_ms: int = 300_000,
        stats: EtlStats | None = None,
    ) -> None:
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.group_id = group_id
        self._bootstrap = bootstrap_servers
        self.loader = MatchLoader(warehouse, constants, fetcher)
        self._constants = constants
        self._fetch_concurrency = fetch_concurrency
        self._fetch_backlog = fetch_backlog
        self._fetch_flush_seconds = fetch_flush_seconds
        self._batch_size = batch_size
        self._session_timeout_ms = session_timeout_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self.stats = stats or EtlStats()
        self.consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        self._fetch_queue: asyncio.Queue[_FetchJob] = asyncio.Queue()
        # Fetch jobs queued, in flight, or finished but not stored yet: the backlog paused on.
        self._fetch_jobs = 0
        self._finished: list[_FetchJob] = []

    def use_constants(self, constants: DotaConstants) -> None:
        """Label and check the next matches with `constants` (a dotaconstants update)."""
        self._constants = constants
        self.loader.constants = constants

    @property
    def fetch_backlog(self) -> int:
        """References waiting for a fetch or for their fetched match to be stored."""
        return self._fetch_jobs

    async def start(self) -> None:
        """Join the consumer group and open the dead-letter producer."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
        await self._producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 4),
            max_poll_interval_ms=self._max_poll_interval_ms,
            max_poll_records=self._batch_size,
            # Messages with a full Steam match are ~5 KB: the 1 MB default per partition would
            # mean a broker round trip every ~200 records.
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
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
        chdb and the HTTP client release the GIL in), the next one is transformed. Only one load
        is in flight; fetches run beside both in their workers.
        """
        assert self.consumer is not None
        workers = [
            asyncio.create_task(self._fetch_worker(), name=f"etl-fetch-{n}")
            for n in range(self._fetch_concurrency)
        ]
        loading: asyncio.Task[None] | None = None
        stopped = False
        try:
            while not stop.is_set():
                for worker in workers:
                    if worker.done():
                        worker.result()  # a fetcher bug ends the loop loudly, not a worker quietly
                self._apply_backpressure()
                batches = await self.consumer.getmany(timeout_ms=500, max_records=self._batch_size)
                records = [record for partition in batches.values() for record in partition]
                if not records and not self._fetched_due():
                    if loading is not None:
                        # Idle: finish the pending load now so its offsets are committed promptly.
                        await loading
                        loading = None
                    continue
                prepared = await self._prepare(records)
                if loading is not None:
                    await loading
                loading = asyncio.create_task(self._load(prepared), name="etl-load")
            stopped = True
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if loading is not None:
                await loading
        if stopped and self._finished:
            # Store what was fetched already, so the next member need not fetch it again.
            await self._load(await self._prepare([]))

    def _apply_backpressure(self) -> None:
        """Pause every assigned partition while the fetch backlog is full; resume at half."""
        assert self.consumer is not None
        paused = self.consumer.paused()
        if self._fetch_jobs >= self._fetch_backlog:
            unpaused = self.consumer.assignment() - paused
            if unpaused:
                self.consumer.pause(*unpaused)
                log.info(
                    "fetch backlog full: partitions paused",
                    extra={"fields": {"backlog": self._fetch_jobs}},
                )
        elif paused and self._fetch_jobs <= self._fetch_backlog // 2:
            self.consumer.resume(*paused)
            log.info("fetch backlog drained: partitions resumed")

    def _fetched_due(self) -> bool:
        """Whether finished fetches should be stored now although no records arrived: when no
        other fetch is pending, or the oldest has waited `fetch_flush_seconds` (many small
        inserts are what ClickHouse handles worst)."""
        if not self._finished:
            return False
        if len(self._finished) == self._fetch_jobs:
            return True
        oldest = min(job.finished_at for job in self._finished)
        return time.monotonic() - oldest >= self._fetch_flush_seconds

    def _progress_of(self, partition: TopicPartition) -> _PartitionProgress:
        progress = self._progress.get(partition)
        if progress is None:
            progress = self._progress[partition] = _PartitionProgress()
        return progress

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        """Fresh progress for new partitions: reading restarts at their committed offset."""
        self.stats.assignments += 1
        for partition in assigned:
            self._progress[partition] = _PartitionProgress()

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is stored of the partitions leaving, then forget them: their queued and
        in-flight fetches are dropped when they surface, and the next owner replays from the
        commit (nothing past an unstored record was committed)."""
        await self._commit(revoked)
        for partition in revoked:
            self._progress.pop(partition, None)

    def _current(self, job: _FetchJob) -> bool:
        partition = TopicPartition(job.record.topic, job.record.partition)
        return self._progress.get(partition) is job.progress

    async def _prepare(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> _PreparedBatch:
        """Transform a batch, queue its fetches, take in finished fetches, apply the keep rule:
        everything short of touching storage."""
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
        )
        # Held before anything awaits, so no commit can pass these records meanwhile.
        for partition, (first, last) in _offset_ranges(records).items():
            progress = self._progress_of(partition)
            progress.read(first, last)
            batch.releases.append((progress, first))
        with trace.use_span(batch.span, end_on_exit=False):
            matches, batch.rejected, to_fetch = self._transform_all(records)
            to_fetch = await self._drop_stored_backfill(to_fetch)
        for record, ref in to_fetch:
            progress = self._progress_of(TopicPartition(record.topic, record.partition))
            progress.hold(record.offset)
            self._fetch_jobs += 1
            self._fetch_queue.put_nowait(_FetchJob(record, ref.match_id, progress))
        finished, self._finished = self._finished, []
        for job in finished:
            batch.fetched += 1
            batch.releases.append((job.progress, job.record.offset))
            if not self._current(job):
                continue  # its partition moved: the new owner fetches it again
            if isinstance(job.outcome, CleanMatch):
                matches.append(job.outcome)
            elif isinstance(job.outcome, _Rejected):
                batch.rejected.append(job.outcome)
            elif job.outcome is not None:
                self.stats.skipped[job.outcome.value] += 1
        for match in matches:
            reason = self.loader.skip_reason(match)
            if reason is None:
                batch.kept[match.match_id] = match
            else:
                self.stats.skipped[reason.value] += 1
        return batch

    async def _drop_stored_backfill(
        self, to_fetch: list[tuple[ConsumerRecord[bytes, bytes], events_pb2.MatchRef]]
    ) -> list[tuple[ConsumerRecord[bytes, bytes], events_pb2.MatchRef]]:
        """Backfill references of matches already stored are skipped (ALREADY_LOADED) without a
        fetch: repeating a backfill must not spend the upstream budget again."""
        backfill = {
            ref.match_id for _, ref in to_fetch if ref.source == events_pb2.MATCH_SOURCE_BACKFILL
        }
        if not backfill:
            return to_fetch
        stored = await self.loader.stored(backfill)
        if not stored:
            return to_fetch
        kept = []
        for record, ref in to_fetch:
            if ref.source == events_pb2.MATCH_SOURCE_BACKFILL and ref.match_id in stored:
                self.stats.skipped[SkipReason.ALREADY_LOADED.value] += 1
            else:
                kept.append((record, ref))
        return kept

    async def _fetch_worker(self) -> None:
        """Fetch queued references one at a time, forever; cancelled when the loop ends."""
        while True:
            job = await self._fetch_queue.get()
            if self._current(job):
                job.outcome = await self._fetch(job)
            job.finished_at = time.monotonic()
            self._finished.append(job)

    async def _fetch(self, job: _FetchJob) -> CleanMatch | _Rejected | SkipReason:
        if self.loader.fetcher is None:
            return _Rejected(
                job.record,
                events_pb2.DEAD_LETTER_REASON_FETCH_FAILED,
                "message carries no match and no fetcher is configured",
                job.match_id,
            )
        try:
            # One attempt here: the HTTP client already retried what was worth retrying; a
            # failure is a dead letter that `counterpick dlq` can replay later.
            return await self.loader.fetch(job.match_id)
        except (FetchFailed, UnusableMatch) as failed:
            return _Rejected(
                job.record, dead_letter_reason(failed.reason), failed.detail, job.match_id
            )
        except InsignificantMatch as insignificant:
            return insignificant.reason

    async def _load(self, batch: _PreparedBatch) -> None:
        """Store a prepared batch, dead-letter its rejects, then commit what is now stored."""
        span = batch.span
        try:
            with trace.use_span(span, end_on_exit=False):
                if batch.kept:
                    await self.loader.store(list(batch.kept.values()))
                await self._dead_letter(batch.rejected)
                for progress, offset in batch.releases:
                    progress.release(offset)
                self._fetch_jobs -= batch.fetched
                await self._commit()
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

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit each partition's commit point where it moved (of `only`, when given)."""
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        progresses: list[tuple[_PartitionProgress, int]] = []
        for partition, progress in self._progress.items():
            if only is not None and partition not in only:
                continue
            point = progress.commit_point()
            if point is not None:
                offsets[partition] = point
                progresses.append((progress, point))
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another member during a rebalance; it replays from the
            # last commit and the idempotent sink absorbs the repeat.
            log.warning("offset commit lost to a rebalance: %s", error)
            return
        for progress, point in progresses:
            progress.committed = max(progress.committed, point)

    def _transform_all(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> tuple[
        list[CleanMatch],
        list[_Rejected],
        list[tuple[ConsumerRecord[bytes, bytes], events_pb2.MatchRef]],
    ]:
        """The matches the records carry, the records that are dead letters, and the records
        whose match has to be fetched; insignificant records are counted as skipped."""
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
        return matches, rejected, to_fetch

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
                return transform.from_opendota_match(raw, self._constants)
            return transform.from_steam_match(raw, source, self._constants)
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
