"""gRPC wiring of the etl service: the servicer and the server it runs in."""

from __future__ import annotations

from counterpick.etl.v1 import etl_service_pb2, etl_service_pb2_grpc
from services.common.server import GrpcServer, service_server
from services.common.stores import Stores
from services.etl.config import EtlSettings

SERVICE_NAME = etl_service_pb2.DESCRIPTOR.services_by_name["EtlService"].full_name


class EtlServicer(etl_service_pb2_grpc.EtlServiceServicer):
    """counterpick.etl.v1.EtlService; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores


def build_server(settings: EtlSettings) -> GrpcServer:
    """The etl server with its store connections opened on start and closed on stop."""
    return service_server(
        "etl",
        settings,
        # Abstract until every RPC is built: the generated base methods raise
        # NotImplementedError, which the runtime answers as UNIMPLEMENTED.
        EtlServicer,
        etl_service_pb2_grpc.add_EtlServiceServicer_to_server,
        SERVICE_NAME,
    )
