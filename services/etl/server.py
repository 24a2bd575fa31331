"""gRPC wiring of the etl service: status, reprocess and dead-letter RPCs around the consumer
pipeline."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any, cast

from aiokafka.errors import KafkaError

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from counterpick.events.v1 import events_pb2
from services.common.dota import Side, SkillBracket
from services.common.dota_proto import bracket_to_proto, side_to_proto
from services.common.errors import (
    CounterpickError,
    DependencyUnavailable,
    InvalidArgument,
    PermissionDenied,
)
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp as _timestamp
from services.common.tokens import KeySource, require_caller, verifier_from_settings
from services.common.warehouse.direct import ReadKind, WarehouseRead
from services.common.warehouse.ipc import ipc_chunks
from services.etl import dead_letters
from services.etl.config import EtlSettings
from services.etl.dead_letter_topic import DeadLetterTopicError, reason_name, reason_number
from services.etl.dumps import DumpFormatError
from services.etl.importer import ImportSummary, count_records, import_batches
from services.etl.loader import FetchFailed
from services.etl.matches import CleanMatch, InsignificantMatch, UnusableMatch
from services.etl.pipeline import dead_letter_reason
from services.etl.repo import Warehouse
from services.etl.runtime import EtlRuntime

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EtlService"].full_name

_SKIP_REASONS = {
    reason.name.removeprefix("SKIP_REASON_").lower(): reason.number
    for reason in pb.SkipReason.DESCRIPTOR.values
}

# The service identity (sub of its service token) allowed to read per-player rows.
MODEL_SERVICE_SUBJECT = "service:model"
_PER_PLAYER_QUERIES = frozenset(
    {pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS, pb.WAREHOUSE_QUERY_PLAYER_HERO_GROUPS}
)


def match_to_proto(match: CleanMatch) -> events_pb2.Match:
    """The clean match as the public events.v1.Match message."""
    message = events_pb2.Match(
        match_id=match.match_id,
        match_seq_num=match.match_seq_num or 0,
        duration_seconds=match.duration_seconds or 0,
        patch=match.patch or "",
        game_mode=match.game_mode or 0,
        lobby_type=match.lobby_type or 0,
        cluster=match.cluster or 0,
        region=match.region or 0,
        skill_bracket=bracket_to_proto(SkillBracket.from_rank_tier(match.avg_rank_tier)),
        radiant_win=match.radiant_win,
    )
    if match.start_time is not None:
        message.start_time.FromSeconds(match.start_time)
    if match.avg_rank_tier is not None:
        message.avg_rank_tier = match.avg_rank_tier
    for player in match.players:
        row = message.players.add(
            hero_id=player.hero_id,
            side=side_to_proto(player.side),
            player_slot=player.player_slot,
            win=match.radiant_win == (player.side is Side.RADIANT),
            kills=player.kills or 0,
            deaths=player.deaths or 0,
            assists=player.assists or 0,
            gold_per_min=player.gold_per_min or 0,
            xp_per_min=player.xp_per_min or 0,
            item_ids=list(player.items),
        )
        if player.account_id is not None:
            row.account_id = player.account_id
    for step in match.picks_bans:
        message.picks_bans.add(
            order=step.order,
            is_pick=step.is_pick,
            side=side_to_proto(step.side),
            hero_id=step.hero_id,
        )
    return message


class EtlServicer(pb_grpc.EtlServiceServicer):
    """counterpick.etl.v1.EtlService."""

    def __init__(self, settings: EtlSettings, runtime: EtlRuntime) -> None:
        self._settings = settings
        self._runtime = runtime

    async def GetEtlStatus(
        self, request: pb.GetEtlStatusRequest, context: Any
    ) -> pb.GetEtlStatusResponse:
        pipeline = self._runtime.pipeline
        stats = self._runtime.stats
        response = pb.GetEtlStatusResponse(
            consumer_group=self._settings.kafka_consumer_group,
            topic=self._settings.kafka_topic_match_ids,
            matches_per_second=stats.matches_per_second(),
            matches_loaded=stats.matches_loaded,
            dead_letters=stats.dead_letters,
            started_at=_timestamp(stats.started_at),
        )
        if pipeline is not None:
            for partition, committed, end in await pipeline.lag():
                response.partitions.add(
                    partition=partition,
                    committed_offset=committed,
                    end_offset=end,
                    lag=max(0, end - committed),
                )
            response.total_lag = sum(p.lag for p in response.partitions)
        for reason, count in sorted(stats.skipped.items()):
            response.skipped.add(reason=_SKIP_REASONS.get(reason, 0), count=count)
        if stats.last_batch_at is not None:
            response.last_batch.size = stats.last_batch_size
            response.last_batch.loaded_at.CopyFrom(_timestamp(stats.last_batch_at))
            response.last_batch.duration_ms = int(stats.last_batch_seconds * 1000)
        return response

    async def ReadWarehouse(
        self, request: pb.ReadWarehouseRequest, context: Any
    ) -> AsyncIterator[pb.ReadWarehouseResponse]:
        warehouse = self._runtime.warehouse
        if warehouse is None:
            raise DependencyUnavailable("clickhouse", "the warehouse is not open yet")
        read = _warehouse_read(request)
        if request.query in _PER_PLAYER_QUERIES:
            caller = require_caller()
            # Per-player rows are personal data: only the model (personal scores) reads them.
            if caller.user_id != MODEL_SERVICE_SUBJECT:
                raise PermissionDenied(
                    f"per-player warehouse reads are for {MODEL_SERVICE_SUBJECT} only"
                )
        try:
            async for chunk in _in_thread(_read_chunks(warehouse, read)):
                yield pb.ReadWarehouseResponse(arrow_ipc=chunk)
        except CounterpickError:
            raise
        except Exception as error:
            raise DependencyUnavailable("clickhouse", f"warehouse query failed: {error}") from error

    async def ReprocessMatch(
        self, request: pb.ReprocessMatchRequest, context: Any
    ) -> pb.ReprocessMatchResponse:
        if request.match_id == 0:
            raise InvalidArgument("match_id is required", field="match_id")
        loader = self._runtime.loader
        if loader is None:
            raise DependencyUnavailable("clickhouse", "the warehouse is not open yet")
        response = pb.ReprocessMatchResponse(match_id=request.match_id)
        try:
            match = await loader.fetch(request.match_id)
        except FetchFailed as failed:
            if failed.retryable:
                raise DependencyUnavailable(
                    "opendota", f"fetching match {request.match_id}: {failed.detail}"
                ) from None
            response.outcome = pb.REPROCESS_OUTCOME_REJECTED
            response.dead_letter_reason = dead_letter_reason(failed.reason)
            response.detail = failed.detail
            return response
        except UnusableMatch as unusable:
            response.outcome = pb.REPROCESS_OUTCOME_REJECTED
            response.detail = unusable.detail
            return response
        except InsignificantMatch as insignificant:
            response.outcome = pb.REPROCESS_OUTCOME_SKIPPED
            response.skip_reason = _SKIP_REASONS.get(insignificant.reason.value, 0)  # type: ignore[assignment]
            response.detail = insignificant.detail
            return response
        response.match.CopyFrom(match_to_proto(match))
        skip = loader.skip_reason(match)
        if skip is not None:
            response.outcome = pb.REPROCESS_OUTCOME_SKIPPED
            response.skip_reason = _SKIP_REASONS.get(skip.value, 0)  # type: ignore[assignment]
            return response
        existed = await loader.stored([match.match_id])
        await loader.store([match])
        response.outcome = pb.REPROCESS_OUTCOME_REPLACED if existed else pb.REPROCESS_OUTCOME_LOADED
        return response

    async def ImportDumps(
        self, request: pb.ImportDumpsRequest, context: Any
    ) -> AsyncIterator[pb.ImportDumpsResponse]:
        paths = _import_paths(request)
        warehouse = self._runtime.warehouse
        if warehouse is None:
            raise DependencyUnavailable("clickhouse", "the warehouse is not open yet")
        # One import at a time: a second caller waits rather than interleaving its batches.
        async with self._runtime.import_lock:
            log.info("importing dumps", extra={"fields": {"paths": list(request.paths)}})
            events = _import_events(
                paths, list(request.paths), warehouse, request.only_if_empty, self._runtime
            )
            try:
                async for message in _in_thread(events):
                    yield message
            except DumpFormatError as error:
                raise InvalidArgument(str(error), field="paths") from error
            except CounterpickError:
                raise
            except Exception as error:
                raise DependencyUnavailable("clickhouse", f"import failed: {error}") from error

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Any
    ) -> pb.ListDeadLettersResponse:
        opened, replayed = await self._open_letters()
        reason = (
            reason_name(request.reason)
            if request.reason != events_pb2.DEAD_LETTER_REASON_UNSPECIFIED
            else None
        )
        chosen = dead_letters.select(
            opened, match_ids=set(request.match_ids) or None, reason=reason
        )
        response = pb.ListDeadLettersResponse(total=len(chosen), replayed=replayed)
        for name, count in sorted(dead_letters.count_by_reason(chosen).items()):
            response.counts.add(reason=_reason_number(name), count=count)
        for open_letter in chosen[: request.limit or DEFAULT_DEAD_LETTER_LIMIT]:
            response.entries.append(_entry(open_letter.newest))
        return response

    async def ReplayDeadLetters(
        self, request: pb.ReplayDeadLettersRequest, context: Any
    ) -> pb.ReplayDeadLettersResponse:
        selection = request.WhichOneof("selection")
        match_ids: set[int] | None = None
        reason: str | None = None
        if selection == "match_ids":
            match_ids = set(request.match_ids.match_ids)
            if not match_ids:
                raise InvalidArgument("match_ids must name at least one match", field="match_ids")
        elif selection == "reason":
            if request.reason == events_pb2.DEAD_LETTER_REASON_UNSPECIFIED:
                raise InvalidArgument("reason must be a known DeadLetterReason", field="reason")
            reason = reason_name(request.reason)
        elif selection != "all" or not request.all:
            raise InvalidArgument("choose match_ids, a reason or all", field="selection")
        opened, _ = await self._open_letters()
        chosen = dead_letters.select(opened, match_ids=match_ids, reason=reason)
        try:
            await self._runtime.dead_letters.replay(chosen)
        except (DeadLetterTopicError, KafkaError) as error:
            raise DependencyUnavailable("kafka", f"replaying dead letters: {error}") from error
        log.info(
            "replayed dead letters",
            extra={"fields": {"count": len(chosen), "selection": selection}},
        )
        return pb.ReplayDeadLettersResponse(
            replayed_count=len(chosen),
            replayed=[_entry(open_letter.newest) for open_letter in chosen],
        )

    async def _open_letters(self) -> tuple[list[dead_letters.OpenLetter], int]:
        topic = self._runtime.dead_letters
        try:
            letters, replayed = await asyncio.gather(topic.letters(), topic.replayed())
        except (DeadLetterTopicError, KafkaError) as error:
            raise DependencyUnavailable("kafka", f"reading dead letters: {error}") from error
        return dead_letters.open_letters(letters, replayed)


DEFAULT_DEAD_LETTER_LIMIT = 100


def _reason_number(name: str) -> events_pb2.DeadLetterReason.ValueType:
    try:
        return reason_number(name)  # type: ignore[return-value]
    except ValueError:
        return events_pb2.DEAD_LETTER_REASON_UNSPECIFIED


def _entry(letter: dead_letters.Letter) -> pb.DeadLetterEntry:
    entry = pb.DeadLetterEntry(
        reason=_reason_number(letter.reason),
        detail=letter.detail,
        failed_at=_timestamp(letter.failed_at),
        dead_letter_partition=letter.partition,
        dead_letter_offset=letter.offset,
        original_topic=letter.original_topic,
        original_partition=letter.original_partition,
        original_offset=letter.original_offset,
    )
    if letter.match_id is not None:
        entry.match_id = letter.match_id
    return entry


MAX_IMPORT_PATHS = 100


def _import_paths(request: pb.ImportDumpsRequest) -> list[Path]:
    """The request's paths as files on this host; every one must exist before any is read."""
    if not request.paths:
        raise InvalidArgument("paths must name at least one dump file", field="paths")
    if len(request.paths) > MAX_IMPORT_PATHS:
        raise InvalidArgument(f"at most {MAX_IMPORT_PATHS} paths per call", field="paths")
    paths = [Path(raw) for raw in request.paths]
    pairs = zip(request.paths, paths, strict=True)
    unreadable = [raw for raw, path in pairs if not _readable(path)]
    if unreadable:
        raise InvalidArgument(
            f"not a readable file on the etl host ({socket.gethostname()}): "
            f"{', '.join(unreadable)}; paths name files where etl runs, not where the caller does",
            field="paths",
        )
    return paths


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def _counts(path: str, summary: ImportSummary) -> pb.ImportCounts:
    counts = pb.ImportCounts(
        path=path,
        read=summary.read,
        loaded=summary.loaded,
        duplicates=summary.duplicates,
        rejected=dict(summary.rejected),
    )
    for reason, count in sorted(summary.skipped.items()):
        counts.skipped.add(reason=_SKIP_REASONS.get(reason, 0), count=count)
    return counts


