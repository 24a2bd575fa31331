"""Settings of the etl service, from environment variables."""

from __future__ import annotations

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    KafkaSettings,
    Port,
    ServiceSettings,
    WarehouseSettings,
)


class EtlSettings(ServiceSettings, KafkaSettings, WarehouseSettings):
    """Everything the etl service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["etl"]
