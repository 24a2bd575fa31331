"""What the user RPCs run on: PostgreSQL (migrated on open), Redis, and the per-caller quotas.

Built once per server, opened on start and closed on stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from services.common.errors import DependencyUnavailable
from services.common.rate_limit import Quota, RateLimiter
from services.common.stores import connect_redis
from services.common.tokens import Caller
from services.user.config import UserSettings
from services.user.migrations import apply_migrations
from services.user.profiles import SERVICE_ROLE
from services.user.repo import DEPENDENCY, UserRepository, open_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quotas:
    """The quota each kind of caller uses."""

    user: Quota
    service: Quota
    anonymous: Quota

    @classmethod
    def from_settings(cls, settings: UserSettings) -> Quotas:
        """The quotas UserSettings configures."""
        window = settings.rate_limit_window_seconds
        return cls(
            user=Quota("user", settings.rate_limit_user_calls, window),
            service=Quota("service", settings.rate_limit_service_calls, window),
            anonymous=Quota("anonymous", settings.rate_limit_anonymous_calls, window),
        )

    def for_caller(self, caller: Caller | None) -> Quota:
        """The quota `caller` is counted against."""
        if caller is None:
            return self.anonymous
        return self.service if caller.has_any_role(SERVICE_ROLE) else self.user


class UserRuntime:
    """The user service's connections: PostgreSQL (migrated on open) and Redis, with the storage
    adapter and the rate limiter built on them."""

    def __init__(self, settings: UserSettings) -> None:
        self._settings = settings
        self._repository: UserRepository | None = None
        self._limiter: RateLimiter | None = None
        self._closers: list[Callable[[], Any]] = []

    async def open(self) -> None:
        """Connect, apply pending migrations; DependencyUnavailable if a store stays down."""
        settings = self._settings
        try:
            pool = await open_pool(
                settings.postgres_dsn,
                settings.user_postgres_schema,
                wait_seconds=settings.store_wait_seconds,
                timeout_seconds=settings.postgres_timeout_seconds,
                max_size=settings.postgres_pool_size,
            )
            self._closers.append(pool.close)
            async with pool.acquire() as connection:
                applied = await apply_migrations(connection, settings.user_postgres_schema)
            if applied:
                log.info("user schema migrated", extra={"fields": {"applied": applied}})
            redis: aioredis.Redis = await connect_redis(
                settings.redis_url, timeout_seconds=settings.store_wait_seconds
            )
            self._closers.append(redis.aclose)
        except BaseException:
            await self.close()
            raise
        self._repository = UserRepository(
            pool, acquire_timeout_seconds=settings.postgres_timeout_seconds
        )
        self._limiter = RateLimiter(redis, prefix=settings.rate_limit_key_prefix, name="user")

    async def close(self) -> None:
        """Release every connection."""
        self._repository = None
        self._limiter = None
        while self._closers:
            await self._closers.pop()()

    @property
    def repository(self) -> UserRepository:
        """The storage adapter; DependencyUnavailable before open or after close."""
        if self._repository is None:
            raise DependencyUnavailable(DEPENDENCY, "the user database is not connected")
        return self._repository

    @property
    def limiter(self) -> RateLimiter | None:
        """The rate limiter, once Redis is connected."""
        return self._limiter