def _import_events(
    paths: list[Path],
    names: list[str],
    warehouse: Warehouse,
    only_if_empty: bool,
    runtime: EtlRuntime,
) -> Generator[pb.ImportDumpsResponse]:
    """The blocking import of ImportDumps: progress after every batch, the summary last."""
    if only_if_empty:
        stored = warehouse.match_count()
        if stored:
            yield pb.ImportDumpsResponse(
                summary=pb.ImportSummary(stored_matches=stored, skipped_not_empty=True)
            )
            return
    constants = runtime.constants()
    total = ImportSummary()
    files: list[pb.ImportCounts] = []
    for index, (path, name) in enumerate(zip(paths, names, strict=True)):
        records = count_records(path)
        summary = ImportSummary()
        for _ in import_batches(path, warehouse, constants, summary):
            yield pb.ImportDumpsResponse(
                progress=pb.ImportProgress(
                    path=name,
                    file_index=index,
                    read=summary.read,
                    total=records,
                    loaded=total.loaded + summary.loaded,
                )
            )
        total.add(summary)
        runtime.stats.matches_loaded += summary.loaded
        files.append(_counts(name, summary))
    yield pb.ImportDumpsResponse(
        summary=pb.ImportSummary(
            files=files,
            total=_counts("", total),
            stored_matches=warehouse.match_count(),
            first_rejections=total.first_rejections,
        )
    )


