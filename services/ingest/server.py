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
from services.common.external.opendota import OpenDotaClient
from services.common.external.steam import SteamClient
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp
from services.ingest.config import IngestSettings
from services.ingest.cursors import CursorStore
from services.ingest.publisher import MatchRefPublisher
from services.ingest.sources import (
    BackfillJobs,
    MatchIdPagedSource,
    Poller,
    SourceHealth,
    SteamSequenceSource,
    run_source,
)

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
MAX_BACKFILL_RANGE = 1_000_000
MAX_BACKFILL_LIST = 1_000


def _timestamp(unix_seconds: float | None) -> Timestamp | None:
    return None if unix_seconds is None else to_timestamp(unix_seconds)


class IngestRuntime:
    """Clients, publisher, cursors and one polling task per enabled source."""

    def __init__(self, settings: IngestSettings, stores: Stores) -> None:
        self.settings = settings
        self._stores = stores
        self.started_at = time.time()
        self.publisher = MatchRefPublisher(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_match_ids,
            enable_idempotence=settings.kafka_enable_idempotence,
        )
        self.opendota = OpenDotaClient(
            base_url=settings.opendota_base_url, api_key=settings.opendota_api_key
        )
        self.steam = (
            SteamClient(api_key=settings.steam_api_key, base_url=settings.steam_base_url)
            if settings.steam_api_key
            else None
        )
        self.pollers: list[tuple[Poller, Any]] = []
        self.backfills = BackfillJobs(self.publisher)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect the publisher and start polling every enabled source."""
        assert self._stores.redis is not None
        await self.publisher.start()
        cursors = CursorStore(self._stores.redis)
        settings = self.settings
        for name in settings.ingest_sources:
            poller: Poller
            if name == "opendota_public":
                poller = MatchIdPagedSource(
                    SourceHealth(name, events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES),
                    lambda less_than: self.opendota.public_matches(less_than_match_id=less_than),
                    self.publisher,
                    cursors,
                    max_pages_per_poll=settings.ingest_max_pages_per_poll,
                    carries_summary=True,
                )
                client: Any = self.opendota
            elif name == "opendota_parsed":
                poller = MatchIdPagedSource(
                    SourceHealth(name, events_pb2.MATCH_SOURCE_OPENDOTA_PARSED_MATCHES),
                    lambda less_than: self.opendota.parsed_matches(less_than_match_id=less_than),
                    self.publisher,
                    cursors,
                    max_pages_per_poll=settings.ingest_max_pages_per_poll,
                    carries_summary=False,
                )
                client = self.opendota
            else:
                assert self.steam is not None
                steam = self.steam
                poller = SteamSequenceSource(
                    SourceHealth(name, events_pb2.MATCH_SOURCE_STEAM_SEQUENCE),
                    steam.match_history_by_seq_num,
                    self.publisher,
                    cursors,
                )
                client = steam
            self.pollers.append((poller, client))
            self._tasks.append(
                asyncio.create_task(
                    run_source(poller, self._stop, idle_seconds=settings.ingest_idle_seconds),
                    name=f"ingest-{name}",
                )
            )

    async def stop(self) -> None:
        """Stop polling, flush the publisher, close the clients."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.publisher.stop()
        await self.opendota.close()
        if self.steam is not None:
            await self.steam.close()


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
