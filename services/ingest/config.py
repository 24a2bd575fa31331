"""Settings of the ingest service, from environment variables."""

from __future__ import annotations

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    KafkaSettings,
    Port,
    RedisSettings,
    ServiceSettings,
)


class IngestSettings(ServiceSettings, KafkaSettings, RedisSettings):
    """Everything the ingest service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["ingest"]
