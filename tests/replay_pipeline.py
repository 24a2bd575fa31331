"""A replay through the real processes: FeedReplayer -> `python -m services.ingest` -> Kafka ->
`python -m services.etl` (embedded chdb) -> the warehouse, and what came out at each stage.

Used by tests/e2e/test_replay_exactly_once.py (a subset, in CI), by its `__main__` (the whole
2026-07 set, by hand) and by bench/freshness.py (timings of every stage).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from aiokafka import AIOKafkaConsumer

from counterpick.etl.v1 import etl_service_pb2 as etl_pb
from counterpick.etl.v1 import etl_service_pb2_grpc as etl_grpc
from counterpick.events.v1 import events_pb2
from counterpick.ingest.v1 import ingest_service_pb2 as ingest_pb
from counterpick.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from services.common.dota_constants import load_constants
from services.common.stores import ensure_kafka_topics
from services.etl import transform
from services.etl.matches import UnusableMatch
from services.etl.repo import Warehouse
from tests.auth_keys import SigningKeys, verifying_env
from tests.feed_replayer import FaultPlan, FeedReplayer

REPO_ROOT = Path(__file__).resolve().parents[1]


def significant(row: Mapping[str, Any]) -> bool:
    """The etl's own rule: the row transforms and nothing makes it skip."""
    try:
        match = transform.from_public_match(row, constants=load_constants())
    except (UnusableMatch, ValueError):
        return False
    return transform.skip_reason(match) is None


@dataclass
class Record:
    """One MatchRef on the topic, and when the reader saw it (time.monotonic())."""

    match_id: int
    partition: int
    offset: int
    seen_at: float


@dataclass
class ReplayResult:
    """What each stage held at the end."""

    listed: list[int]
    expected: set[int]
    stored: set[int]
    stored_checksum: tuple[int, int]
    records: list[Record]
    # (time.monotonic(), committed offset per partition) as etl reported it while running.
    commits: list[tuple[float, dict[int, int]]]
    ingest_status: ingest_pb.SourceStatus | None
    replayer_answers: Counter[str]
    seconds: float
    end_wall: dict[int, float] = field(default_factory=dict)  # match id -> wall time it ended
    # match id -> its loaded_at in the warehouse (unix milliseconds, the recompute watermark's unit)
    loaded_at_ms: dict[int, int] = field(default_factory=dict)

    @property
    def published(self) -> Counter[int]:
        """How often each id was published."""
        return Counter(record.match_id for record in self.records)


