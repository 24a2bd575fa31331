"""Every gRPC server bounds what it takes in: message sizes and calls in flight, from settings."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.config import ServiceSettings
from services.common.server import GrpcServer


async def _check(channel: grpc.aio.Channel, service: str) -> grpc.StatusCode:
    """The status of one Health/Check call naming `service`."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        await check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_service_has_limits_by_default() -> None:
    settings = ServiceSettings()
    assert settings.grpc_max_concurrent_rpcs == 1000
    assert settings.grpc_max_receive_message_bytes == 4 << 20
    assert settings.grpc_max_send_message_bytes == 4 << 20


@pytest.mark.parametrize(("limit", "size"), [(None, 5 << 20), (64 << 10, 100 << 10)])
async def test_a_too_large_request_is_refused(limit: int | None, size: int) -> None:
    values = {"port": 0} | ({"grpc_max_receive_message_bytes": limit} if limit else {})
    server = GrpcServer(name="limits", settings=ServiceSettings.model_validate(values), services=[])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _check(channel, "x" * size) == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Under the limit the same call is answered (an unknown service is NOT_FOUND).
            assert await _check(channel, "x" * 1000) == grpc.StatusCode.NOT_FOUND
            assert await _check(channel, "") == grpc.StatusCode.OK
    finally:
        await server.stop(0)


async def test_calls_beyond_the_concurrency_limit_are_refused() -> None:
    server = GrpcServer(
        name="limits",
        settings=ServiceSettings(port=0, grpc_max_concurrent_rpcs=1),
        services=[],
    )
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = channel.unary_stream(
                "/grpc.health.v1.Health/Watch",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )(health_pb2.HealthCheckRequest())
            first = await watch.read()
            assert isinstance(first, health_pb2.HealthCheckResponse)
            # The open stream holds the only slot.
            assert await _check(channel, "") == grpc.StatusCode.RESOURCE_EXHAUSTED
            watch.cancel()
            # The slot comes back once the server has seen the cancellation.
            deadline = asyncio.get_running_loop().time() + 30
            while await _check(channel, "") != grpc.StatusCode.OK:
                assert asyncio.get_running_loop().time() < deadline, "the slot never came back"
                await asyncio.sleep(0.05)
    finally:
        await server.stop(0)
