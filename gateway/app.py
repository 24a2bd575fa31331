"""The FastAPI application: GraphQL at /graphql plus health, readiness and metrics endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import JWKS_CACHE_SECONDS, JwksCache, caller_dependency, key_source_from, require
from gateway.clients import MeshClients
from gateway.config import EdgeSettings, edge_service_tokens
from gateway.draft_feed import DraftFeed
from gateway.graphql.router import graphql_router
from gateway.graphql.subscriptions import shared_feed
from gateway.gsi import gsi_router
from gateway.overlay import OverlaySettings, overlay_router
from gateway.security import OPERATOR_HEADER, add_security, is_operator
from gateway.web_auth import web_auth_router
from services.common.errors import DependencyUnavailable
from services.common.tokens import Caller, DenyList, TokenVerifier

HTTP_REQUESTS = Counter(
    "counterpick_edge_http_requests",
    "HTTP requests answered by the edge, by route and status code.",
    ["route", "status"],
)
HTTP_SECONDS = Histogram(
    "counterpick_edge_http_request_seconds", "Time to answer an HTTP request, by route.", ["route"]
)
STATIC_DIR = Path(__file__).with_name("static")


class RequestMetricsMiddleware:
    """Counts and times HTTP requests by route template (pure ASGI: starlette's
    BaseHTTPMiddleware ran every request in an extra task group and re-streamed its body, a
    third of the edge's CPU per GraphQL request in bench.edge's profile)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # Label by route template, never by raw path, so label cardinality stays bounded.
            label = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(label, str(status)).inc()
            HTTP_SECONDS.labels(label).observe(time.perf_counter() - started)


def create_app(settings: EdgeSettings) -> FastAPI:
    """Build the edge app; channels open at startup and close at shutdown."""
    clients_holder: dict[str, MeshClients] = {}
    feed_holder: dict[str, DraftFeed] = {}
    # The edge's own token, for the calls it makes as itself (shared WatchDraft, MirrorGameDraft).
    service_tokens = edge_service_tokens(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        clients_holder["mesh"] = MeshClients(
            settings.peer_addresses(), settings.grpc_timeout_seconds
        )
        # One WatchDraft per watched draft for the whole process, as the edge itself.
        feed_holder["feed"] = DraftFeed([settings.draft_addr], service_tokens)
        try:
            yield
        finally:
            await feed_holder.pop("feed").close()
            await clients_holder.pop("mesh").close()

    def clients() -> MeshClients:
        return clients_holder["mesh"]

    app = FastAPI(
        title="counterpick edge",
        description="GraphQL and WebSocket edge of the counterpick gRPC mesh.",
        lifespan=lifespan,
    )
    app.include_router(
        web_auth_router(settings, lambda: clients().channels["auth"], settings.grpc_timeout_seconds)
    )

    async def fetch_jwks() -> dict[str, Any]:
        return json.loads(await clients().jwks_json())  # type: ignore[no-any-return]

    jwks = JwksCache(fetch_jwks)
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        fetch_keys=key_source_from(jwks),
        deny_list=DenyList(settings.redis_url),
    )
    optional_caller = caller_dependency(verifier)
    app.include_router(
        overlay_router(
            verifier=verifier,
            feed=lambda: feed_holder["feed"],
            draft_channel=lambda: clients().channels["draft"],
            settings=OverlaySettings(),
            timeout_seconds=settings.grpc_timeout_seconds,
        )
    )
    app.include_router(
        graphql_router(
            clients,
            verifier,
            # Without a credential of its own the edge cannot open the shared streams; each
            # subscriber then watches with its own token (one WatchDraft per subscriber).
            feed=lambda: shared_feed(feed_holder["feed"]) if service_tokens.configured else None,
            operator_token=lambda presented: is_operator(settings, presented, None),
        ),
        prefix="/graphql",
    )
    app.include_router(
        gsi_router(
            tokens=service_tokens,
            draft_channel=lambda: clients().channels["draft"],
            timeout_seconds=settings.grpc_timeout_seconds,
        )
    )

    @app.get(
        "/.well-known/jwks.json",
        summary="The public keys that verify counterpick access tokens (RFC 7517).",
    )
    async def well_known_jwks() -> JSONResponse:
        try:
            document = await jwks.document()
        except DependencyUnavailable as error:
            return JSONResponse({"error": error.message}, status_code=503)
        return JSONResponse(
            document, headers={"Cache-Control": f"public, max-age={JWKS_CACHE_SECONDS}"}
        )

    @app.get("/auth/me", summary="Who the bearer token says the caller is.")
    # A default rather than Annotated[...]: the dependency is local to this function, and
    # postponed annotations are resolved against module globals.
    async def me(caller: Caller | None = Depends(optional_caller)) -> dict[str, Any]:  # noqa: B008
        signed_in = require(caller)
        return {
            "user_id": signed_in.user_id,
            "roles": sorted(signed_in.roles),
            "account_id": signed_in.account_id,
            "tier": signed_in.tier,
            "expires_at": signed_in.expires_at,
        }

    @app.get("/healthz", summary="Liveness: the edge process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every mesh service reports SERVING.")
    async def readyz(
        request: Request,
        caller: Caller | None = Depends(optional_caller),  # noqa: B008
    ) -> JSONResponse:
        health = await clients().mesh_health()
        ready = all(h.status == "SERVING" for h in health)
        body: dict[str, Any] = {"ready": ready}
        # Which service is down is for operators; anyone else learns only ready or not.
        if is_operator(settings, request.headers.get(OPERATOR_HEADER), caller):
            body["services"] = {h.service: h.status for h in health}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics of the edge process (operators only).")
    async def metrics(
        request: Request,
        caller: Caller | None = Depends(optional_caller),  # noqa: B008
    ) -> Response:
        if not is_operator(settings, request.headers.get(OPERATOR_HEADER), caller):
            return JSONResponse({"error": "operators only"}, status_code=403)
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def draft_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/overlay/{draft_id}", include_in_schema=False)
    async def overlay_page(draft_id: str) -> FileResponse:
        return FileResponse(STATIC_DIR / "overlay.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(RequestMetricsMiddleware)
    add_security(app, settings)
    # One span per HTTP request or WebSocket session, not one per frame sent or received: with
    # thousands of overlays each draft event was thousands of spans (18% of the edge's CPU in
    # bench.fanout's profile).
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz,metrics", exclude_spans=["receive", "send"]
    )
    return app
