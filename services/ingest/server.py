"""gRPC wiring of the ingest service: source pollers, their status, and manual backfills."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.events.v1 import events_pb2
from counterpick.ingest.v1 import ingest_service_pb2 as pb
from counterpick.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from services.common.errors import InvalidArgument
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp
from services.ingest.config import IngestSettings
from services.ingest.runtime import IngestRuntime
from services.ingest.sources import SourceHealth

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
MAX_BACKFILL_RANGE = 1_000_000
MAX_BACKFILL_LIST = 1_000


def _timestamp(unix_seconds: float | None) -> Timestamp | None:
    return None if unix_seconds is None else to_timestamp(unix_seconds)


class IngestServicer(pb_grpc.IngestServiceServicer):
    """counterpick.ingest.v1.IngestService."""

    def __init__(self, runtime: IngestRuntime) -> None:
        self._runtime = runtime

    async def GetIngestStatus(
        self, request: pb.GetIngestStatusRequest, context: Any
    ) -> pb.GetIngestStatusResponse:
        response = pb.GetIngestStatusResponse(started_at=_timestamp(self._runtime.started_at))
        for poller, client in self._runtime.pollers:
            health = poller.health
            status = response.sources.add(
                source=health.source,
                name=health.name,
                enabled=health.enabled,
                state=_state(health),
                last_error=health.last_error,
                requests_made=int(getattr(client, "requests_made", health.polls)),
                rate_limited_responses=int(getattr(client, "rate_limited_responses", 0)),
                matches_published=health.matches_published,
            )
            if health.cursor is not None:
                if health.source == events_pb2.MATCH_SOURCE_STEAM_SEQUENCE:
                    status.next_match_seq_num = health.cursor
                else:
                    status.last_match_id = health.cursor
                    if health.newest_seen is not None:
                        status.lag_matches = max(0, health.newest_seen - health.cursor)
            if health.newest_start_time is not None:
                status.lag_seconds = max(0, int(time.time()) - health.newest_start_time)
            if (success := _timestamp(health.last_success_at)) is not None:
                status.last_success_at.CopyFrom(success)
            if (failure := _timestamp(health.last_error_at)) is not None:
                status.last_error_at.CopyFrom(failure)
        return response

    async def Backfill(self, request: pb.BackfillRequest, context: Any) -> pb.BackfillResponse:
        target = request.WhichOneof("target")
        if target == "range":
            first, last = request.range.first_match_id, request.range.last_match_id
            if first == 0 or last < first:
                raise InvalidArgument(
                    "range needs 0 < first_match_id <= last_match_id", field="range"
                )
            if last - first + 1 > MAX_BACKFILL_RANGE:
                raise InvalidArgument(
                    f"a range may span at most {MAX_BACKFILL_RANGE} ids", field="range"
                )
            ids = list(range(first, last + 1))
        elif target == "ids":
            ids = sorted(set(request.ids.match_ids))
            if not ids or 0 in ids:
                raise InvalidArgument("ids must be non-empty match ids", field="ids")
            if len(ids) > MAX_BACKFILL_LIST:
                raise InvalidArgument(f"at most {MAX_BACKFILL_LIST} ids per request", field="ids")
        else:
            raise InvalidArgument("set either range or ids", field="target")
        job_id = uuid.uuid4().hex
        # Small jobs are published before answering; large ranges continue in the background.
        if len(ids) <= MAX_BACKFILL_LIST:
            accepted = await self._runtime.backfills.submit(job_id, ids)
        else:
            task = asyncio.create_task(self._runtime.backfills.submit(job_id, ids))
            task.add_done_callback(_log_failure)
            accepted = len(ids)
        return pb.BackfillResponse(job_id=job_id, accepted_count=accepted)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("backfill failed", exc_info=task.exception())


def _state(health: SourceHealth) -> int:
    if not health.enabled:
        return pb.SOURCE_STATE_DISABLED
    if health.consecutive_failures >= 3:
        return pb.SOURCE_STATE_DOWN
    if health.consecutive_failures:
        return pb.SOURCE_STATE_DEGRADED
    return pb.SOURCE_STATE_HEALTHY


def build_server(settings: IngestSettings) -> GrpcServer:
    """The ingest server: stores open, then the sources start polling."""
    stores = Stores(settings)
    runtime = IngestRuntime(settings, stores)
    return GrpcServer(
        name="ingest",
        settings=settings,
        services=[
            registration(
                IngestServicer(runtime), pb_grpc.add_IngestServiceServicer_to_server, SERVICE_NAME
            )
        ],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
    )
