"""Client channels to peer services, traced so a call continues the caller's trace."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure (in-mesh) grpc.aio channel to `host:port` with tracing interceptors."""
    return grpc.aio.insecure_channel(
        address,
        interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
        options=[("grpc.enable_retries", 1), ("grpc.keepalive_time_ms", 30_000)],
    )
