"""Settings of the user service, from environment variables."""

from __future__ import annotations

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    Port,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
)


class UserSettings(ServiceSettings, PostgresSettings, RedisSettings):
    """Everything the user service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["user"]
