"""Client channels to peer services, traced so a call continues the caller's trace.

A channel is plaintext (the mesh's private network) unless it is given the root certificate of
the CA that signed the peer's TLS certificate: then it is a TLS channel that verifies the peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from services.common.config import CommonSettings

_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
]


@dataclass(frozen=True)
class ChannelTls:
    """How a channel verifies its TLS peer, and optionally the certificate it presents itself
    (for a server that requires client certificates, TLS_CLIENT_CA_FILE)."""

    root_certificates: bytes
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    # The name the peer's certificate must carry when it differs from the host dialled
    # (a certificate for `model` reached through 127.0.0.1, say).
    server_name: str | None = None

    @classmethod
    def from_file(cls, root_cert_file: str | Path, server_name: str | None = None) -> ChannelTls:
        """Trust the CA certificate(s) in the PEM file `root_cert_file`."""
        return cls(Path(root_cert_file).read_bytes(), server_name=server_name)

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> ChannelTls | None:
        """TLS to peers if TLS_ROOT_CERT_FILE is set, else None (plaintext)."""
        if settings.tls_root_cert_file is None:
            return None
        return cls.from_file(settings.tls_root_cert_file)

    def credentials(self) -> grpc.ChannelCredentials:
        """The grpc channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def open_channel(address: str, *, tls: ChannelTls | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to `host:port` with tracing interceptors: plaintext (in-mesh), or
    TLS verified against `tls` (see `ChannelTls.from_settings` for TLS_ROOT_CERT_FILE)."""
    interceptors = aio_client_interceptors()  # type: ignore[no-untyped-call]
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors, options=_OPTIONS)
    options = list(_OPTIONS)
    if tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(
        address, tls.credentials(), interceptors=interceptors, options=options
    )
