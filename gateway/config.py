"""Settings of the edge, from environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    CommonSettings,
    PeerAddress,
    Port,
    ServiceCredentialSettings,
    TokenSettings,
)
from services.common.service_tokens import ServiceTokens


def _local(service: str) -> str:
    return f"127.0.0.1:{DEFAULT_GRPC_PORTS[service]}"


class EdgeSettings(CommonSettings, TokenSettings, ServiceCredentialSettings):
    """Where the edge listens and where each mesh service is."""

    host: str = "127.0.0.1"
    port: Port = 8000
    ingest_addr: PeerAddress = _local("ingest")
    etl_addr: PeerAddress = _local("etl")
    model_addr: PeerAddress = _local("model")
    auth_addr: PeerAddress = _local("auth")
    user_addr: PeerAddress = _local("user")
    draft_addr: PeerAddress = _local("draft")
    # Per-call deadline for the edge's gRPC calls; a browser should never hang on a dead peer.
    grpc_timeout_seconds: float = 2.0

    def peer_addresses(self) -> dict[str, str]:
        """Service name -> host:port, in mesh order."""
        return {name: getattr(self, f"{name}_addr") for name in DEFAULT_GRPC_PORTS}

    # --- Browser sign-in and edge security (gateway/web_auth.py, gateway/security.py) ---
    # The edge's public origin (scheme://host[:port]) that Steam sends the browser back to; unset,
    # it is taken from the request, which is right for a laptop but not behind a proxy.
    edge_public_url: str | None = None
    # Origins of other sites allowed to call the API from a browser (CORS), comma-separated.
    # The page itself is same-origin and needs none; cookies never go cross-origin.
    edge_cors_origins: str = ""
    # Largest request body the edge reads; GraphQL documents and GSI posts are a few KB.
    edge_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Per-address and per-token request quotas of the edge, in Redis (redis_url); while Redis is
    # down requests pass. A draft page makes a few requests per pick; 600 a minute per address
    # leaves room for a LAN behind one NAT.
    edge_rate_limit_enabled: bool = True
    edge_rate_limit_per_address_per_minute: int = Field(default=600, ge=1)
    edge_rate_limit_per_token_per_minute: int = Field(default=300, ge=1)
    edge_rate_limit_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Unset: "<DEPLOYMENT>:edge-rate", so deployments sharing a Redis keep their own counts.
    edge_rate_limit_key_prefix: str | None = Field(default=None, min_length=1)
    # Reverse proxies in front of the edge (a TLS terminator, a load balancer) whose
    # X-Forwarded-For / X-Forwarded-Proto are believed: the client's address in them is then the
    # one quotas, logs and the services' anonymous quotas see. Comma-separated addresses or
    # networks ("10.0.0.0/8"); "*" believes anyone (only behind a proxy that always sets them).
    # Default: loopback only, where a local proxy runs; a bare edge ignores the headers.
    edge_trusted_proxies: str = "127.0.0.1,::1"

    def edge_rate_limit_prefix(self) -> str:
        """The Redis key prefix of the edge's own quotas."""
        return self.edge_rate_limit_key_prefix or f"{self.deployment}:edge-rate"

    # Shared secret of operators (X-Operator-Token) for /metrics and the detail of /readyz; a
    # token with the admin role works too. Unset, only admins get them.
    edge_operator_token: SecretStr | None = None

    def cors_origins(self) -> list[str]:
        """The CORS allow-list."""
        return [o.strip().rstrip("/") for o in self.edge_cors_origins.split(",") if o.strip()]


def edge_service_tokens(settings: EdgeSettings) -> ServiceTokens:
    """The edge's own service token, for the calls it makes as itself (the shared WatchDraft
    streams of the overlay feed, MirrorGameDraft for GSI): its credential is SERVICE_CREDENTIAL
    or SERVICE_CREDENTIAL_FILE (ServiceCredentialSettings), exchanged at AUTH_ADDR."""
    credential = settings.service_credential
    if not credential and settings.service_credential_file:
        credential = Path(settings.service_credential_file).read_text()
    return ServiceTokens(credential=credential.strip(), auth_addr=settings.auth_addr)
