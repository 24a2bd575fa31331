"""Settings of the model service, from environment variables."""

from __future__ import annotations

from pydantic import Field

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    RedisSettings,
    ServiceSettings,
    TokenSettings,
)


class ModelSettings(ServiceSettings, RedisSettings, TokenSettings):
    """Everything the model service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["model"]
    etl_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['etl']}"
    # A ClickHouse the model reads directly (a server in production). Unset: the warehouse is
    # read through the etl service, which owns the embedded engine's directory.
    model_warehouse_dsn: str | None = Field(default=None, pattern=r"^(chdb|https?|clickhouse)://")
    # Scheduled recompute period; 0 turns the schedule off (Recompute RPC and CLI still work).
    model_recompute_interval_seconds: float = Field(default=900.0, ge=0)
    # Every this many scheduled runs is a full recount instead of an incremental one.
    model_full_recompute_every: int = Field(default=24, ge=1)
    # How often a replica re-reads the snapshot pointer, in case a change notice was missed.
    model_snapshot_poll_seconds: float = Field(default=30.0, gt=0)
    # How long a player's personal scores are cached in Redis.
    model_pas_cache_seconds: int = Field(default=600, ge=0)
