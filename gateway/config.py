"""Settings of the edge, from environment variables."""

from __future__ import annotations

from pathlib import Path

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


def edge_service_tokens(settings: EdgeSettings) -> ServiceTokens:
    """The edge's own service token, for the calls it makes as itself (the shared WatchDraft
    streams of the overlay feed, MirrorGameDraft for GSI): its credential is SERVICE_CREDENTIAL
    or SERVICE_CREDENTIAL_FILE (ServiceCredentialSettings), exchanged at AUTH_ADDR."""
    credential = settings.service_credential
    if not credential and settings.service_credential_file:
        credential = Path(settings.service_credential_file).read_text()
    return ServiceTokens(credential=credential.strip(), auth_addr=settings.auth_addr)
