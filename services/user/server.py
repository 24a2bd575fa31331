"""gRPC wiring of the user service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.user.v1 import user_service_pb2, user_service_pb2_grpc
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores
from services.user.config import UserSettings

SERVICE_NAME = user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


class UserServicer(user_service_pb2_grpc.UserServiceServicer):
    """counterpick.user.v1.UserService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: UserSettings) -> GrpcServer:
    """The user server with its store connections opened on start and closed on stop."""
    return service_server(
        "user",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        UserServicer,
        user_service_pb2_grpc.add_UserServiceServicer_to_server,
        SERVICE_NAME,
    )
