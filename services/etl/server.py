"""gRPC wiring of the etl service: status and reprocess RPCs around the consumer pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC
from typing import Any

import pyarrow as pa

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from counterpick.events.v1 import events_pb2
from services.common.dota import Side, SkillBracket
from services.common.dota_proto import bracket_to_proto, side_to_proto
from services.common.errors import CounterpickError, DependencyUnavailable, InvalidArgument
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp as _timestamp
from services.etl.config import EtlSettings
from services.etl.loader import FetchFailed
from services.etl.matches import CleanMatch, UnusableMatch
from services.etl.pipeline import dead_letter_reason
from services.etl.repo import Warehouse
from services.etl.runtime import EtlRuntime

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EtlService"].full_name

_SKIP_REASONS = {
    reason.name.removeprefix("SKIP_REASON_").lower(): reason.number
    for reason in pb.SkipReason.DESCRIPTOR.values
}


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
        read = _warehouse_read(warehouse, request)
        try:
            table = await asyncio.to_thread(read)
        except CounterpickError:
            raise
        except Exception as error:
            raise DependencyUnavailable("clickhouse", f"warehouse query failed: {error}") from error
        for chunk in arrow_chunks(table):
            yield pb.ReadWarehouseResponse(arrow_ipc=chunk)

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


ARROW_CHUNK_BYTES = 1 << 20


def arrow_chunks(table: pa.Table) -> Iterator[bytes]:
    """The table as one Arrow IPC stream, cut into messages well under gRPC's 4 MB limit."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    for start in range(0, len(data), ARROW_CHUNK_BYTES):
        yield data[start : start + ARROW_CHUNK_BYTES]


def _warehouse_read(
    warehouse: Warehouse, request: pb.ReadWarehouseRequest
) -> Callable[[], pa.Table]:
    patch = request.patch if request.HasField("patch") else None
    after = (
        request.loaded_after.ToDatetime(tzinfo=UTC) if request.HasField("loaded_after") else None
    )
    until = (
        request.loaded_until.ToDatetime(tzinfo=UTC) if request.HasField("loaded_until") else None
    )
    query = request.query
    if query == pb.WAREHOUSE_QUERY_HERO_COUNTS:
        return lambda: warehouse.hero_counts(patch, after, until)
    if query == pb.WAREHOUSE_QUERY_PAIR_COUNTS:
        return lambda: warehouse.pair_counts(patch, after, until)
    if query == pb.WAREHOUSE_QUERY_MATCH_DRAFTS:
        return lambda: warehouse.match_drafts(patch)
    if query == pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS:
        if request.account_id == 0:
            raise InvalidArgument("account_id is required for this query", field="account_id")
        return lambda: warehouse.player_hero_records(request.account_id)
    if query == pb.WAREHOUSE_QUERY_PLAYER_HERO_GROUPS:
        return warehouse.player_hero_groups
    if query == pb.WAREHOUSE_QUERY_LATEST_LOADED_AT:
        return lambda: pa.table(
            {"loaded_at": pa.array([warehouse.latest_loaded_at()], pa.timestamp("ms", "UTC"))}
        )
    raise InvalidArgument("query must be a known WarehouseQuery", field="query")


def build_server(settings: EtlSettings) -> GrpcServer:
    """The etl server: stores open, then the warehouse is migrated and consumption starts."""
    stores = Stores(settings)
    runtime = EtlRuntime(settings, stores)
    servicer = EtlServicer(settings, runtime)
    return GrpcServer(
        name="etl",
        settings=settings,
        services=[registration(servicer, pb_grpc.add_EtlServiceServicer_to_server, SERVICE_NAME)],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
    )
