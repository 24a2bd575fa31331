"""The draft service's moving parts, built once at start and closed on stop: the Redis store and
its hub (one stream reader per replica), the application layer, the suggestions adapter with its
channels to ModelService and UserService, and the timeout sweeper.

Every replica is the same and keeps nothing a draft needs in memory: the draft, its deadline and
its event log live in Redis, so any replica serves any call and any watcher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis

from services.common.channels import open_channel
from services.common.dota_constants import DotaConstants
from services.common.service_tokens import ServiceTokens
from services.draft.config import DraftSettings
from services.draft.drafts import Drafts
from services.draft.hub import DraftHub, Overflowed
from services.draft.repo import DraftStore
from services.draft.suggestions import MetadataProvider, Suggester
from services.draft.sweeper import Sweeper
from services.draft.watch import Watch

log = logging.getLogger(__name__)


def service_metadata(settings: DraftSettings) -> MetadataProvider:
    """The token ModelService and UserService calls carry: the draft service's own service token,
    exchanged for its credential (SERVICE_CREDENTIAL[_FILE]) and renewed before it expires."""
    return ServiceTokens.from_settings(settings).metadata


@dataclass
class DraftRuntime:
    """Store, hub, application layer, suggestions and sweeper of one replica."""

    settings: DraftSettings
    constants: DotaConstants
    metadata: MetadataProvider
    redis: aioredis.Redis | None = None
    # Told whether this replica can stream events (the hub's reader is up); see server.py.
    report_watch_health: Callable[[bool], None] = lambda ok: None
    store: DraftStore = field(init=False)
    hub: DraftHub = field(init=False)
    drafts: Drafts = field(init=False)
    suggester: Suggester = field(init=False)
    sweeper: Sweeper = field(init=False)
    _channels: list[grpc.aio.Channel] = field(default_factory=list, init=False)

    async def start(self, redis: aioredis.Redis) -> None:
        """Build everything on an open Redis client and start the hub and the sweeper."""
        settings = self.settings
        self.redis = redis
        self.store = DraftStore(
            redis, prefix=settings.draft_key_prefix, max_events=settings.draft_max_events
        )
        self.hub = DraftHub(
            self.store,
            queue_size=settings.draft_watch_queue_size,
            on_health=self.report_watch_health,
        )
        model = open_channel(settings.model_addr)
        users = open_channel(settings.user_addr)
        self._channels = [model, users]
        self.suggester = Suggester(
            self.store,
            model,
            users,
            self.metadata,
            frozenset(self.constants.heroes),
            call_timeout=settings.draft_peer_timeout_seconds,
        )
        self.drafts = Drafts(
            self.store,
            self.constants,
            predict_final=self.suggester.predict_final,
            on_change=self.suggester.schedule,
            default_bracket=self.suggester.default_bracket,
        )
        self.sweeper = Sweeper(
            self.store.due, self.drafts.timeout, interval=settings.draft_sweep_interval_seconds
        )
        await self.hub.start()
        self.sweeper.start()

    def watch(self) -> Watch:
        """A watcher's stream logic over this replica's store and hub."""
        return Watch(self.drafts, self.store, self.hub, lambda item: isinstance(item, Overflowed))

    async def begin_shutdown(self) -> None:
        """End every watch now (UNAVAILABLE: reconnect and resume elsewhere), so that open
        WatchDraft streams do not hold the graceful shutdown up for its whole grace period."""
        self.hub.end_all()

    async def stop(self) -> None:
        """Stop the sweeper, pending suggestions and the hub; close the peer channels."""
        await self.sweeper.stop()
        await self.suggester.stop()
        await self.hub.stop()
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
