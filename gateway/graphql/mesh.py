"""The operators' view of the mesh (Query.mesh): each service's gRPC health."""

from __future__ import annotations

from enum import Enum

import strawberry

from gateway.clients import ServiceHealth


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
    address: str | None = strawberry.field(
        description="host:port the edge calls it on; null unless the caller is an operator "
        "(X-Operator-Token, or an admin's token): internal addresses are not for everyone."
    )
    status: HealthStatus

    @classmethod
    def from_internal(cls, health: ServiceHealth) -> MeshService:
        """Convert the edge's health record into the GraphQL type."""
        return cls(name=health.service, address=health.address, status=HealthStatus(health.status))
