"""What the ingest RPCs run on: the API clients, the Kafka publisher, the Redis state, one
supervised polling task per enabled source, and the backfill jobs, started after the shared stores
open (running backfills of a previous process are resumed then)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from counterpick.events.v1 import events_pb2
from services.common.external.opendota import OpenDotaClient
from services.common.external.steam import SteamClient
from services.common.stores import Stores
from services.ingest.backfill import BackfillJobs
from services.ingest.config import IngestSettings
from services.ingest.publisher import MatchRefPublisher
from services.ingest.repo import CursorStore, JobStore, WindowStore
from services.ingest.sources import (
    MatchIdPagedSource,
    Poller,
    SourceHealth,
    SteamSequenceSource,
    supervise,
)

# Consecutive failed polls after which a source counts as down (NOT_SERVING in gRPC health).
DOWN_AFTER_FAILURES = 3


def source_down(health: SourceHealth) -> bool:
    """Whether the source is failing every poll."""
    return health.consecutive_failures >= DOWN_AFTER_FAILURES


class IngestRuntime:
    """Clients, publisher, Redis state, supervised pollers and backfill jobs."""

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
            base_url=settings.opendota_base_url,
            api_key=settings.opendota_api_key,
            requests_per_minute=settings.opendota_requests_per_minute,
            timeout_seconds=settings.opendota_timeout_seconds,
        )
        self.steam = (
            SteamClient(api_key=settings.steam_api_key, base_url=settings.steam_base_url)
            if settings.steam_api_key
            else None
        )
        self.pollers: list[tuple[Poller, Any]] = []
        self._backfills: BackfillJobs | None = None
        # Told the name of a source and whether it serves, after every poll (gRPC health).
        self.report_health: Callable[[str, bool], None] = lambda name, ok: None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def backfills(self) -> BackfillJobs:
        """The backfill jobs (available once started)."""
        if self._backfills is None:
            raise RuntimeError("ingest runtime not started")
        return self._backfills

    async def start(self) -> None:
        """Connect the publisher, resume backfills and start polling every enabled source."""
        redis = self._stores.redis
        assert redis is not None
        await self.publisher.start()
        self._backfills = BackfillJobs(self.publisher, JobStore(redis, self.settings.deployment))
        await self._backfills.resume()
        cursors = CursorStore(redis, self.settings.deployment)
        window = WindowStore(redis, self.settings.deployment)
        settings = self.settings
        for name in settings.ingest_sources:
            poller: Poller
            if name in ("opendota_public", "opendota_parsed"):
                public = name == "opendota_public"
                fetch = self.opendota.public_matches if public else self.opendota.parsed_matches
                poller = MatchIdPagedSource(
                    SourceHealth(
                        name,
                        events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES
                        if public
                        else events_pb2.MATCH_SOURCE_OPENDOTA_PARSED_MATCHES,
                    ),
                    lambda less_than, fetch=fetch: fetch(less_than_match_id=less_than),
                    self.publisher,
                    cursors,
                    window,
                    max_pages_per_poll=settings.ingest_max_pages_per_poll,
                    carries_summary=public,
                    late_window_seconds=settings.ingest_late_window_seconds,
                )
                client: Any = self.opendota
            else:
                assert self.steam is not None
                poller = SteamSequenceSource(
                    SourceHealth(name, events_pb2.MATCH_SOURCE_STEAM_SEQUENCE),
                    self.steam.match_history_by_seq_num,
                    self.publisher,
                    cursors,
                )
                client = self.steam
            self.pollers.append((poller, client))
            self._tasks.append(
                asyncio.create_task(
                    supervise(
                        poller,
                        self._stop,
                        idle_seconds=settings.ingest_idle_seconds,
                        max_backoff_seconds=settings.ingest_max_backoff_seconds,
                        report=lambda health: self.report_health(
                            health.name, not source_down(health)
                        ),
                    ),
                    name=f"ingest-{name}",
                )
            )

    async def stop(self) -> None:
        """Stop polling and the backfills, flush the publisher, close the clients."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:  # stuck in a slow request: cancelling loses nothing persisted
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._backfills is not None:
            await self._backfills.stop()
        await self.publisher.stop()
        await self.opendota.close()
        if self.steam is not None:
            await self.steam.close()
