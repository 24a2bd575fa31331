"""The public GraphQL schema. Types here are the edge's own, converted explicitly from gRPC data."""

from __future__ import annotations

from enum import Enum
from functools import partial

import strawberry
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.fastapi import BaseContext
from strawberry.schema.config import StrawberryConfig

from gateway.clients import MeshClients, ServiceHealth


class Context(BaseContext):
    """Per-request context: the mesh clients (later also the caller and request-scoped loaders)."""

    def __init__(self, clients: MeshClients) -> None:
        super().__init__()
        self.clients = clients


@strawberry.enum(description="gRPC health of a service (grpc.health.v1 ServingStatus).")
class HealthStatus(Enum):
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"
    UNKNOWN = "UNKNOWN"
    UNREACHABLE = "UNREACHABLE"


@strawberry.type(description="One service of the mesh and whether it answers.")
class MeshService:
    name: str = strawberry.field(description="Service name: ingest, etl, model, auth, user, draft.")
    address: str = strawberry.field(description="host:port the edge calls it on.")
    status: HealthStatus

    @classmethod
    def from_internal(cls, health: ServiceHealth) -> MeshService:
        """Convert the edge's health record into the GraphQL type."""
        return cls(name=health.service, address=health.address, status=HealthStatus(health.status))


async def resolve_mesh(info: strawberry.Info[Context, None]) -> list[MeshService]:
    """Health of every service, checked concurrently over the edge's traced channels."""
    return [MeshService.from_internal(h) for h in await info.context.clients.mesh_health()]


@strawberry.type
class Query:
    mesh: list[MeshService] = strawberry.field(
        resolver=resolve_mesh,
        description="Health of every backend service, checked live over gRPC.",
    )


schema = strawberry.Schema(
    query=Query,
    config=StrawberryConfig(auto_camel_case=True),
    extensions=[
        partial(QueryDepthLimiter, max_depth=10),
        partial(MaxAliasesLimiter, max_alias_count=30),
    ],
)
