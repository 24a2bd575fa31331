"""gRPC wiring of the auth service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from services.auth.config import AuthSettings
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores

SERVICE_NAME = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    """counterpick.auth.v1.AuthService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: AuthSettings) -> GrpcServer:
    """The auth server with its store connections opened on start and closed on stop."""
    return service_server(
        "auth",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        AuthServicer,
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server,
        SERVICE_NAME,
    )
