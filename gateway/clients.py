"""The edge's gRPC channels to every mesh service, opened once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from counterpick.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from services.common.channels import open_channel
from services.common.health import check_health


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
        status = await check_health(self.channels[service], timeout_seconds=self.timeout_seconds)
        return ServiceHealth(service, self.addresses[service], status)

    async def mesh_health(self) -> list[ServiceHealth]:
        """Every service's health, checked concurrently."""
        return list(await asyncio.gather(*(self.health(name) for name in self.channels)))

    async def jwks_json(self) -> str:
        """The auth service's JWK Set document (GetJwks)."""
        stub = auth_service_pb2_grpc.AuthServiceStub(self.channels["auth"])
        response = await stub.GetJwks(
            auth_service_pb2.GetJwksRequest(), timeout=self.timeout_seconds
        )
        return response.jwks_json

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
