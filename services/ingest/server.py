"""gRPC wiring of the ingest service: source pollers, their status, and manual backfills."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.events.v1 import events_pb2
from counterpick.ingest.v1 import ingest_service_pb2 as pb
from counterpick.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from services.common.errors import InvalidArgument, RateLimited
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp
from services.common.tokens import KeySource, verifier_from_settings
from services.ingest.backfill import MAX_RUNNING, TooManyJobs
from services.ingest.config import IngestSettings
from services.ingest.runtime import IngestRuntime, source_down
from services.ingest.sources import SourceHealth
from services.ingest.state import JobRecord

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
MAX_BACKFILL_RANGE = 1_000_000
MAX_BACKFILL_LIST = 1_000
# A client refused for running jobs may ask again after this long.
BACKFILL_RETRY_SECONDS = 60.0
_JOB_STATES = {
    "running": pb.BACKFILL_STATE_RUNNING,
    "succeeded": pb.BACKFILL_STATE_SUCCEEDED,
    "failed": pb.BACKFILL_STATE_FAILED,
}


def _timestamp(unix_seconds: float | None) -> Timestamp | None:
    return None if unix_seconds is None else to_timestamp(unix_seconds)


def source_health_name(source: str) -> str:
    """The gRPC health entry of one source: NOT_SERVING while it is down."""
    return f"{SERVICE_NAME}/{source}"


class IngestServicer(pb_grpc.IngestServiceServicer):
    """counterpick.ingest.v1.IngestService."""

    def __init__(self, runtime: IngestRuntime) -> None:
        self._runtime = runtime

    async def GetIngestStatus(
        self, request: pb.GetIngestStatusRequest, context: Any
    ) -> pb.GetIngestStatusResponse:
        response = pb.GetIngestStatusResponse(started_at=_timestamp(self._runtime.started_at))
        for poller, client in self._runtime.pollers:
            _source_status(response.sources.add(), poller.health, client)
        for job in await self._runtime.backfills.listing():
            response.jobs.append(_job(job))
        return response

    async def Backfill(self, request: pb.BackfillRequest, context: Any) -> pb.BackfillResponse:
        target = request.WhichOneof("target")
        backfills = self._runtime.backfills
        try:
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
                job = await backfills.submit(first=first, last=last)
            elif target == "ids":
                ids = set(request.ids.match_ids)
                if not ids or 0 in ids:
                    raise InvalidArgument("ids must be non-empty match ids", field="ids")
                if len(ids) > MAX_BACKFILL_LIST:
                    raise InvalidArgument(
                        f"at most {MAX_BACKFILL_LIST} ids per request", field="ids"
                    )
                job = await backfills.submit(match_ids=sorted(ids))
            else:
                raise InvalidArgument("set either range or ids", field="target")
        except TooManyJobs:
            raise RateLimited(
                f"{MAX_RUNNING} backfill jobs are running; wait for one to finish",
                retry_after_seconds=BACKFILL_RETRY_SECONDS,
            ) from None
        return pb.BackfillResponse(job_id=job.job_id, accepted_count=job.total)


def _source_status(status: pb.SourceStatus, health: SourceHealth, client: Any) -> None:
    status.source = health.source  # type: ignore[assignment]
    status.name = health.name
    status.enabled = health.enabled
    status.state = _state(health)
    status.last_error = health.last_error
    status.requests_made = int(getattr(client, "requests_made", health.polls))
    status.rate_limited_responses = int(getattr(client, "rate_limited_responses", 0))
    status.matches_published = health.matches_published
    status.errors_total = health.errors_total
    status.errors_by_kind.update(health.errors_by_kind)
    status.restarts = health.restarts
    status.bad_rows = health.bad_rows
    status.open_gaps = health.open_gaps
    if health.cursor is not None:
        if health.source == events_pb2.MATCH_SOURCE_STEAM_SEQUENCE:
            status.next_match_seq_num = health.cursor
        else:
            status.last_match_id = health.cursor
    if health.floor is not None:
        status.floor_match_id = health.floor
    if health.lag_matches is not None:
        status.lag_matches = health.lag_matches
    if health.newest_start_time is not None:
        status.lag_seconds = max(0, int(time.time()) - health.newest_start_time)
    for value, target in (
        (health.last_success_at, status.last_success_at),
        (health.last_error_at, status.last_error_at),
        (health.oldest_gap_at, status.oldest_gap_at),
    ):
        if (stamp := _timestamp(value)) is not None:
            target.CopyFrom(stamp)


def _job(job: JobRecord) -> pb.BackfillJob:
    return pb.BackfillJob(
        job_id=job.job_id,
        state=_JOB_STATES.get(job.state, pb.BACKFILL_STATE_UNSPECIFIED),
        total=job.total,
        published=job.published,
        created_at=_timestamp(job.created_at),
        updated_at=_timestamp(job.updated_at),
        error=job.error,
    )


def _state(health: SourceHealth) -> pb.SourceState.ValueType:
    if not health.enabled:
        return pb.SOURCE_STATE_DISABLED
    if source_down(health):
        return pb.SOURCE_STATE_DOWN
    if health.consecutive_failures:
        return pb.SOURCE_STATE_DEGRADED
    if health.polls == 0 and health.restarts == 0:
        return pb.SOURCE_STATE_UNSPECIFIED
    return pb.SOURCE_STATE_HEALTHY


def build_server(settings: IngestSettings, key_source: KeySource | None = None) -> GrpcServer:
    """The ingest server: stores open, then backfills resume and the sources start polling.
    Every RPC needs an admin or service token (the access options of ingest_service.proto)."""
    stores = Stores(settings)
    runtime = IngestRuntime(settings, stores)
    server = GrpcServer(
        name="ingest",
        settings=settings,
        services=[
            registration(
                IngestServicer(runtime), pb_grpc.add_IngestServiceServicer_to_server, SERVICE_NAME
            )
        ],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
        verifier=verifier_from_settings(settings, key_source),
    )
    for source in settings.ingest_sources:
        server.set_health(source_health_name(source), True)
    runtime.report_health = lambda name, ok: server.set_health(source_health_name(name), ok)
    return server
