"""gRPC wiring of the draft service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.draft.v1 import draft_service_pb2, draft_service_pb2_grpc
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores
from services.draft.config import DraftSettings

SERVICE_NAME = draft_service_pb2.DESCRIPTOR.services_by_name["DraftService"].full_name


class DraftServicer(draft_service_pb2_grpc.DraftServiceServicer):
    """counterpick.draft.v1.DraftService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: DraftSettings) -> GrpcServer:
    """The draft server with its store connections opened on start and closed on stop."""
    return service_server(
        "draft",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        DraftServicer,
        draft_service_pb2_grpc.add_DraftServiceServicer_to_server,
        SERVICE_NAME,
    )
