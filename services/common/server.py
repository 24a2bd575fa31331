"""The grpc.aio server bootstrap every service runs: health, reflection, tracing, errors, metrics,
the limits of what one process takes in (calls in flight, message sizes, per-caller quotas), and TLS
on the port when the settings name a certificate.

A service hands `GrpcServer` its registrations (the servicer plus the generated `add_*_to_server`)
and its own start/stop hooks; this module owns the rest of the life cycle: bind, SERVING health
entries, graceful SIGTERM (NOT_SERVING first, then stop accepting, then finish in-flight calls
within the grace period), and flushing telemetry on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import full_method_name, negate
from prometheus_client import start_http_server

from services.common.config import ServiceSettings
from services.common.errors import CounterpickError
from services.common.interceptors import (
    AccessInterceptor,
    AuthInterceptor,
    StatusInterceptor,
)
from services.common.rate_limit import RateLimitInterceptor
from services.common.stores import Stores
from services.common.telemetry import setup_telemetry, shutdown_telemetry
from services.common.tokens import TokenVerifier

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
_HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


def _tracing_interceptor() -> grpc.aio.ServerInterceptor:
    """OpenTelemetry's server interceptor, minus Health/Watch.

    The instrumentation wraps every server-streaming handler as an async generator, which breaks
    write-style handlers such as grpc's aio Health/Watch; a long-lived watch is no useful span.
    """
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=negate(full_method_name(_HEALTH_WATCH))
    )
    return interceptor


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port from TLS_CERT_FILE / TLS_KEY_FILE (None: plaintext).

    With TLS_CLIENT_CA_FILE, clients must present a certificate that CA signed.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = settings.tls_cert_file.read_bytes()
    key = settings.tls_key_file.read_bytes()
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


@dataclass(frozen=True)
class ServiceRegistration:
    """One exported gRPC service: its full name and how to add its servicer to a server."""

    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]


def registration[T](
    servicer: T,
    add_servicer: Callable[[T, grpc.aio.Server], None],
    descriptor_full_name: str,
) -> ServiceRegistration:
    """Bind a servicer to its generated `add_XServicer_to_server` function."""
    return ServiceRegistration(descriptor_full_name, lambda server: add_servicer(servicer, server))


@dataclass
class GrpcServer:
    """A running (or ready to run) gRPC server for one mesh service."""

    name: str
    settings: ServiceSettings
    services: Sequence[ServiceRegistration]
    on_start: Sequence[Hook] = ()
    on_stop: Sequence[Hook] = ()
    # Run when graceful shutdown begins (health NOT_SERVING), before in-flight calls are waited
    # for: a service ends its long-lived streams here so they do not hold the grace period up.
    on_shutdown_begin: Sequence[Hook] = ()
    # When set, every call's bearer token is verified (see AuthInterceptor).
    verifier: TokenVerifier | None = None
    # When set, every call but health and reflection is counted against its caller's quota
    # (build one with services.common.rate_limit.rate_limiter_from_settings); closed on stop.
    rate_limiter: RateLimitInterceptor | None = None
    port: int = 0
    # The public TLS port when TLS_PORT is set beside the plaintext one.
    tls_port: int | None = None
    _server: grpc.aio.Server | None = field(default=None, init=False)
    _health: health.aio.HealthServicer | None = field(default=None, init=False)
    _extra_health: dict[str, bool] = field(default_factory=dict, init=False)

    def set_health(self, name: str, serving: bool) -> None:
        """Report a named health entry (a dependency of the service, say) as (NOT_)SERVING.

        Callable before start (applied on start) and from synchronous code on the loop.
        """
        self._extra_health[name] = serving
        if self._health is not None:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else (health_pb2.HealthCheckResponse.NOT_SERVING)
            )
            asyncio.get_running_loop().create_task(self._health.set(name, status))

    async def start(self) -> int:
        """Run start hooks, bind, and mark every exported service SERVING; returns the port."""
        for hook in self.on_start:
            await hook()
        interceptors: list[grpc.aio.ServerInterceptor] = [
            _tracing_interceptor(),
            StatusInterceptor(),
        ]
        if self.verifier is not None:
            # Innermost: its UNAUTHENTICATED is raised inside the handler StatusInterceptor wraps.
            interceptors.append(AuthInterceptor(self.verifier))
        if self.rate_limiter is not None:
            # Inside AuthInterceptor: the quota depends on the caller it binds, and a call with a
            # bad token fails before it spends anyone's quota.
            interceptors.append(self.rate_limiter)
        if self.verifier is not None:
            # Innermost: the RPC's access rule, once the call has been counted, so calls
            # refused for want of a token are throttled too.
            interceptors.append(AccessInterceptor())
        settings = self.settings
        server = grpc.aio.server(
            # Tracing outermost, so the span covers the status the inner interceptor sets.
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", settings.grpc_max_receive_message_bytes),
                ("grpc.max_send_message_length", settings.grpc_max_send_message_bytes),
            ],
            # Bounded work in flight: past it a call fails fast with RESOURCE_EXHAUSTED.
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in self.services:
            service.add_to_server(server)
        names = [service.full_name for service in self.services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(settings)
        if credentials is None or settings.tls_port is not None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        if self.port == 0:
            raise RuntimeError(f"{self.name}: could not bind {address}")
        if credentials is not None and settings.tls_port is not None:
            public = f"{settings.host}:{settings.tls_port}"
            self.tls_port = server.add_secure_port(public, credentials)
            if self.tls_port == 0:
                raise RuntimeError(f"{self.name}: could not bind {public}")
        await server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await health_servicer.set("", serving)
        for name in names:
            await health_servicer.set(name, serving)
        for name, ok in self._extra_health.items():
            await health_servicer.set(
                name, serving if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )
        self._server, self._health = server, health_servicer
        log.info(
            "service started",
            extra={
                "fields": {
                    "service": self.name,
                    "address": f"{self.settings.host}:{self.port}",
                    "tls": credentials is not None,
                    "tls_port": self.tls_port,
                    "grpc_services": names,
                }
            },
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING for every entry, refuse new calls, let in-flight ones finish."""
        if self._server is None or self._health is None:
            return
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        for hook in self.on_shutdown_begin:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        await self._server.stop(grace)
        self._server = None
        for hook in self.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("stop hook failed")
        if self.rate_limiter is not None:
            await self.rate_limiter.close()
        log.info("service stopped", extra={"fields": {"service": self.name}})

    async def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        await self.start()
        await stop_requested.wait()
        log.info("shutdown requested", extra={"fields": {"service": self.name}})
        await self.stop()


def run_service(
    name: str,
    settings: ServiceSettings,
    build: Callable[[], GrpcServer | Awaitable[GrpcServer]],
) -> None:
    """Entry point body shared by every `python -m services.<name>`."""
    setup_telemetry(settings, name)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)

    async def main() -> None:
        built: Any = build()
        server: GrpcServer = await built if asyncio.iscoroutine(built) else built
        await server.run_until_signal()

    try:
        asyncio.run(main())
    except CounterpickError as error:
        # A dependency that never came up: say which, and exit non-zero so a supervisor restarts us.
        log.error("cannot start %s: %s", name, error.message, extra={"fields": error.metadata})
        raise SystemExit(1) from None
    finally:
        shutdown_telemetry()


def service_server[T](
    name: str,
    settings: ServiceSettings,
    make_servicer: Callable[[Stores], T],
    add_servicer: Callable[[T, grpc.aio.Server], None],
    service_full_name: str,
) -> GrpcServer:
    """A mesh service's server: its stores open on start and close on stop, one servicer."""
    stores = Stores(settings)
    return GrpcServer(
        name=name,
        settings=settings,
        services=[registration(make_servicer(stores), add_servicer, service_full_name)],
        on_start=[stores.open],
        on_stop=[stores.close],
    )
