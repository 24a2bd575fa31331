"""Client side of the standard gRPC health protocol (grpc.health.v1), typed."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

_CHECK = "/grpc.health.v1.Health/Check"


async def check_health(
    channel: grpc.aio.Channel, service: str = "", *, timeout_seconds: float = 2.0
) -> str:
    """Status name of `service` ("" = the whole server): SERVING, NOT_SERVING, SERVICE_UNKNOWN,
    or UNREACHABLE when the call itself fails."""
    check = channel.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        response: health_pb2.HealthCheckResponse = await check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
