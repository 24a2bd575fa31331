"""On a machine without PostgreSQL, Redis or Kafka, `counterpick up` starts real embedded ones."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from services.cli.local_stores import LocalStores
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


async def test_embedded_stores_answer_real_clients_and_stop_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "POSTGRES_DSN", "REDIS_URL", "WAREHOUSE_DSN"):
        monkeypatch.delenv(variable, raising=False)
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    stores = LocalStores(tmp_path / "state", kafka_port=free_port(), force_embedded=True)
    try:
        env = await stores.start()
        origins = {info.name: info.origin for info in stores.infos}
        assert origins["postgresql"] == "embedded postgres"
        assert origins["redis"].startswith("embedded redis-server")
        assert origins["kafka"].startswith("embedded tansu")
        assert env["WAREHOUSE_DSN"] == f"chdb://{(tmp_path / 'state' / 'warehouse').resolve()}"

        connection = await asyncpg.connect(env["POSTGRES_DSN"])
        assert await connection.fetchval("SELECT current_database()") == "counterpick"
        await connection.close()
        client = aioredis.Redis.from_url(env["REDIS_URL"])
        assert await client.set("k", "v")
        await client.aclose()
        admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
        await admin.start()
        assert {"match_ids_raw", "match_ids_dlq"} <= set(await admin.list_topics())
        await admin.close()
        started = [
            p for p in psutil.Process(os.getpid()).children(recursive=True) if p.pid not in before
        ]
        assert started
    finally:
        stores.stop()
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    # pg_ctl daemonizes the postmaster (not our child): prove it is down by failing to connect.
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(env["POSTGRES_DSN"], timeout=2)
