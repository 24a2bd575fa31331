"""Each of the six services starts on the runtime with its real stores and reports its health."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool

from services.common import health
from services.common.config import ServiceSettings
from services.common.errors import DependencyUnavailable
from services.common.server import GrpcServer
from services.draft.config import DraftSettings
from services.draft.server import build_server as build_draft
from services.etl.config import EtlSettings
from services.etl.server import build_server as build_etl
from services.ingest.config import IngestSettings
from services.ingest.server import build_server as build_ingest
from services.user.config import UserSettings
from services.user.server import build_server as build_user
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.rpc import bearer, fails

# (service, builder, settings class): services whose every RPC is checked to be built.
Builder = Callable[[Any], GrpcServer]
CASES: list[tuple[str, Builder, type[ServiceSettings]]] = [
    ("draft", build_draft, DraftSettings),
]


@pytest.mark.parametrize(("name", "build", "settings_class"), CASES)
async def test_service_serves_health_and_builds_every_rpc_of_its_contract(
    name: str,
    build: Builder,
    settings_class: type[ServiceSettings],
    postgres_dsn: str,
    redis_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    settings = settings_class.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "warehouse_dsn": f"chdb://{tmp_path / 'warehouse'}",
        }
    )
    server = build(settings)
    port = await server.start()
    try:
        full_name = server.services[0].full_name
        assert full_name == f"counterpick.{name}.v1.{name.capitalize()}Service"
        descriptor = descriptor_pool.Default().FindServiceByName(full_name)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await health.check_health(channel) == "SERVING"
            assert await health.check_health(channel, full_name) == "SERVING"
            for method in descriptor.methods:
                # An anonymous, empty request: refused (no token, bad argument) by a built RPC,
                # never UNIMPLEMENTED.
                if method.server_streaming:
                    streaming: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = (
                        channel.unary_stream(f"/{full_name}/{method.name}")
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        async for _ in streaming(b"", timeout=5):
                            pass
                else:
                    unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        f"/{full_name}/{method.name}"
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await unary(b"", timeout=5)
                assert raised.value.code() != grpc.StatusCode.UNIMPLEMENTED, method.name
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
    finally:
        await server.stop(0)


async def test_ingest_reports_its_sources_and_accepts_backfills(
    redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from counterpick.ingest.v1 import ingest_service_pb2 as ingest_pb
    from counterpick.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc

    settings = IngestSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "kafka_bootstrap_servers": kafka_bootstrap,
            # Offline on purpose: the source must fail politely and say so.
            "opendota_base_url": f"http://127.0.0.1:{free_port()}/api",
        }
    )
    keys = SigningKeys.create(tmp_path / "keys")
    admin = keys.metadata("admin")
    server = build_ingest(settings, key_source=keys.source)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ingest_grpc.IngestServiceStub(channel)
            backfill = ingest_pb.BackfillRequest(ids=ingest_pb.MatchIdList(match_ids=[7, 8, 9]))
            # An operations API: no anonymous callers, no mere users.
            anonymous = await fails(stub.Backfill(backfill))
            assert (anonymous.code, anonymous.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "ERROR_REASON_UNAUTHENTICATED",
            )
            user = await fails(
                stub.GetIngestStatus(
                    ingest_pb.GetIngestStatusRequest(), metadata=keys.metadata("user")
                )
            )
            assert (user.code, user.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "ERROR_REASON_PERMISSION_DENIED",
            )
            for _ in range(100):
                status = await stub.GetIngestStatus(
                    ingest_pb.GetIngestStatusRequest(), metadata=admin
                )
                if status.sources[0].last_error:
                    break
                await asyncio.sleep(0.1)
            source = status.sources[0]
            assert source.name == "opendota_public"
            assert source.state in (ingest_pb.SOURCE_STATE_DEGRADED, ingest_pb.SOURCE_STATE_DOWN)
            assert "ConnectError" in source.last_error or "timed out" in source.last_error
            accepted = await stub.Backfill(backfill, metadata=keys.metadata("service"))
            assert accepted.accepted_count == 3
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Backfill(
                    ingest_pb.BackfillRequest(
                        range=ingest_pb.MatchIdRange(first_match_id=10, last_match_id=5)
                    ),
                    metadata=admin,
                )
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(0)


async def test_etl_reports_status_and_rejects_a_bad_reprocess(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    from counterpick.etl.v1 import etl_service_pb2 as etl_pb
    from counterpick.etl.v1 import etl_service_pb2_grpc as etl_grpc

    settings = EtlSettings.model_validate(
        {
            "port": 0,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "warehouse_dsn": f"chdb://{tmp_path / 'warehouse'}",
            "redis_url": redis_url,  # the token deny list's
            "kafka_consumer_group": f"etl-{free_port()}",
            "kafka_session_timeout_ms": 2000,
            "opendota_base_url": f"http://127.0.0.1:{free_port()}/api",
        }
    )
    keys = SigningKeys.create(tmp_path / "keys")
    admin = keys.metadata("admin")
    server = build_etl(settings, key_source=keys.source)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = etl_grpc.EtlServiceStub(channel)
            anonymous = await fails(stub.GetEtlStatus(etl_pb.GetEtlStatusRequest()))
            assert (anonymous.code, anonymous.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "ERROR_REASON_UNAUTHENTICATED",
            )
            user = await fails(
                stub.GetEtlStatus(etl_pb.GetEtlStatusRequest(), metadata=keys.metadata("user"))
            )
            assert (user.code, user.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "ERROR_REASON_PERMISSION_DENIED",
            )
            # Per-player rows are for the model's own identity; another service is refused.
            per_player = etl_pb.ReadWarehouseRequest(
                query=etl_pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS, account_id=42
            )
            draft = bearer(keys.token("service", user_id="service:draft"))
            refused = await fails(stub.ReadWarehouse(per_player, metadata=draft).read())
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "ERROR_REASON_PERMISSION_DENIED",
            )
            model = bearer(keys.token("service", user_id="service:model"))
            async for _ in stub.ReadWarehouse(per_player, metadata=model):
                pass  # allowed: the (empty) result streams
            status = await stub.GetEtlStatus(etl_pb.GetEtlStatusRequest(), metadata=admin)
            assert status.consumer_group == settings.kafka_consumer_group
            assert status.topic == "match_ids_raw"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ReprocessMatch(etl_pb.ReprocessMatchRequest(), metadata=admin)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ReprocessMatch(
                    etl_pb.ReprocessMatchRequest(match_id=1), metadata=admin, timeout=60
                )
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_service_refuses_to_start_when_its_store_is_down(redis_url: str) -> None:
    dead_postgres = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    server = build_user(
        UserSettings(
            port=0, postgres_dsn=dead_postgres, redis_url=redis_url, store_wait_seconds=0.5
        )
    )
    with pytest.raises(DependencyUnavailable) as raised:
        await server.start()
    assert raised.value.dependency == "postgresql"
    assert "unreachable after 0.5s" in raised.value.message
