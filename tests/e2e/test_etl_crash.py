"""SIGKILL the etl process mid-stream, restart it: every match stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from services.common.stores import ensure_kafka_topics
from services.etl.repo import Warehouse
from tests.auth_keys import SigningKeys, verifying_env
from tests.conftest import REPO_ROOT, free_port
from tests.contract.test_pipeline import publish, summary_ref

pytestmark = pytest.mark.e2e
MATCHES = 20_000


def _start_etl(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "services.etl"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=handle,
        )


async def _status(port: int, keys: SigningKeys) -> pb.GetEtlStatusResponse | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return await pb_grpc.EtlServiceStub(channel).GetEtlStatus(
                pb.GetEtlStatusRequest(), metadata=keys.metadata("admin"), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None


async def test_sigkill_mid_batch_then_restart_stores_every_match_once(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"crash-{suffix}", f"crash-dlq-{suffix}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 4, dlq: 1})
    refs = [summary_ref(10_000_000 + i) for i in range(MATCHES)]
    await publish(
        kafka_bootstrap, topic, [(str(r.match_id).encode(), r.SerializeToString()) for r in refs]
    )
    port = free_port()
    # GetEtlStatus needs an admin token: etl verifies it against the keys' JWKS file.
    keys = SigningKeys.create(tmp_path / "auth-keys")
    env = {
        **verifying_env(keys, tmp_path, redis_url),
        "PORT": str(port),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_MATCH_IDS": topic,
        "KAFKA_TOPIC_DEAD_LETTERS": dlq,
        "KAFKA_CONSUMER_GROUP": f"crash-{suffix}",
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "WAREHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}",
        "ETL_BATCH_SIZE": "500",
        "OPENDOTA_BASE_URL": f"http://127.0.0.1:{free_port()}/api",
    }
    log = tmp_path / "etl.log"

    etl = _start_etl(env, log)
    loaded_before_kill = 0
    async with asyncio.timeout(120):
        while loaded_before_kill < 2000:
            status = await _status(port, keys)
            loaded_before_kill = status.matches_loaded if status else 0
            assert etl.poll() is None, log.read_text()[-2000:]
            await asyncio.sleep(0.02)
    etl.send_signal(signal.SIGKILL)
    etl.wait(timeout=10)
    assert loaded_before_kill < MATCHES, "the kill came too late to prove anything"

    etl = _start_etl(env, log)
    try:
        async with asyncio.timeout(180):
            while True:
                status = await _status(port, keys)
                # Committed offsets, not end offsets: tansu's ListOffsets(latest) can trail
                # the records a consumer has already read.
                if (
                    status is not None
                    and sum(p.committed_offset for p in status.partitions) >= MATCHES
                ):
                    break
                assert etl.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.2)
    finally:
        etl.send_signal(signal.SIGTERM)
        etl.wait(timeout=30)

    warehouse = Warehouse.connect(env["WAREHOUSE_DSN"])
    try:
        assert warehouse.checksum() == (MATCHES, sum(r.match_id for r in refs))
        raw_rows = warehouse.query_rows("SELECT count() FROM matches")[0][0]
        assert raw_rows >= MATCHES  # duplicates on disk are fine; FINAL counts each once
    finally:
        warehouse.close()


async def test_an_unexpected_consumer_error_exits_non_zero(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The etl does not signal itself: it stops gracefully and exits with EX_SOFTWARE (70), so
    a supervisor sees a crash and restarts it."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "METRICS_PORT": "0",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_MATCH_IDS": f"boom-{suffix}",
        "KAFKA_TOPIC_DEAD_LETTERS": f"boom-dlq-{suffix}",
        "KAFKA_TOPIC_DEAD_LETTER_REPLAYS": f"boom-replays-{suffix}",
        "KAFKA_CONSUMER_GROUP": f"boom-{suffix}",
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "WAREHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}",
        "LOG_FORMAT": "text",
    }
    # The consumer loop fails the way a bug would, once the service is up.
    script = (
        "import asyncio\n"
        "from services.etl import pipeline\n"
        "async def run(self, stop):\n"
        "    await asyncio.sleep(1)\n"
        "    raise RuntimeError('consumer bug')\n"
        "pipeline.MatchPipeline.run = run\n"
        "from services.etl.__main__ import main\n"
        "main()\n"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 70, output[-3000:]
    assert "etl consumer failed; exiting" in output
    assert "consumer bug" in output
