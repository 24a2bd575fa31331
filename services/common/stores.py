"""Connections to the real stores (PostgreSQL, Redis, Kafka, ClickHouse), with a start-up wait.

Services call these from their start hooks: a store that is still booting is retried with backoff
for a bounded time (compose starts everything at once), then the service refuses to start with a
clear `DependencyUnavailable` instead of serving errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.common.errors import DependencyUnavailable

log = logging.getLogger(__name__)
_TOPIC_ALREADY_EXISTS = 36


async def wait_for[T](
    dependency: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    timeout_seconds: float = 30.0,
) -> T:
    """Retry `attempt` with jittered exponential backoff until it succeeds or time runs out."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.1
    while True:
        try:
            return await attempt()
        except Exception as error:
            if time.monotonic() + delay > deadline:
                raise DependencyUnavailable(
                    dependency, f"{dependency} unreachable after {timeout_seconds:g}s: {error}"
                ) from error
            log.info("waiting for %s: %s", dependency, error)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 2.0)


async def connect_postgres(dsn: str, *, timeout_seconds: float = 30.0) -> asyncpg.Pool:
    """An asyncpg pool to `dsn`, after a successful round trip."""

    async def attempt() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10, timeout=5)
        await pool.fetchval("SELECT 1")
        return pool

    return await wait_for("postgresql", attempt, timeout_seconds=timeout_seconds)


# Connections one process keeps to Redis, and how long a call waits for a free one. redis-py's
# own pool raises "Too many connections" at its default of 100 busy connections: a burst of a
# thousand WatchDraft starts or rate-limit checks then failed calls instead of queueing them for
# a few milliseconds. A blocking pool queues them; the wait is bounded so a stuck Redis still
# surfaces as an error.
REDIS_MAX_CONNECTIONS = 128
REDIS_POOL_WAIT_SECONDS = 5.0


def redis_client(
    url: str,
    *,
    connect_timeout_seconds: float = 3.0,
    socket_timeout_seconds: float | None = None,
) -> aioredis.Redis:
    """A redis.asyncio client to `url` whose calls wait for a pooled connection when all are busy,
    rather than fail (see REDIS_MAX_CONNECTIONS). Connects lazily; closing it closes the pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_SECONDS,
        socket_connect_timeout=connect_timeout_seconds,
        socket_timeout=socket_timeout_seconds,
    )
    return aioredis.Redis.from_pool(pool)


async def connect_redis(url: str, *, timeout_seconds: float = 30.0) -> aioredis.Redis:
    """A redis.asyncio client to `url` (see `redis_client`), after a successful PING."""

    async def attempt() -> aioredis.Redis:
        client = redis_client(url)
        try:
            await client.ping()
        except Exception:
            await client.aclose()
            raise
        return client

    return await wait_for("redis", attempt, timeout_seconds=timeout_seconds)


async def ensure_kafka_topics(
    bootstrap_servers: str,
    topics: dict[str, int],
    *,
    timeout_seconds: float = 30.0,
) -> None:
    """Create the topics that do not exist yet (name -> partitions), after reaching the broker."""

    async def attempt() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, num_partitions=partitions, replication_factor=1)
                for name, partitions in topics.items()
                if name not in existing
            ]
            if missing:
                response = await admin.create_topics(missing)
                for topic, error_code, *rest in response.topic_errors:
                    # 36 = TOPIC_ALREADY_EXISTS: another service created it first; that is fine.
                    if error_code not in (0, _TOPIC_ALREADY_EXISTS):
                        detail = rest[0] if rest else ""
                        raise RuntimeError(f"creating topic {topic}: error {error_code} {detail}")
        finally:
            await admin.close()

    await wait_for("kafka", attempt, timeout_seconds=timeout_seconds)


def open_warehouse(dsn: str) -> Any:
    """A clickhouse-connect client: `chdb:///dir` (embedded, one owner process) or a server URL."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=dsn)
    client.command("SELECT 1")
    return client


class Stores:
    """The store connections one service holds, opened from whichever store settings it has."""

    def __init__(self, settings: object) -> None:
        self._settings = settings
        self.postgres: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.warehouse: Any = None

    async def open(self) -> None:
        """Connect to every store the settings name; raises DependencyUnavailable on failure."""
        try:
            await self._open_all()
        except BaseException:
            await self.close()
            raise

    async def _open_all(self) -> None:
        from services.common.config import (
            KafkaSettings,
            PostgresSettings,
            RedisSettings,
            WarehouseSettings,
        )

        settings = self._settings
        wait = float(getattr(settings, "store_wait_seconds", 30.0))
        if isinstance(settings, PostgresSettings):
            self.postgres = await connect_postgres(settings.postgres_dsn, timeout_seconds=wait)
        if isinstance(settings, RedisSettings):
            self.redis = await connect_redis(settings.redis_url, timeout_seconds=wait)
        if isinstance(settings, KafkaSettings):
            await ensure_kafka_topics(
                settings.kafka_bootstrap_servers,
                {settings.kafka_topic_match_ids: 4, settings.kafka_topic_dead_letters: 1},
                timeout_seconds=wait,
            )
        if isinstance(settings, WarehouseSettings):
            # chdb's first import and open take about a second; keep the loop free meanwhile.
            self.warehouse = await asyncio.to_thread(open_warehouse, settings.warehouse_dsn)

    async def close(self) -> None:
        """Release every connection this object opened."""
        if self.postgres is not None:
            await self.postgres.close()
            self.postgres = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.warehouse is not None:
            await asyncio.to_thread(self.warehouse.close)
            self.warehouse = None
