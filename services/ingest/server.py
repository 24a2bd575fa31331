"""gRPC wiring of the ingest service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores
from services.ingest.config import IngestSettings

SERVICE_NAME = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


class IngestServicer(ingest_service_pb2_grpc.IngestServiceServicer):
    """counterpick.ingest.v1.IngestService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: IngestSettings) -> GrpcServer:
    """The ingest server with its store connections opened on start and closed on stop."""
    return service_server(
        "ingest",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        IngestServicer,
        ingest_service_pb2_grpc.add_IngestServiceServicer_to_server,
        SERVICE_NAME,
    )
