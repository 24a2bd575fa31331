"""Settings of the draft service, from environment variables."""

from __future__ import annotations

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    RedisSettings,
    ServiceSettings,
)


class DraftSettings(ServiceSettings, RedisSettings):
    """Everything the draft service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["draft"]
    model_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['model']}"