def _read_chunks(warehouse: Warehouse, read: WarehouseRead) -> Generator[bytes]:
    """The read's result as Arrow IPC chunks, encoded batch by batch as the warehouse yields
    them, so a large result never sits in memory whole."""
    with warehouse.open_read(read) as reader:
        yield from ipc_chunks(reader)


async def _in_thread[T](items: Generator[T]) -> AsyncIterator[T]:
    """The items of a blocking generator, each produced in one thread of its own while the event
    loop serves other calls; the next item is produced only when this one was sent, so a slow
    client holds back the read instead of piling chunks up in memory."""
    loop = asyncio.get_running_loop()
    # One thread for every step and the close, so the generator never runs in two at once.
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-warehouse")
    done = object()
    try:
        while True:
            item = await loop.run_in_executor(thread, next, items, done)
            if item is done:
                return
            yield cast(T, item)
    finally:
        # After a step still running (the call was cancelled), not during it: the close releases
        # the query and the warehouse lock.
        thread.submit(items.close)
        thread.shutdown(wait=False)


_READ_KINDS = {
    pb.WAREHOUSE_QUERY_HERO_COUNTS: ReadKind.HERO_COUNTS,
    pb.WAREHOUSE_QUERY_PAIR_COUNTS: ReadKind.PAIR_COUNTS,
    pb.WAREHOUSE_QUERY_MATCH_DRAFTS: ReadKind.MATCH_DRAFTS,
    pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS: ReadKind.PLAYER_HERO_RECORDS,
    pb.WAREHOUSE_QUERY_PLAYER_HERO_GROUPS: ReadKind.PLAYER_HERO_GROUPS,
    pb.WAREHOUSE_QUERY_LATEST_LOADED_AT: ReadKind.LATEST_LOADED_AT,
    pb.WAREHOUSE_QUERY_HERO_POSITION_COUNTS: ReadKind.HERO_POSITION_COUNTS,
}


