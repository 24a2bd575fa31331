"""The edge's gRPC channels to every mesh service, opened once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import open_channel


@dataclass(frozen=True)
class ServiceHealth:
    """The health of one mesh service as the edge sees it."""

    service: str
    address: str
    status: str


class MeshClients:
    """One traced channel per service; stubs are cheap and built per call."""

    def __init__(self, addresses: dict[str, str], timeout_seconds: float) -> None:
        self.addresses = addresses
        self.timeout_seconds = timeout_seconds
        self.channels: dict[str, grpc.aio.Channel] = {
            name: open_channel(address) for name, address in addresses.items()
        }

    async def health(self, service: str) -> ServiceHealth:
        """Check one service's overall health; a dead or slow peer reads as UNREACHABLE."""
        stub = health_pb2_grpc.HealthStub(self.channels[service])
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(), timeout=self.timeout_seconds
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.aio.AioRpcError:
            status = "UNREACHABLE"
        return ServiceHealth(service, self.addresses[service], status)

    async def mesh_health(self) -> list[ServiceHealth]:
        """Every service's health, checked concurrently."""
        return list(await asyncio.gather(*(self.health(name) for name in self.channels)))

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
