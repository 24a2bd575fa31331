"""What the ingest RPCs run on: the API clients, the Kafka publisher, the persisted cursors and one
polling task per enabled source, started after the shared stores open."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from counterpick.events.v1 import events_pb2
from services.common.external.opendota import OpenDotaClient
from services.common.external.steam import SteamClient
from services.common.stores import Stores
from services.ingest.config import IngestSettings
from services.ingest.publisher import MatchRefPublisher
from services.ingest.repo import CursorStore
from services.ingest.sources import (
    BackfillJobs,
    MatchIdPagedSource,
    Poller,
    SourceHealth,
    SteamSequenceSource,
    run_source,
)


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
