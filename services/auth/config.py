"""Settings of the auth service, from environment variables."""

from __future__ import annotations

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
)


class AuthSettings(ServiceSettings, PostgresSettings, RedisSettings):
    """Everything the auth service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["auth"]
    user_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['user']}"
