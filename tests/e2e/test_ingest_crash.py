"""SIGKILL the ingest process mid-stream, restart it: every listed match published, stored once.

`python -m services.ingest` polls a live OpenDota /api/publicMatches (tests.replay_server's
PublicMatchesFeed: 30 pages of real recorded rows under fresh ids, finishing while it polls, paged
exactly as OpenDota pages), publishes to a real broker and keeps its progress in the real Redis.
It is killed twice, each time at a moment made certain instead of hoped for:

1. after Kafka acknowledged a page's batch and before its ids were recorded as published (a proxy
   in front of Redis swallows that ZADD): the restarted process must publish that batch again;
2. halfway through reading a range of pages (the feed holds a page-back request): the restarted
   process must read that range again.

A third process runs to the end. Then the topic holds every listed match (0 lost), the only
duplicates are the batch of kill 1, and etl's pipeline loads exactly the listed set into the
warehouse (0 duplicated).

Not modelled here: matches appearing out of id order (OpenDota lists a match when it ends, its
id was given at its start); tests/e2e/test_replay_exactly_once.py replays real finishing times.
This feed finishes its matches in id order and keeps the recorded 2018 start times, unrelated to
its ids, so the ingest runs with a late window of 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import grpc
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from counterpick.events.v1 import events_pb2
from counterpick.ingest.v1 import ingest_service_pb2 as pb
from counterpick.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from services.common.dota_constants import load_constants
from services.common.stores import ensure_kafka_topics
from services.etl import transform
from services.etl.pipeline import MatchPipeline
from services.etl.repo import Warehouse
from services.ingest.repo import CursorStore, floor_key, seen_key
from tests.auth_keys import SigningKeys, verifying_env
from tests.conftest import REPO_ROOT, free_port
from tests.replay_server import PublicMatchesFeed, ReplayServer, recorded_public_matches

pytestmark = pytest.mark.e2e
SOURCE = "opendota_public"
PAGES = 30
LISTED = PAGES * PublicMatchesFeed.PAGE_ROWS
# Faster than one process can page at OpenDota's 60 requests a minute (~90 matches/s): every
# poll after the first few reads a gap of several pages, and matches keep finishing while the
# process is dead.
FINISHED_PER_SECOND = 150.0
# Cursor moves let through before the one held for kill 1: the batches before it are settled.
SETTLED_BATCHES = 5


class ProgressGate:
    """A TCP proxy in front of Redis that can keep the ingest from recording what it published.

    `WindowStore.mark_seen` is the only ZADD to a `seen:` key the ingest sends. After
    `hold_after(n)` the proxy forwards n of them and swallows the next one with everything after
    it on that connection: the ingest waits for its progress to be recorded, its batch already
    acknowledged by Kafka.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._budget: int | None = None
        self.held = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen on a free loopback port and return it."""
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def hold_after(self, evals: int) -> None:
        """Forward `evals` more records of published ids, then hold the next."""
        self._budget = evals

    def forward_all(self) -> None:
        """Forward everything on connections made from now on."""
        self._budget = None
        self.held.clear()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self._upstream)
        self._writers.update((client_w, upstream_w))

        async def answers() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await upstream_r.read(65536):
                    client_w.write(data)
                    await client_w.drain()

        down = asyncio.create_task(answers())
        try:
            while data := await client_r.read(65536):
                if (
                    self._budget is not None
                    and b"\r\nZADD\r\n" in data.upper()
                    and b":seen:" in data
                ):
                    if self._budget == 0:
                        self.held.set()
                        while await client_r.read(65536):
                            pass  # swallowed until the client dies
                        break
                    self._budget -= 1
                upstream_w.write(data)
                await upstream_w.drain()
        except ConnectionError:
            pass
        finally:
            down.cancel()
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                writer.close()


def _start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=handle,
        )


def _log_text(log: Path) -> str:
    return log.read_text()


def _tail(log: Path) -> str:
    return _log_text(log)[-3000:]


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


async def _status(port: int, keys: SigningKeys) -> pb.SourceStatus | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await pb_grpc.IngestServiceStub(channel).GetIngestStatus(
                pb.GetIngestStatusRequest(), metadata=keys.metadata("admin"), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return response.sources[0] if response.sources else None


async def _until(
    condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, seconds: float
) -> None:
    """Wait for `condition` while the process lives; fail with its log otherwise."""
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                assert process.poll() is None, _tail(log)
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"condition not met within {seconds:g}s; ingest log:\n{_tail(log)}")


async def _read_topic(
    bootstrap: str, topic: str, expected: set[int]
) -> tuple[list[int], dict[int, int]]:
    """Every match id on the topic, and the end offset of each partition read."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    ids: list[int] = []
    ends: dict[int, int] = {}
    try:
        # Until every expected id arrived and then a whole second passed without a record (or
        # 20 s, after which the assertions say what is missing).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and expected <= set(ids):
                break
            for partition, records in batch.items():
                ids.extend(events_pb2.MatchRef.FromString(r.value or b"").match_id for r in records)
                ends[partition.partition] = records[-1].offset + 1
    finally:
        await consumer.stop()
    return ids, ends


