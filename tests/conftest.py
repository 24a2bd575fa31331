"""Shared fixtures: real PostgreSQL and Redis (machine services), a real tansu broker, data dir."""

from __future__ import annotations

import atexit
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.cli.local_stores import tansu_broker
from services.cli.processes import stop_all
from services.common.config import CommonSettings
from services.common.telemetry import setup_telemetry

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MACHINE_REDIS = "redis://127.0.0.1:6379"
# Claims of test databases live in db 0 under this prefix, one key per database number.
_CLAIM_PREFIX = "counterpick:test-run:db"
_CLAIM_SECONDS = 6 * 3600
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_redis_database(base_url: str = MACHINE_REDIS) -> tuple[str, str | None]:
    """A Redis database of this test run's own (1..15), so two runs on one machine never flush
    each other's data. The claim is a key in db 0 holding this process's id; a claim whose process
    is gone (a killed run) is taken over. TEST_REDIS_URL names a database explicitly instead.
    Returns the URL and, when no database could be claimed, why."""
    explicit = os.environ.get("TEST_REDIS_URL")
    if explicit:
        return explicit, None
    client = redis.Redis.from_url(f"{base_url}/0", socket_timeout=5, decode_responses=True)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    try:
        for number in range(1, 16):
            key = f"{_CLAIM_PREFIX}{number}"
            if not client.set(key, owner, nx=True, ex=_CLAIM_SECONDS):
                holder = str(client.get(key) or "")
                host, _, pid = holder.rpartition(":")
                if host != socket.gethostname() or not pid.isdigit() or _process_alive(int(pid)):
                    continue
                # Compare-and-set: of two runs taking over one stale claim only one wins.
                if not client.eval(_TAKE_OVER, 1, key, holder, owner, _CLAIM_SECONDS):
                    continue
            database = redis.Redis.from_url(f"{base_url}/{number}", socket_timeout=5)
            database.flushdb()  # what a killed earlier run left behind
            database.close()
            _CLAIMS.append((base_url, key, owner))
            atexit.register(release_redis_claims)
            return f"{base_url}/{number}", None
    except (OSError, redis.RedisError) as error:
        # Collection must not crash on it: the redis_url fixture fails with this reason instead.
        return f"{base_url}/0", f"no Redis test database could be claimed at {base_url}: {error}"
    finally:
        client.close()
    raise RuntimeError("every Redis test database 1..15 is claimed by a running test process")


_CLAIMS: list[tuple[str, str, str]] = []


def release_redis_claims() -> None:
    """Give this run's database back (at pytest's end, while telemetry still runs; atexit for a
    process that imported this module without pytest)."""
    while _CLAIMS:
        base_url, key, owner = _CLAIMS.pop()
        client = redis.Redis.from_url(f"{base_url}/0", socket_timeout=5)
        try:
            if client.get(key) == owner.encode():
                client.delete(key)
        except (OSError, redis.RedisError):
            pass
        finally:
            client.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Release the Redis database claim before the span processors shut down at exit."""
    release_redis_claims()


REDIS_URL, REDIS_CLAIM_ERROR = claim_redis_database()


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
    """URL of this run's own Redis database on the machine's server, flushed after each test."""
    if REDIS_CLAIM_ERROR:
        pytest.fail(REDIS_CLAIM_ERROR)
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