def _warehouse_read(request: pb.ReadWarehouseRequest) -> WarehouseRead:
    kind = _READ_KINDS.get(request.query)
    if kind is None:
        raise InvalidArgument("query must be a known WarehouseQuery", field="query")
    if kind is ReadKind.PLAYER_HERO_RECORDS and request.account_id == 0:
        raise InvalidArgument("account_id is required for this query", field="account_id")
    return WarehouseRead(
        kind=kind,
        patch=request.patch if request.HasField("patch") else None,
        loaded_after=(
            request.loaded_after.ToDatetime(tzinfo=UTC)
            if request.HasField("loaded_after")
            else None
        ),
        loaded_until=(
            request.loaded_until.ToDatetime(tzinfo=UTC)
            if request.HasField("loaded_until")
            else None
        ),
        account_id=request.account_id,
    )


def build_server(settings: EtlSettings, key_source: KeySource | None = None) -> GrpcServer:
    """The etl server: stores open, then the warehouse is migrated and consumption starts.
    Every RPC needs an admin or service token (the access options of etl_service.proto)."""
    return build_server_and_runtime(settings, key_source)[0]


def build_server_and_runtime(
    settings: EtlSettings, key_source: KeySource | None = None
) -> tuple[GrpcServer, EtlRuntime]:
    """The etl server and its runtime, whose `failed` event `__main__` exits on."""
    stores = Stores(settings)
    runtime = EtlRuntime(settings, stores)
    servicer = EtlServicer(settings, runtime)
    server = GrpcServer(
        name="etl",
        settings=settings,
        services=[registration(servicer, pb_grpc.add_EtlServiceServicer_to_server, SERVICE_NAME)],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
        verifier=verifier_from_settings(settings, key_source),
    )
    return server, runtime
