"""`counterpick dlq` against a running etl service, a real broker and the embedded warehouse:
dead letters listed by reason, replayed after a fix, never listed twice."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from counterpick.events.v1 import events_pb2
from services.cli.__main__ import main
from services.cli.token import AUTH_KEYS_DIR
from services.common.server import GrpcServer, registration
from services.common.stores import Stores, ensure_kafka_topics
from services.common.tokens import verifier_from_settings
from services.etl.config import EtlSettings
from services.etl.loader import FetchOutcome
from services.etl.repo import Warehouse
from services.etl.runtime import EtlRuntime
from services.etl.server import SERVICE_NAME, EtlServicer
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.contract.test_pipeline import publish, summary_ref


class FlakyOpenDota:
    """Upstream that is down until `back` is set, then serves every match."""

    def __init__(self, template: dict[str, object]) -> None:
        self.template = template
        self.back = False

    async def fetch_match(self, match_id: int) -> FetchOutcome:
        if not self.back:
            return FetchOutcome(None, error="HTTP 503", retryable=True)
        return FetchOutcome({**self.template, "match_id": match_id})

    async def close(self) -> None:
        return None


@dataclass
class RunningEtl:
    address: str
    runtime: EtlRuntime
    settings: EtlSettings
    upstream: FlakyOpenDota
    state_dir: Path
    # The deployment's signing keys, in the state dir where the CLI mints its token from.
    keys: SigningKeys

    def dlq(self, *args: str) -> tuple[int, str]:
        """Run `counterpick dlq ...` (in a thread: it runs its own event loop)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["dlq", *args, "--state-dir", str(self.state_dir)])
        return code, out.getvalue()

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 60
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def etl(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, data_dir: Path
) -> AsyncIterator[RunningEtl]:
    suffix = uuid.uuid4().hex[:8]
    state_dir = tmp_path / "state"
    keys = SigningKeys.create(state_dir / AUTH_KEYS_DIR)
    settings = EtlSettings.model_validate(
        {
            "port": 0,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "kafka_topic_match_ids": f"raw-{suffix}",
            "kafka_topic_dead_letters": f"dlq-{suffix}",
            "kafka_topic_dead_letter_replays": f"dlq-replays-{suffix}",
            "kafka_consumer_group": f"etl-{suffix}",
            "kafka_session_timeout_ms": 2000,
            "warehouse_dsn": f"chdb://{tmp_path / 'warehouse'}",
            "etl_batch_size": 50,
            "redis_url": redis_url,  # the token deny list's
        }
    )
    await ensure_kafka_topics(
        kafka_bootstrap, {settings.kafka_topic_match_ids: 2, settings.kafka_topic_dead_letters: 1}
    )
    template = json.loads((data_dir / "api-samples/odota-web/matches_2472899185.json").read_text())
    upstream = FlakyOpenDota(template)
    stores = Stores(settings)
    runtime = EtlRuntime(settings, stores)
    await runtime.fetcher.close()
    runtime.fetcher = upstream  # type: ignore[assignment]
    server = GrpcServer(
        name="etl",
        settings=settings,
        services=[
            registration(
                EtlServicer(settings, runtime),
                pb_grpc.add_EtlServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
        # As in the mesh: the dead-letter RPCs need an admin token (the CLI mints one).
        verifier=verifier_from_settings(settings, keys.source),
    )
    port = await server.start()
    try:
        yield RunningEtl(f"127.0.0.1:{port}", runtime, settings, upstream, state_dir, keys)
    finally:
        await server.stop(0)


async def test_dlq_lists_by_reason_and_replays_after_a_fix(
    etl: RunningEtl, kafka_bootstrap: str
) -> None:
    unknown = summary_ref(6001)
    unknown.summary.radiant_hero_ids[0] = 9999
    other_unknown = summary_ref(6002)
    other_unknown.summary.dire_hero_ids[0] = 9998
    needs_fetch = events_pb2.MatchRef(match_id=6100, source=events_pb2.MATCH_SOURCE_BACKFILL)
    values = [
        (b"6001", unknown.SerializeToString()),
        (b"6001", unknown.SerializeToString()),  # published twice: two letters, one listing
        (b"6002", other_unknown.SerializeToString()),
        (b"6100", needs_fetch.SerializeToString()),
        (b"junk", b"\xff\xff not protobuf"),
    ]
    await publish(kafka_bootstrap, etl.settings.kafka_topic_match_ids, values)
    stats = etl.runtime.stats
    await etl.wait_for(lambda: stats.dead_letters == 5, "five dead letters")
    address = ["--etl-address", etl.address]

    code, listing = await asyncio.to_thread(etl.dlq, "list", *address)
    assert code == 0, listing
    assert listing.startswith("4 open dead letter(s); 0 replayed earlier")
    assert _count(listing, "unknown_hero") == 2
    assert _count(listing, "fetch_failed") == 1
    assert _count(listing, "malformed_message") == 1
    assert _entry_lines(listing, "6001") == 1
    assert "hero_id=9999" in listing
    assert "HTTP 503" in listing

    # The upstream is back: replay what failed to fetch; it loads.
    etl.upstream.back = True
    code, replayed = await asyncio.to_thread(
        etl.dlq, "replay", "--reason", "fetch_failed", *address
    )
    assert code == 0, replayed
    assert "replayed 1 dead letter(s)" in replayed
    warehouse = etl.runtime.warehouse
    assert isinstance(warehouse, Warehouse)
    await etl.wait_for(lambda: 6100 in warehouse.existing_match_ids([6100]), "6100 stored")

    # A replay that fails again is one open letter, not two.
    code, replayed = await asyncio.to_thread(etl.dlq, "replay", "--match-id", "6001", *address)
    assert code == 0, replayed
    assert "replayed 1 dead letter(s)" in replayed
    await etl.wait_for(lambda: stats.dead_letters == 6, "6001 failed again")
    code, listing = await asyncio.to_thread(etl.dlq, *address)
    assert code == 0, listing
    assert listing.startswith("3 open dead letter(s); 3 replayed earlier")
    assert _entry_lines(listing, "6001") == 1
    assert _entry_lines(listing, "6100") == 0
    assert _count(listing, "fetch_failed") == 0

    code, only = await asyncio.to_thread(etl.dlq, "--reason", "malformed_message", *address)
    assert code == 0
    assert only.startswith("1 open dead letter(s)")

    code, everything = await asyncio.to_thread(etl.dlq, "replay", "--all", *address)
    assert code == 0
    assert "replayed 3 dead letter(s)" in everything


async def test_dlq_refuses_an_ambiguous_or_empty_replay(etl: RunningEtl) -> None:
    address = ["--etl-address", etl.address]
    code, _ = await asyncio.to_thread(etl.dlq, "replay", *address)
    assert code == 2
    code, _ = await asyncio.to_thread(
        etl.dlq, "replay", "--all", "--reason", "unknown_hero", *address
    )
    assert code == 2
    async with grpc.aio.insecure_channel(etl.address) as channel:
        stub = pb_grpc.EtlServiceStub(channel)
        admin = etl.keys.metadata("admin")
        for request in (
            pb.ReplayDeadLettersRequest(),
            pb.ReplayDeadLettersRequest(match_ids=pb.DeadLetterMatchIds()),
            pb.ReplayDeadLettersRequest(reason=events_pb2.DEAD_LETTER_REASON_UNSPECIFIED),
            pb.ReplayDeadLettersRequest(all=False),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ReplayDeadLetters(request, metadata=admin)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        empty = await stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=admin)
        assert (empty.total, list(empty.entries)) == (0, [])


def test_dlq_against_an_unreachable_etl_fails_naming_it(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["dlq", "--etl-address", dead, "--state-dir", str(tmp_path)])
    assert code == 1
    assert dead in err.getvalue()
    assert "UNAVAILABLE" in err.getvalue()


def _count(listing: str, reason: str) -> int:
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == reason:
            return int(parts[1])
    return 0


def _entry_lines(listing: str, match_id: str) -> int:
    return sum(1 for line in listing.splitlines() if line.split()[:1] == [match_id])