async def _load_into_warehouse(
    bootstrap: str, topic: str, dlq: str, ends: dict[int, int], warehouse: Warehouse
) -> MatchPipeline:
    """Run etl's pipeline over the whole topic: until its commits reach every end offset."""
    pipeline = MatchPipeline(
        bootstrap_servers=bootstrap,
        topic=topic,
        dead_letter_topic=dlq,
        group_id=f"{topic}-etl",
        warehouse=warehouse,
        constants=load_constants(),
        fetcher=None,  # publicMatches references carry their draft
        batch_size=500,
        session_timeout_ms=2000,
    )
    await pipeline.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(pipeline.run(stop))
    try:
        async with asyncio.timeout(60):
            while True:
                assert pipeline.consumer is not None
                committed = [
                    await pipeline.consumer.committed(TopicPartition(topic, partition)) or 0
                    for partition in ends
                ]
                if all(c >= end for c, end in zip(committed, ends.values(), strict=True)):
                    break
                assert not runner.done(), runner
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await runner
        await pipeline.stop()
    return pipeline


def _significant(row: dict[str, Any]) -> bool:
    return transform.skip_reason(transform.from_public_match(row)) is None


async def test_sigkill_mid_stream_then_restart_publishes_every_match_and_stores_each_once(
    kafka_bootstrap: str, redis_url: str, data_dir: Path, tmp_path: Path
) -> None:
    # Only rows etl keeps, so the warehouse must end up holding exactly the listed set (all 100
    # recorded rows qualify today; the skip rule itself is tested elsewhere).
    rows = [row for row in recorded_public_matches(data_dir) if _significant(row)]
    assert len(rows) >= 50
    # One more than listed: OpenDota never lists the newest match (see PublicMatchesFeed).
    feed = PublicMatchesFeed(rows, total=LISTED + 1, per_second=FINISHED_PER_SECOND, seed=570)
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"ingest-crash-{suffix}", f"ingest-crash-dlq-{suffix}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 4, dlq: 1})

    redis_address = urlsplit(redis_url)
    gate = ProgressGate(redis_address.hostname or "127.0.0.1", redis_address.port or 6379)
    gate_port = await gate.start()
    redis = aioredis.Redis.from_url(redis_url)
    cursors = CursorStore(redis)
    # The cursor name is fixed per source; the fixture's database is flushed after every test.
    assert await cursors.get(SOURCE) is None

    port = free_port()
    # GetIngestStatus needs an admin token: ingest verifies it against the keys' JWKS file, and
    # reads its deny list past the gate (which only ever holds back ZADDs to `seen:` keys).
    keys = SigningKeys.create(tmp_path / "auth-keys")
    verifying = verifying_env(keys, tmp_path, redis_url)
    log = tmp_path / "ingest.log"
    ingest: subprocess.Popen[bytes] | None = None
    try:
        with ReplayServer(data_dir, public_matches=feed) as server:
            env = {
                **verifying,
                "PORT": str(port),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "KAFKA_TOPIC_MATCH_IDS": topic,
                "KAFKA_TOPIC_DEAD_LETTERS": dlq,
                "REDIS_URL": f"redis://127.0.0.1:{gate_port}{redis_address.path}",
                "INGEST_SOURCES": SOURCE,
                "OPENDOTA_BASE_URL": server.opendota_url,
                # With a key the client paces at 60 requests a minute only; without one it also
                # spreads the free 3,000 a day, i.e. one request per ~29 s after a burst of 60.
                "OPENDOTA_API_KEY": "crash-test-key",
                "INGEST_IDLE_SECONDS": "0.2",
                "INGEST_MAX_PAGES_PER_POLL": "1000",
                # See the module docstring: no late finishers, start times unrelated to ids.
                "INGEST_LATE_WINDOW_SECONDS": "0",
                "SHUTDOWN_GRACE_SECONDS": "2",
            }

            # Kill 1: a batch acknowledged by Kafka, its ids not recorded as published.
            gate.hold_after(SETTLED_BATCHES)
            ingest = _start_ingest(env, log)
            await _until(gate.held.is_set, ingest, log, 30)
            _kill(ingest)
            gate.forward_all()
            before_kill, _ = await _read_topic(kafka_bootstrap, topic, set())
            recorded = {int(cast(bytes, m)) for m in await redis.zrange(seen_key(SOURCE), 0, -1)}
            # Ids at or below the floor are handled and no longer kept in the published set.
            floor = int(await redis.get(floor_key(SOURCE)) or 0)
            held_batch = {match_id for match_id in before_kill if match_id > floor} - recorded
            assert held_batch, "kill 1 must land between a publication and its record"
            assert len(held_batch) <= PublicMatchesFeed.PAGE_ROWS

            # Kill 2: halfway through reading a range of pages.
            feed.hold_next_page_back()
            ingest = _start_ingest(env, log)
            await _until(feed.held.is_set, ingest, log, 30)
            _kill(ingest)
            feed.release()
            assert not feed.all_finished, "the kills came too late to prove anything"

            # The third process runs until it has published the last listed match.
            ingest = _start_ingest(env, log)
            last_status: pb.SourceStatus | None = None

            async def caught_up() -> bool:
                nonlocal last_status
                last_status = await _status(port, keys)
                listed = feed.listed_ids()
                # A poll that read the newest listed id and ended with nothing left unread.
                return (
                    feed.all_finished
                    and last_status is not None
                    and last_status.last_match_id == listed[-1]
                    and last_status.HasField("lag_matches")
                    and last_status.lag_matches == 0
                )

            try:
                async with asyncio.timeout(90):
                    while not await caught_up():
                        assert ingest.poll() is None, _tail(log)
                        await asyncio.sleep(0.2)
            except TimeoutError:
                pytest.fail(f"ingest 3 did not catch up: {last_status}\n{_tail(log)}")
            ingest.send_signal(signal.SIGTERM)
            assert ingest.wait(timeout=30) == 0, _tail(log)
    finally:
        if ingest is not None and ingest.poll() is None:
            _kill(ingest)
        await gate.close()
        await redis.aclose()

    assert last_status is not None
    assert last_status.state == pb.SOURCE_STATE_HEALTHY, last_status
    assert last_status.lag_matches == 0
    assert last_status.open_gaps == 0

    listed = feed.listed_ids()
    assert len(listed) == LISTED
    published, ends = await _read_topic(kafka_bootstrap, topic, set(listed))
    lost = set(listed) - set(published)
    assert not lost, f"{len(lost)} listed matches never published"
    assert set(published) == set(listed)
    # Kill 1's batch, published again by the restart; nothing else twice.
    repeated = {match_id for match_id, n in Counter(published).items() if n > 1}
    assert repeated == held_batch, "kill 1's batch must have been published, then published again"
    assert max(Counter(published).values()) == 2
    assert sum(ends.values()) == len(published)

    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    warehouse.migrate()
    try:
        pipeline = await _load_into_warehouse(kafka_bootstrap, topic, dlq, ends, warehouse)
        assert pipeline.stats.dead_letters == 0
        assert not pipeline.stats.skipped
        assert warehouse.checksum() == (LISTED, sum(listed))
    finally:
        warehouse.close()
