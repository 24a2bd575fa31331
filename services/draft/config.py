"""Settings of the draft service, from environment variables."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    RedisSettings,
    ServiceCredentialSettings,
    ServiceSettings,
    TokenSettings,
)


class DraftSettings(ServiceSettings, RedisSettings, TokenSettings, ServiceCredentialSettings):
    """Everything the draft service reads from its environment."""

    @model_validator(mode="after")
    def _deployment_prefix(self) -> DraftSettings:
        # Frozen settings: the derived default is set once, here.
        if not self.draft_key_prefix:
            object.__setattr__(self, "draft_key_prefix", f"{self.deployment}:draft")
        return self

    port: Port = DEFAULT_GRPC_PORTS["draft"]
    model_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['model']}"
    user_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['user']}"
    # Namespace of the draft keys in Redis, so two deployments on one Redis never meet.
    # Unset: "<DEPLOYMENT>:draft".
    draft_key_prefix: str = Field(default="", validate_default=False)
    # How often each replica looks for drafts whose clock ran out. A timeout is applied at its
    # own deadline whatever the lag; this only bounds how late watchers hear of it.
    draft_sweep_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    # Events a watcher may fall behind before it is resynchronised with a fresh snapshot.
    draft_watch_queue_size: int = Field(default=256, ge=8)
    # Log entries kept per draft for resuming watchers (a whole draft is ~60 entries).
    draft_max_events: int = Field(default=1000, ge=100)
    # Time limit of each call to ModelService and UserService.
    draft_peer_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
