"""Settings of the model service, from environment variables."""

from __future__ import annotations

from pydantic import Field

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    RedisSettings,
    ServiceCredentialSettings,
    ServiceSettings,
    TokenSettings,
)


class ModelSettings(ServiceSettings, RedisSettings, TokenSettings, ServiceCredentialSettings):
    """Everything the model service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["model"]
    etl_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['etl']}"
    # UserService, for the hero pool and excluded heroes of SuggestPicks' account_id.
    user_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['user']}"
    # Time limit of each UserService call; past it suggestions go out without the pool.
    model_user_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    # A ClickHouse the model reads directly (a server in production). Unset: the warehouse is
    # read through the etl service, which owns the embedded engine's directory.
    model_warehouse_dsn: str | None = Field(default=None, pattern=r"^(chdb|https?|clickhouse)://")
    # Scheduled recompute period; 0 turns the schedule off (Recompute RPC and CLI still work).
    # Scheduled runs are incremental: one tiny watermark query when nothing was stored, else
    # counts of the new matches only, so a stored match is served within about this period.
    model_recompute_interval_seconds: float = Field(default=60.0, ge=0)
    # How often a scheduled run is a full recount instead, which also refits the win models
    # (seconds per patch) and the personal-score prior, and repairs what incremental counting
    # cannot see (a re-inserted match whose older copy a merge removed).
    model_full_recompute_seconds: float = Field(default=3600.0, gt=0)
    # How often a replica re-reads the snapshot pointer, in case a change notice was missed.
    model_snapshot_poll_seconds: float = Field(default=30.0, gt=0)
    # How long a player's personal scores are cached in Redis.
    model_pas_cache_seconds: int = Field(default=600, ge=0)
