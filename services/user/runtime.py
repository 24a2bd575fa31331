"""What the user RPCs run on: PostgreSQL, migrated on open.

Built once per server, opened on start and closed on stop. Call quotas are not here: the server's
rate-limit interceptor (services.common.rate_limit) counts every call before it reaches an RPC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.common.errors import DependencyUnavailable
from services.user.config import UserSettings
from services.user.migrations import apply_migrations
from services.user.repo import DEPENDENCY, UserRepository, open_pool

log = logging.getLogger(__name__)


class UserRuntime:
    """The user service's PostgreSQL pool (migrated on open) and the storage adapter on it."""

    def __init__(self, settings: UserSettings) -> None:
        self._settings = settings
        self._repository: UserRepository | None = None
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
        except BaseException:
            await self.close()
            raise
        self._repository = UserRepository(
            pool, acquire_timeout_seconds=settings.postgres_timeout_seconds
        )

    async def close(self) -> None:
        """Release every connection."""
        self._repository = None
        while self._closers:
            await self._closers.pop()()

    @property
    def repository(self) -> UserRepository:
        """The storage adapter; DependencyUnavailable before open or after close."""
        if self._repository is None:
            raise DependencyUnavailable(DEPENDENCY, "the user database is not connected")
        return self._repository
