"""Shared fixtures: real PostgreSQL and Redis (machine services), a real tansu broker, data dir."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.cli.local_stores import tansu_broker
from services.cli.processes import stop_all
from services.common.config import CommonSettings
from services.common.telemetry import setup_telemetry

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# A database number of its own so tests never touch a developer's data in db 0.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: it means something the suite needs was missing."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("COUNTERPICK_FAIL_ON_SKIP") == "1" and skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line(
                f"FAILED: {len(skipped)} test(s) skipped and COUNTERPICK_FAIL_ON_SKIP=1", red=True
            )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data directory (../shared/data by default, COUNTERPICK_DATA_DIR to move)."""
    path = Path(os.environ.get("COUNTERPICK_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "dotaconstants" / "heroes.json").is_file():
        pytest.skip(f"real data not found at {path} (set COUNTERPICK_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span this test process records, in memory."""
    exporter = InMemorySpanExporter()
    setup_telemetry(
        CommonSettings(log_format="text", otel_traces_exporter="none"),
        "tests",
        exporters=[exporter],
    )
    return exporter


@pytest.fixture
async def postgres_dsn() -> str:
    """DSN of the machine's PostgreSQL test database, after proving it answers."""
    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_DSN} is required and unreachable: {error}")
    await connection.close()
    return POSTGRES_DSN


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """URL of the machine's Redis (a test-only database number), flushed after each test."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as error:
        pytest.fail(f"Redis at {REDIS_URL} is required and unreachable: {error}")
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker (tansu, memory storage) started for this test session."""
    port = free_port()
    broker = tansu_broker(port, tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or broker.exit_code() is not None:
                stop_all([broker], grace_seconds=1)
                pytest.fail(f"tansu broker did not start: {broker.log_tail()}")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    stop_all([broker], grace_seconds=5)
