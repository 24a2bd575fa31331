"""gRPC wiring of the model service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.model.v1 import model_service_pb2, model_service_pb2_grpc
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores
from services.model.config import ModelSettings

SERVICE_NAME = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """counterpick.model.v1.ModelService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: ModelSettings) -> GrpcServer:
    """The model server with its store connections opened on start and closed on stop."""
    return service_server(
        "model",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        ModelServicer,
        model_service_pb2_grpc.add_ModelServiceServicer_to_server,
        SERVICE_NAME,
    )