def _start(module: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=handle,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def tail(log: Path, size: int = 3000) -> str:
    """The end of a process log, for failure messages."""
    return log.read_text(errors="replace")[-size:] if log.exists() else ""


async def ingest_status(port: int, keys: SigningKeys) -> ingest_pb.SourceStatus | None:
    """The first source's status, or None while ingest does not answer (asked as an admin)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await ingest_grpc.IngestServiceStub(channel).GetIngestStatus(
                ingest_pb.GetIngestStatusRequest(), metadata=keys.metadata("admin"), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return response.sources[0] if response.sources else None


async def etl_committed(port: int, keys: SigningKeys) -> dict[int, int] | None:
    """etl's committed offset per partition, or None while it does not answer (asked as an
    admin)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await etl_grpc.EtlServiceStub(channel).GetEtlStatus(
                etl_pb.GetEtlStatusRequest(), metadata=keys.metadata("admin"), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return {p.partition: p.committed_offset for p in response.partitions}


class PipelineFailed(AssertionError):
    """A stage did not get there in time; the message carries the logs."""


class Companion(Protocol):
    """Something run beside the pipeline for the whole replay, reading from etl
    (bench/freshness.py: the model process and its sampler)."""

    async def start(self, etl_port: int, keys: SigningKeys) -> None:
        """Start beside ingest and etl, before the replay clock starts. `keys` sign the tokens
        etl accepts (their ring's directory can be an auth process's AUTH_KEYS_DIR)."""

    def failure(self) -> str | None:
        """Why the replay cannot go on (a process exited: with its log), else None."""

    async def settle(self, etl_port: int, keys: SigningKeys) -> None:
        """Called once etl committed everything, while etl still runs."""

    async def stop(self) -> None:
        """Stop; called before etl stops."""


async def replay_through_pipeline(
    rows: Sequence[Mapping[str, Any]],
    *,
    kafka_bootstrap: str,
    redis_url: str,
    workdir: Path,
    speedup: float,
    faults: FaultPlan | None = None,
    late_window_seconds: float = 8000.0,
    pages_per_poll: int = 60,
    partitions: int = 4,
    jumps: Sequence[tuple[float, float]] = (),
    timeout_seconds: float = 300.0,
    ports: tuple[int, int] | None = None,
    idle_seconds: float = 0.2,
    companion: Companion | None = None,
) -> ReplayResult:
    """Replay `rows` through ingest and etl processes until etl committed everything ingest
    published (and the `companion` settled); `jumps` are (wall seconds after the clock starts,
    virtual seconds to jump)."""
    from tests.conftest import free_port

    started = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"replay-{suffix}", f"replay-dlq-{suffix}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: partitions, dlq: 1})
    ingest_port, etl_port = ports or (free_port(), free_port())
    # etl and ingest admit only admin and service callers. They verify tokens signed by these
    # keys from a JWKS file (AUTH_JWKS_FILE), as a deployment may, so no auth process is needed;
    # this harness asks them as an admin.
    keys = SigningKeys.create(workdir / "auth-keys")
    common = {
        **verifying_env(keys, workdir, redis_url),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_MATCH_IDS": topic,
        "KAFKA_TOPIC_DEAD_LETTERS": dlq,
        "SHUTDOWN_GRACE_SECONDS": "2",
        "OTEL_TRACES_EXPORTER": "none",
        "LOG_FORMAT": "text",
    }
    etl_log, ingest_log = workdir / "etl.log", workdir / "ingest.log"
    records: list[Record] = []
    commits: list[tuple[float, dict[int, int]]] = []
    with FeedReplayer(rows, speedup=speedup, faults=faults) as replayer:
        etl = _start(
            "services.etl",
            {
                **common,
                "PORT": str(etl_port),
                "KAFKA_CONSUMER_GROUP": f"replay-{suffix}",
                "KAFKA_SESSION_TIMEOUT_MS": "2000",
                "WAREHOUSE_DSN": f"chdb://{workdir / 'warehouse'}",
                "ETL_BATCH_SIZE": "500",
                # References carry their summary: etl has nothing to fetch.
                "OPENDOTA_BASE_URL": f"http://127.0.0.1:{free_port()}/api",
            },
            etl_log,
        )
        ingest = _start(
            "services.ingest",
            {
                **common,
                "PORT": str(ingest_port),
                "REDIS_URL": redis_url,
                "INGEST_SOURCES": "opendota_public",
                "OPENDOTA_BASE_URL": replayer.opendota_url,
                # A key (no daily pacing) and a paid-tier rate: the replay is faster than life.
                "OPENDOTA_API_KEY": "replay-key",
                "OPENDOTA_REQUESTS_PER_MINUTE": "60000",
                "OPENDOTA_TIMEOUT_SECONDS": "1",
                "INGEST_IDLE_SECONDS": str(idle_seconds),
                "INGEST_MAX_BACKOFF_SECONDS": "2",
                "INGEST_MAX_PAGES_PER_POLL": str(pages_per_poll),
                "INGEST_LATE_WINDOW_SECONDS": str(late_window_seconds),
            },
            ingest_log,
        )
        stop_reading = asyncio.Event()

        def logs() -> str:
            return f"\n--- ingest:\n{tail(ingest_log)}\n--- etl:\n{tail(etl_log)}"

        def check_processes() -> None:
            for process, name in ((ingest, "ingest"), (etl, "etl")):
                if process.poll() is not None:
                    raise PipelineFailed(f"{name} exited{logs()}")
            problem = companion.failure() if companion is not None else None
            if problem is not None:
                raise PipelineFailed(f"{problem}{logs()}")

        async def read_topic() -> None:
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                while not stop_reading.is_set():
                    batch = await consumer.getmany(timeout_ms=200)
                    now = time.monotonic()
                    for partition, got in batch.items():
                        records.extend(
                            Record(
                                events_pb2.MatchRef.FromString(r.value or b"").match_id,
                                partition.partition,
                                r.offset,
                                now,
                            )
                            for r in got
                        )
            finally:
                await consumer.stop()

        async def watch_etl() -> None:
            while not stop_reading.is_set():
                committed = await etl_committed(etl_port, keys)
                if committed is not None:
                    commits.append((time.monotonic(), committed))
                await asyncio.sleep(0.2)

        reader = asyncio.create_task(read_topic())
        watcher = asyncio.create_task(watch_etl())
        status: ingest_pb.SourceStatus | None = None
        try:
            async with asyncio.timeout(timeout_seconds):
                if companion is not None:
                    await companion.start(etl_port, keys)
                while status is None or not commits:
                    check_processes()
                    status = await ingest_status(ingest_port, keys)
                    await asyncio.sleep(0.1)
                replayer.start_clock()
                clock_started = time.monotonic()
                pending_jumps = sorted(jumps)
                while True:
                    check_processes()
                    while pending_jumps and time.monotonic() - clock_started >= pending_jumps[0][0]:
                        replayer.jump(pending_jumps.pop(0)[1])
                    if replayer.all_finished:
                        listed = set(replayer.listed_ids())
                        if listed <= {record.match_id for record in records}:
                            break
                    await asyncio.sleep(0.2)
                status = await ingest_status(ingest_port, keys)
                # Every record read must be committed by etl (it commits after loading).
                while True:
                    ends: dict[int, int] = {}
                    for record in records:
                        ends[record.partition] = max(
                            ends.get(record.partition, 0), record.offset + 1
                        )
                    last = commits[-1][1] if commits else {}
                    if all(last.get(p, -1) >= end for p, end in ends.items()):
                        break
                    check_processes()
                    await asyncio.sleep(0.2)
                if companion is not None:
                    await companion.settle(etl_port, keys)
        except TimeoutError:
            missing = len(set(replayer.listed_ids()) - {r.match_id for r in records})
            raise PipelineFailed(
                f"not done in {timeout_seconds:g}s: {missing} listed ids unpublished, "
                f"ingest {status}{logs()}"
            ) from None
        finally:
            stop_reading.set()
            await asyncio.gather(reader, watcher, return_exceptions=True)
            if companion is not None:
                await companion.stop()
            _stop(ingest)
            _stop(etl)
        listed_ids = replayer.listed_ids()
        answers = Counter(replayer.answers)
        end_wall = {
            match_id: wall
            for match_id, row in replayer.rows.items()
            if (wall := replayer.wall_of(row["start_time"] + row["duration"])) is not None
        }
        by_id = dict(replayer.rows)
    expected = {match_id for match_id in listed_ids if significant(by_id[match_id])}
    warehouse = Warehouse.connect(f"chdb://{workdir / 'warehouse'}")
    try:
        checksum = warehouse.checksum()
        loaded_at_ms = {
            int(match_id): int(loaded)
            for match_id, loaded in warehouse.query_rows(
                "SELECT match_id, toUnixTimestamp64Milli(loaded_at) FROM matches FINAL"
            )
        }
    finally:
        warehouse.close()
    return ReplayResult(
        listed=listed_ids,
        expected=expected,
        stored=set(loaded_at_ms),
        stored_checksum=(int(checksum[0]), int(checksum[1])),
        records=records,
        commits=commits,
        ingest_status=status,
        replayer_answers=answers,
        seconds=time.monotonic() - started,
        end_wall=end_wall,
        loaded_at_ms=loaded_at_ms,
    )
